"""An edit sent with an API token is authorised in one statement (token, user, workspace), checked anew on
every request: a revoked token or a disabled user is refused at once, with the usual 401."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from tests.conftest import ClientFactory
from tests.factories import make_study

# on SQLite these edits go through the batch writer (one hand-off authorises and writes), as in production
pytestmark = pytest.mark.commits

BOX = {"label": "tumor", "x1": 1, "y1": 1, "x2": 20, "y2": 20}
REFUSED = "invalid, expired or revoked API token, or a disabled account"


@contextmanager
def statements_of(app: Any) -> Iterator[list[str]]:
    """The statements the request engine and the batch writer run meanwhile."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement.lower())

    writer = app.state.batch_writer
    engines = [app.state.engine.sync_engine]
    if writer is not None and writer.engine is not engines[0]:  # PostgreSQL's writes on the request engine
        engines.append(writer.engine)
    for engine in engines:
        event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", record)


def _authorising(statements: list[str]) -> list[str]:
    return [s for s in statements if "api_token" in s or "from assignment" in s or "join assignment" in s]


async def test_every_edit_route_authorises_in_one_statement(app: Any, client_for: ClientFactory) -> None:
    setup = await make_study(app, experts=("alice",))
    alice = await client_for("alice")
    url = f"/api/v1/images/{setup.images[0].id}/annotations?mode=unaided"
    with statements_of(app) as first_open:  # the image is opened in the same hand-off
        first = (await alice.post(url, json=BOX)).json()
    with statements_of(app) as create:
        created = await alice.post(url, json=BOX)
    with statements_of(app) as move:
        moved = await alice.patch(
            f"/api/v1/annotations/{first['id']}", json={**BOX, "version": first["version"], "x2": 30}
        )
    with statements_of(app) as delete:
        deleted = await alice.post(
            f"/api/v1/annotations/{created.json()['id']}/delete", json={"version": created.json()["version"]}
        )

    assert (created.status_code, moved.status_code, deleted.status_code) == (201, 200, 200)
    assert moved.json()["x2"] == 30
    assert deleted.json()["deleted"] is True
    assert any(s.startswith("insert into image_view") for s in first_open)
    # the token's first use is written too (`note_token_use`): a write, not an authorising read
    first_open = [s for s in first_open if not s.startswith("update api_token set last_used_at")]
    for statements in (first_open, create, move, delete):
        authorising = _authorising(statements)
        assert len(authorising) == 1, authorising
        assert "join assignment" in authorising[0]
        assert "api_token" in authorising[0]


async def test_a_revoked_token_or_a_disabled_user_is_refused_at_the_next_edit(
    app: Any, client_for: ClientFactory
) -> None:
    setup = await make_study(app, experts=("alice", "bob"))
    alice, bob, admin = await client_for("alice"), await client_for("bob"), await client_for("admin")
    image = setup.images[0].id
    url = f"/api/v1/images/{image}/annotations?mode=unaided"
    assert (await alice.post(url, json=BOX)).status_code == 201
    assert (await bob.post(url, json=BOX)).status_code == 201
    token_id = (await alice.get("/api/v1/me/tokens")).json()[-1]["id"]

    assert (await alice.delete(f"/api/v1/me/tokens/{token_id}")).status_code == 204
    bob_id = (await bob.get("/api/v1/me")).json()["id"]
    assert (await admin.post(f"/api/v1/users/{bob_id}/disable")).status_code == 200

    for client in (alice, bob):
        refused = await client.post(url, json=BOX)
        assert refused.status_code == 401
        assert REFUSED in refused.text
