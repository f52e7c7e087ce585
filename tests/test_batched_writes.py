"""The batch writer (SQLite and PostgreSQL): edits share transactions, fail alone, are answered only once
committed, and a batch that loses a deadlock to another process's batch is written again."""

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.util import await_

from app.batched_writes import BATCH_ATTEMPTS, BatchWriter, PostgresBatchWriter, make_batch_writer
from app.db import make_engine

Values = Callable[[], Awaitable[list[int]]]
Writer = tuple[BatchWriter, Values]


class _Base(DeclarativeBase):
    pass


class _Edit(_Base):
    __tablename__ = "edit"
    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[int]


@pytest.fixture
async def writer(tmp_path: Path, database_url: str) -> AsyncIterator[Writer]:
    """A batch writer on the session's database (PostgreSQL when the tests run on it) and a table `edit`."""
    if database_url.startswith("sqlite"):
        path = tmp_path / "batch.db"
        with closing(sqlite3.connect(path)) as connection:
            connection.execute("CREATE TABLE edit (id INTEGER PRIMARY KEY, value INTEGER UNIQUE)")
        url = f"sqlite+aiosqlite:///{path}"
    else:
        url = database_url
    engine = make_engine(url)
    if not url.startswith("sqlite"):
        async with engine.begin() as created:
            await created.execute(text("CREATE TABLE edit (id SERIAL PRIMARY KEY, value INTEGER UNIQUE)"))

    async def values() -> list[int]:
        async with engine.connect() as reading:
            return list((await reading.execute(text("SELECT value FROM edit ORDER BY value"))).scalars())

    made = make_batch_writer(engine)
    assert made is not None
    yield made, values
    made.close()
    if not url.startswith("sqlite"):
        async with engine.begin() as dropping:
            await dropping.execute(text("DROP TABLE edit"))
    await engine.dispose()


def _insert(value: int) -> Callable[[Session], int]:
    def work(session: Session) -> int:
        session.execute(text("INSERT INTO edit (value) VALUES (:value)"), {"value": value})
        return value

    return work


async def test_an_answered_edit_is_already_committed(writer: Writer) -> None:
    batch_writer, committed_values = writer
    assert await batch_writer.run(_insert(7)) == 7
    assert await committed_values() == [7]


async def test_a_failing_edit_rolls_back_alone(writer: Writer) -> None:
    batch_writer, committed_values = writer

    def half_then_fail(session: Session) -> None:
        session.execute(text("INSERT INTO edit (value) VALUES (100)"))
        raise ValueError("refused after writing")

    outcomes = await asyncio.gather(
        batch_writer.run(_insert(1)),
        batch_writer.run(half_then_fail),
        batch_writer.run(_insert(1)),  # unique: fails in the database
        batch_writer.run(_insert(2)),
        return_exceptions=True,
    )
    assert outcomes[0] == 1
    assert outcomes[3] == 2
    assert isinstance(outcomes[1], ValueError)
    assert "UNIQUE" in str(outcomes[2]).upper()
    assert await committed_values() == [1, 2]


async def test_a_failing_flush_rolls_back_alone(writer: Writer) -> None:
    """An ORM flush that fails ends its session's transaction: the other edits of the batch are still kept."""
    batch_writer, committed_values = writer

    def flush_duplicate(session: Session) -> None:
        session.execute(text("INSERT INTO edit (value) VALUES (200)"))
        session.add(_Edit(value=1))
        session.flush()

    outcomes = await asyncio.gather(
        batch_writer.run(_insert(1)),
        batch_writer.run(flush_duplicate),
        batch_writer.run(_insert(3)),
        return_exceptions=True,
    )
    assert outcomes[0] == 1
    assert outcomes[2] == 3
    assert "UNIQUE" in str(outcomes[1]).upper()
    assert await committed_values() == [1, 3]


async def test_a_lone_failing_edit_writes_nothing(writer: Writer) -> None:
    batch_writer, committed_values = writer

    def half_then_fail(session: Session) -> None:
        session.execute(text("INSERT INTO edit (value) VALUES (100)"))
        raise ValueError("refused after writing")

    with pytest.raises(ValueError, match="refused"):
        await batch_writer.run(half_then_fail)
    assert await batch_writer.run(_insert(5)) == 5
    assert await committed_values() == [5]


