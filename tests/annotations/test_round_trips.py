"""A keyed edit of an object by API token makes as few round trips as it can: the object is read by the
statement that authorises the edit, and on PostgreSQL the event is inserted by the statement that remembers
the answer. Answers and stored rows stay those of one statement each."""

from typing import Any

import pytest
from sqlalchemy import select

from app.models import AnnotationEvent, IdempotentRequest
from tests.annotations.test_one_authorising_statement import statements_of
from tests.conftest import ClientFactory
from tests.factories import make_study

pytestmark = pytest.mark.commits

BOX = {"label": "tumor", "x1": 1, "y1": 1, "x2": 20, "y2": 20}
TRANSACTION = ("begin", "commit", "rollback", "savepoint", "release")


def _round_trips(statements: list[str]) -> list[str]:
    return [s for s in statements if not s.startswith(TRANSACTION)]


def _is_postgres(app: Any) -> bool:
    return bool(app.state.engine.dialect.name == "postgresql")


async def test_a_keyed_move_reads_its_object_with_its_authorisation(
    app: Any, client_for: ClientFactory
) -> None:
    setup = await make_study(app, experts=("alice",))
    alice = await client_for("alice")
    url = f"/api/v1/images/{setup.images[0].id}/annotations?mode=unaided"
    created = (await alice.post(url, json=BOX, headers={"Idempotency-Key": "create-0001"})).json()
    move = {**BOX, "version": created["version"], "x2": 30}
    headers = {"Idempotency-Key": "move-0001"}

    with statements_of(app) as statements:
        moved = await alice.patch(f"/api/v1/annotations/{created['id']}", json=move, headers=headers)
    replayed = await alice.patch(f"/api/v1/annotations/{created['id']}", json=move, headers=headers)

    assert moved.status_code == replayed.status_code == 200
    assert moved.json() == replayed.json()
    assert (moved.json()["x2"], moved.json()["version"]) == (30, created["version"] + 1)
    round_trips = _round_trips(statements)
    # authorise (with the object), claim the key, update the object, the event and the answer
    assert len(round_trips) == (4 if _is_postgres(app) else 5), round_trips
    assert not [s for s in round_trips if s.startswith("select") and "api_token" not in s]


async def test_the_event_and_the_answer_are_stored_as_before(app: Any, client_for: ClientFactory) -> None:
    setup = await make_study(app, experts=("alice",))
    alice = await client_for("alice")
    url = f"/api/v1/images/{setup.images[0].id}/annotations?mode=unaided"

    with statements_of(app) as statements:
        created = await alice.post(url, json=BOX, headers={"Idempotency-Key": "create-0002"})

    assert created.status_code == 201
    fused = [s for s in statements if s.startswith("with appended_event")]
    assert len(fused) == (1 if _is_postgres(app) else 0)
    async with app.state.sessionmaker() as session:
        event = (await session.scalars(select(AnnotationEvent))).one()
        request = (await session.scalars(select(IdempotentRequest))).one()
    assert (event.annotation_id, event.kind, event.idempotency_key) == (
        created.json()["id"],
        "create",
        "create-0002",
    )
    assert event.after == {
        k: created.json()[k] for k in ("x1", "y1", "x2", "y2", "label", "deleted", "origin")
    }
    assert event.server_ts is not None
    assert request.key == "create-0002"
    assert request.response == created.json()
