"""Defect 1: a write is committed before its response starts, so an acknowledged edit cannot be lost.

The app is wrapped at the ASGI level: the moment it sends `http.response.start`, a separate connection
reads the whole database. What that connection sees must already be the request's final state; with the
commit after the response (the old yield dependency) it saw the state before the write.
"""

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db import make_engine
from app.models import Base
from tests.factories import PASSWORD, StudySetup, make_study, token_for

# a second connection reads what the request committed
pytestmark = pytest.mark.commits

Snapshot = dict[str, list[tuple[Any, ...]]]
ASGIApp = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


async def snapshot(engine: AsyncEngine) -> Snapshot:
    """Every row of every table, as a connection other than the request's sees them."""
    async with engine.connect() as connection:
        return {
            table.name: sorted(map(tuple, (await connection.execute(select(table))).all()), key=repr)
            for table in Base.metadata.sorted_tables
        }


class SeenAtResponseStart:
    """ASGI wrapper that records the database as another connection sees it when the response starts."""

    def __init__(self, app: ASGIApp, engine: AsyncEngine) -> None:
        self.app = app
        self.engine = engine
        self.seen: Snapshot | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        async def watched_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                self.seen = await snapshot(self.engine)
            await send(message)

        await self.app(scope, receive, watched_send)


Request = Callable[[AsyncClient, StudySetup], Awaitable[int]]


async def create_annotation(client: AsyncClient, setup: StudySetup) -> int:
    url = f"/api/v1/images/{setup.images[0].id}/annotations?mode=unaided"
    response = await client.post(url, json={"label": "tumor", "x1": 1, "y1": 1, "x2": 20, "y2": 20})
    return response.status_code


async def bulk_upload(client: AsyncClient, setup: StudySetup) -> int:
    url = f"/api/v1/images/{setup.images[0].id}/annotations/bulk?mode=unaided"
    items = [{"label": "normal", "x1": 5 * i + 1, "y1": 1, "x2": 5 * i + 4, "y2": 9} for i in range(3)]
    return (await client.post(url, json=items, headers={"Idempotency-Key": "bulk-commit-1"})).status_code


async def open_visit(client: AsyncClient, setup: StudySetup) -> int:
    return (await client.post(f"/api/v1/images/{setup.images[1].id}/visits?mode=unaided")).status_code


async def mark_done(client: AsyncClient, setup: StudySetup) -> int:
    return (await client.post(f"/api/v1/images/{setup.images[1].id}/done?mode=unaided")).status_code


async def create_study(client: AsyncClient, setup: StudySetup) -> int:
    return (await client.post("/api/v1/studies", json={"name": "another study"})).status_code


async def page_login(client: AsyncClient, setup: StudySetup) -> int:
    del client.headers["Authorization"]
    response = await client.post("/login", data={"name": "alice", "password": PASSWORD})
    return response.status_code


WRITES: dict[str, tuple[str, Request]] = {
    "create annotation": ("alice", create_annotation),
    "bulk upload": ("alice", bulk_upload),
    "open visit": ("alice", open_visit),
    "mark image done": ("alice", mark_done),
    "create study": ("admin", create_study),
    "page login": ("alice", page_login),
}


@pytest.mark.parametrize("write", WRITES)
async def test_write_is_committed_when_its_response_starts(app: Any, write: str) -> None:
    user, request = WRITES[write]
    setup = await make_study(app)
    token = await token_for(app, user)
    engine = make_engine(app.state.settings.resolved_database_url)
    watched = SeenAtResponseStart(app, engine)
    before = await snapshot(engine)
    try:
        transport = ASGITransport(app=watched)  # type: ignore[arg-type]
        async with AsyncClient(
            transport=transport, base_url="http://test", headers={"Authorization": f"Bearer {token}"}
        ) as client:
            status = await request(client, setup)
        after = await snapshot(engine)
    finally:
        await engine.dispose()
    assert status < 400
    changed = [name for name in after if after[name] != before[name]]
    assert changed, "the request wrote nothing; the check would prove nothing"
    assert watched.seen is not None
    not_yet_committed = [name for name in changed if watched.seen[name] != after[name]]
    assert not_yet_committed == [], f"the response started before these writes were committed: {changed}"
