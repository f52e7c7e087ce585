"""PostgreSQL's pool pings a connection only after it sat idle, and replaces one that died meanwhile."""

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.db import make_engine, ping_when_idle
from tests.conftest import ADMIN_DATABASE_URL

pytestmark = pytest.mark.skipif(
    not ADMIN_DATABASE_URL.startswith("postgresql"), reason="the pool's ping is PostgreSQL's"
)


def _counted_pings(engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    pings: list[int] = []
    ping = engine.dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        pings.append(1)
        return ping(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    return pings


async def _backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def test_a_connection_in_steady_use_is_not_pinged(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = make_engine(database_url)
    pings = _counted_pings(engine, monkeypatch)
    try:
        pids = {await _backend_pid(engine) for _ in range(5)}
    finally:
        await engine.dispose()
    assert pings == []
    assert len(pids) == 1  # the same pooled connection each time


async def test_an_idle_connection_is_pinged_and_a_dead_one_replaced(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_async_engine(database_url, pool_size=1, max_overflow=0)
    ping_when_idle(engine.sync_engine, idle_s=0.0)
    pings = _counted_pings(engine, monkeypatch)
    other = create_async_engine(database_url)
    try:
        first = await _backend_pid(engine)
        assert await _backend_pid(engine) == first  # pinged, alive, kept
        async with other.connect() as connection:
            await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
        replaced = await _backend_pid(engine)  # the dead one fails its ping: a new one answers
    finally:
        await engine.dispose()
        await other.dispose()
    assert replaced != first
    assert len(pings) >= 2
