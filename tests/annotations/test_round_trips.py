"""A keyed edit by API token makes as few round trips as it can: the object is read by the statement that
authorises the edit; on PostgreSQL the key is claimed by the statement that writes the object, and the
event is inserted by the statement that remembers the answer. Answers and stored rows stay those of one
statement each, and a retry still gets its first answer whatever happened since."""

import asyncio
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import select

from app.config import Settings
from app.models import AnnotationEvent, IdempotentRequest
from tests.annotations.test_one_authorising_statement import statements_of
from tests.conftest import AppStarter, ClientFactory
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
    # authorise (with the object), claim the key, update the object, the event, the answer; on PostgreSQL
    # the claim with the update, the event with the answer
    assert len(round_trips) == (3 if _is_postgres(app) else 5), round_trips
    assert not [s for s in round_trips if s.startswith("select") and "api_token" not in s]


async def test_the_event_and_the_answer_are_stored_as_before(app: Any, client_for: ClientFactory) -> None:
    setup = await make_study(app, experts=("alice",))
    alice = await client_for("alice")
    url = f"/api/v1/images/{setup.images[0].id}/annotations?mode=unaided"
    assert (await alice.post(f"/api/v1/images/{setup.images[0].id}/open?mode=unaided")).status_code == 200

    with statements_of(app) as statements:
        created = await alice.post(url, json=BOX, headers={"Idempotency-Key": "create-0002"})

    assert created.status_code == 201
    fused = [s for s in statements if s.startswith(("with appended_event", "with claimed_key"))]
    assert len(fused) == (2 if _is_postgres(app) else 0)
    assert len(_round_trips(statements)) == (3 if _is_postgres(app) else 5)
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
    assert request.created_at is not None
    assert request.response == created.json()


async def test_a_retried_move_gets_its_first_answer_after_later_edits(
    app: Any, client_for: ClientFactory
) -> None:
    """The retry's version is stale by then: it is the earlier answer that counts, not a 409."""
    setup = await make_study(app, experts=("alice",))
    alice = await client_for("alice")
    url = f"/api/v1/images/{setup.images[0].id}/annotations?mode=unaided"
    created = (await alice.post(url, json=BOX)).json()
    object_url = f"/api/v1/annotations/{created['id']}"
    move = {"version": 1, "x1": 5, "y1": 5, "x2": 25, "y2": 25}
    first = await alice.patch(object_url, json=move, headers={"Idempotency-Key": "move-first-01"})
    later = await alice.patch(object_url, json={"version": 2, "label": "normal"})
    stale = await alice.patch(
        object_url, json={**move, "x2": 26}, headers={"Idempotency-Key": "move-stale-1"}
    )
    retry = await alice.patch(object_url, json=move, headers={"Idempotency-Key": "move-first-01"})
    reused = await alice.patch(
        object_url, json={**move, "x2": 27}, headers={"Idempotency-Key": "move-first-01"}
    )

    assert (first.status_code, later.status_code, retry.status_code) == (200, 200, 200)
    assert retry.json() == first.json()
    assert stale.status_code == 409
    assert "changed meanwhile (version 3, you sent 1)" in stale.text
    assert reused.status_code == 422
    events = (await alice.get(f"/api/v1/images/{setup.images[0].id}/events?mode=unaided")).json()
    assert [event["kind"] for event in events] == ["create", "move", "relabel"]


@pytest.mark.parametrize("route", ["move", "delete"])
async def test_concurrent_retries_through_two_processes_write_once(
    app: Any, settings: Settings, another_app: AppStarter, client_for: ClientFactory, route: str
) -> None:
    """Retries of one keyed edit split over two processes' batches: one writes, the others wait for its
    commit and answer what it answered."""
    setup = await make_study(app, experts=("alice",))
    alice = await client_for("alice")
    image = setup.images[0].id
    created = (await alice.post(f"/api/v1/images/{image}/annotations?mode=unaided", json=BOX)).json()
    if route == "move":
        url, body = f"/api/v1/annotations/{created['id']}", {"version": 1, "x1": 2, "y1": 2, "x2": 9, "y2": 9}
    else:
        url, body = f"/api/v1/annotations/{created['id']}/delete", {"version": 1}
    headers = {"Idempotency-Key": f"{route}-two-process-01"}
    async with another_app(settings) as other:
        transport = ASGITransport(app=other)
        async with AsyncClient(
            transport=transport, base_url="http://test", headers=alice.headers
        ) as other_side:
            sent = [
                (alice if index % 2 else other_side).request(
                    "PATCH" if route == "move" else "POST", url, json=body, headers=headers
                )
                for index in range(8)
            ]
            responses = await asyncio.gather(*sent)

    assert [response.status_code for response in responses] == [200] * 8
    bodies = [response.json() for response in responses]
    assert all(body == bodies[0] for body in bodies)
    assert bodies[0]["version"] == 2
    events = (await alice.get(f"/api/v1/images/{image}/events?mode=unaided")).json()
    assert [event["kind"] for event in events] == ["create", route]
