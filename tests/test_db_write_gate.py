"""SQLite's write gate: writers of one engine queue in asyncio, not in SQLite's busy handler.

Each writer that waits is given a busy timeout of 0: without the gate it would meet SQLite's lock and fail
at once ("database is locked"); with it, it waits for the writer before it to commit or roll back.
"""

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from app.db import WRITE_GATE_WAIT_S, make_engine

INSERT = text("INSERT INTO item (name) VALUES (:name)")


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path}/gate.db")
    async with engine.begin() as connection:
        await connection.execute(text("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT)"))
    yield engine
    await engine.dispose()


@pytest.fixture
async def pair(engine: AsyncEngine) -> AsyncIterator[tuple[AsyncConnection, AsyncConnection]]:
    """Two connections; the second one SQLite itself would refuse at once while the first one writes."""
    first, second = await engine.connect(), await engine.connect()
    await second.exec_driver_sql("PRAGMA busy_timeout = 0")
    try:
        yield first, second
    finally:
        await first.close()
        await second.close()


async def _names(engine: AsyncEngine) -> list[str]:
    async with engine.connect() as connection:
        return list((await connection.execute(text("SELECT name FROM item ORDER BY id"))).scalars())


async def _write(connection: AsyncConnection, name: str) -> None:
    await connection.execute(INSERT, {"name": name})
    await connection.commit()


async def test_a_second_writer_waits_for_the_first_to_commit(
    engine: AsyncEngine, pair: tuple[AsyncConnection, AsyncConnection]
) -> None:
    first, second = pair
    await first.execute(INSERT, {"name": "first"})
    waiting = asyncio.create_task(_write(second, "second"))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    assert await _names(engine) == []  # readers are not held up by the gate
    await first.commit()
    await waiting
    assert await _names(engine) == ["first", "second"]


async def test_the_gate_opens_on_rollback_and_when_a_connection_closes(
    engine: AsyncEngine, pair: tuple[AsyncConnection, AsyncConnection]
) -> None:
    first, second = pair
    await first.execute(INSERT, {"name": "rolled back"})
    waiting = asyncio.create_task(_write(second, "after rollback"))
    await asyncio.sleep(0.1)
    await first.rollback()
    await waiting
    await first.execute(INSERT, {"name": "closed"})
    waiting = asyncio.create_task(_write(second, "after close"))
    await asyncio.sleep(0.1)
    await first.close()
    await waiting
    assert await _names(engine) == ["after rollback", "after close"]


async def test_a_writer_with_a_short_wait_gives_up_with_database_locked(
    engine: AsyncEngine, pair: tuple[AsyncConnection, AsyncConnection]
) -> None:
    first, second = pair
    await first.execute(INSERT, {"name": "first"})
    second.info[WRITE_GATE_WAIT_S] = 0.05
    with pytest.raises(OperationalError, match="database is locked"):
        await second.execute(INSERT, {"name": "second"})
    await second.rollback()
    await first.commit()
    await _write(second, "later")
    assert await _names(engine) == ["first", "later"]


async def test_a_cancelled_waiter_leaves_the_gate_usable(
    engine: AsyncEngine, pair: tuple[AsyncConnection, AsyncConnection]
) -> None:
    """A request cancelled while it waits (its client went away) must not keep the gate shut."""
    first, second = pair
    await first.execute(INSERT, {"name": "first"})
    waiting = asyncio.create_task(_write(second, "cancelled"))
    await asyncio.sleep(0.1)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await first.commit()
    async with engine.connect() as third:
        third.info[WRITE_GATE_WAIT_S] = 5.0
        await _write(third, "after")
    assert await _names(engine) == ["first", "after"]
