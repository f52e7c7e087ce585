"""The SQLite batch writer: edits share transactions, fail alone, and are answered only once committed."""

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import closing
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from app.batched_writes import SQLiteBatchWriter, make_batch_writer
from app.db import make_engine


class _Base(DeclarativeBase):
    pass


class _Edit(_Base):
    __tablename__ = "edit"
    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[int]


@pytest.fixture
async def writer(tmp_path: Path) -> AsyncIterator[tuple[SQLiteBatchWriter, Path]]:
    path = tmp_path / "batch.db"
    with closing(sqlite3.connect(path)) as connection:
        connection.execute("CREATE TABLE edit (id INTEGER PRIMARY KEY, value INTEGER UNIQUE)")
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    made = make_batch_writer(engine)
    assert made is not None
    yield made, path
    made.close()
    await engine.dispose()


def _insert(value: int) -> Callable[[Session], int]:
    def work(session: Session) -> int:
        session.execute(text("INSERT INTO edit (value) VALUES (:value)"), {"value": value})
        return value

    return work


def _committed_values(path: Path) -> list[int]:
    with closing(sqlite3.connect(path)) as connection:
        return [row[0] for row in connection.execute("SELECT value FROM edit ORDER BY value")]


async def test_an_answered_edit_is_already_committed(writer: tuple[SQLiteBatchWriter, Path]) -> None:
    batch_writer, path = writer
    assert await batch_writer.run(_insert(7)) == 7
    assert _committed_values(path) == [7]


async def test_a_failing_edit_rolls_back_alone(writer: tuple[SQLiteBatchWriter, Path]) -> None:
    batch_writer, path = writer

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
    assert "UNIQUE" in str(outcomes[2])
    assert _committed_values(path) == [1, 2]


async def test_a_failing_flush_rolls_back_alone(writer: tuple[SQLiteBatchWriter, Path]) -> None:
    """An ORM flush that fails ends its session's transaction: the other edits of the batch are still kept."""
    batch_writer, path = writer

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
    assert "UNIQUE" in str(outcomes[1])
    assert _committed_values(path) == [1, 3]


async def test_a_lone_failing_edit_writes_nothing(writer: tuple[SQLiteBatchWriter, Path]) -> None:
    batch_writer, path = writer

    def half_then_fail(session: Session) -> None:
        session.execute(text("INSERT INTO edit (value) VALUES (100)"))
        raise ValueError("refused after writing")

    with pytest.raises(ValueError, match="refused"):
        await batch_writer.run(half_then_fail)
    assert await batch_writer.run(_insert(5)) == 5
    assert _committed_values(path) == [5]


async def test_a_batch_without_failures_takes_no_savepoints(writer: tuple[SQLiteBatchWriter, Path]) -> None:
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


async def test_concurrent_edits_share_commits(writer: tuple[SQLiteBatchWriter, Path]) -> None:
    batch_writer, path = writer
    commits: list[int] = []
    event.listen(batch_writer._engine, "commit", lambda _connection: commits.append(1))
    values = await asyncio.gather(*(batch_writer.run(_insert(v)) for v in range(200)))
    assert sorted(values) == list(range(200))
    assert _committed_values(path) == list(range(200))
    assert 1 <= len(commits) < 200


async def test_an_in_memory_database_has_no_batch_writer() -> None:
    engine = make_engine("sqlite+aiosqlite:///:memory:")
    assert make_batch_writer(engine) is None
    await engine.dispose()