async def test_a_batch_without_failures_takes_no_savepoints(writer: Writer) -> None:
    """Savepoints are taken only when an edit of the batch failed (they cost a sixth of an edit's CPU)."""
    batch_writer, _ = writer
    statements: list[str] = []
    event.listen(
        batch_writer.engine, "before_cursor_execute", lambda *args: statements.append(str(args[2]).upper())
    )
    await asyncio.gather(*(batch_writer.run(_insert(v)) for v in range(20)))
    assert not [statement for statement in statements if "SAVEPOINT" in statement]
    await asyncio.gather(batch_writer.run(_insert(30)), batch_writer.run(_insert(30)), return_exceptions=True)
    assert [statement for statement in statements if statement.startswith("SAVEPOINT")]


async def test_concurrent_edits_share_commits(writer: Writer) -> None:
    batch_writer, committed_values = writer
    commits: list[int] = []
    event.listen(batch_writer.engine, "commit", lambda _connection: commits.append(1))
    values = await asyncio.gather(*(batch_writer.run(_insert(v)) for v in range(200)))
    assert sorted(values) == list(range(200))
    assert await committed_values() == list(range(200))
    assert 1 <= len(commits) < 200


async def test_an_in_memory_database_has_no_batch_writer() -> None:
    engine = make_engine("sqlite+aiosqlite:///:memory:")
    assert make_batch_writer(engine) is None
    await engine.dispose()


class _SerializationFailure(Exception):
    sqlstate = "40001"


def _lost_to_another_batch() -> DBAPIError:
    return DBAPIError("UPDATE edit", {}, _SerializationFailure("could not serialize access"))


async def test_a_batch_that_lost_to_another_is_written_again(writer: Writer) -> None:
    """A serialization failure or a deadlock rolls the whole batch back; it is written again, every edit
    once, and no edit hears of the failure."""
    batch_writer, committed_values = writer
    tries: list[int] = []

    def fails_once(session: Session) -> int:
        session.execute(text("INSERT INTO edit (value) VALUES (2)"))
        tries.append(1)
        if len(tries) == 1:
            raise _lost_to_another_batch()
        return 2

    outcomes = await asyncio.gather(batch_writer.run(_insert(1)), batch_writer.run(fails_once))
    assert list(outcomes) == [1, 2]
    assert len(tries) == 2
    assert await committed_values() == [1, 2]


async def test_a_batch_is_written_again_a_bounded_number_of_times(writer: Writer) -> None:
    batch_writer, committed_values = writer
    tries: list[int] = []

    def always_fails(session: Session) -> None:
        tries.append(1)
        raise _lost_to_another_batch()

    with pytest.raises(DBAPIError, match="could not serialize"):
        await batch_writer.run(always_fails)
    assert len(tries) == BATCH_ATTEMPTS
    assert await committed_values() == []


async def test_batches_of_two_processes_that_deadlock_are_both_written(
    writer: Writer, database_url: str
) -> None:
    """Two processes' writers lock two rows in opposite orders: PostgreSQL aborts one batch, which is
    written again once the other committed."""
    batch_writer, committed_values = writer
    if not isinstance(batch_writer, PostgresBatchWriter):
        pytest.skip("one writer per database on SQLite")
    other_engine = make_engine(database_url)
    other = PostgresBatchWriter(other_engine)
    await asyncio.gather(batch_writer.run(_insert(1)), batch_writer.run(_insert(2)))
    tries: list[str] = []

    def update(first: int, second: int) -> Callable[[Session], int]:
        def work(session: Session) -> int:
            tries.append(f"{first}{second}")
            session.execute(text("UPDATE edit SET value = value + 10 WHERE value % 10 = :v"), {"v": first})
            await_(asyncio.sleep(0.3))  # the other batch takes its first row meanwhile
            session.execute(text("UPDATE edit SET value = value + 10 WHERE value % 10 = :v"), {"v": second})
            return first

        return work

    try:
        outcomes = await asyncio.gather(batch_writer.run(update(1, 2)), other.run(update(2, 1)))
    finally:
        await other_engine.dispose()
    assert list(outcomes) == [1, 2]
    assert len(tries) == 3  # one of the two batches was written twice
    assert await committed_values() == [21, 22]
