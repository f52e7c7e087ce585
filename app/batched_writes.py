"""Edits on SQLite, written in batches: the edits that arrive while one batch is written share the next
transaction, each in its own savepoint, and all are answered after its commit.

Why: SQLite has one writer. Written through the async driver, an edit's transaction holds the write lock
across several round trips between the event loop and the driver's thread, and under many concurrent
requests every round trip waits behind the other requests' work on the loop: the lock is held for tens of
milliseconds per edit. Here a batch is written by one thread in one hand-off, with SQLAlchemy's
synchronous session, and the log is synced once per batch, not once per edit. Durability is unchanged: no
edit is answered before the commit that holds it.

A request sent with an API token (an edit, a visit's start, heartbeat or close, a done mark, the listing of
an image opened before) is authorised in the same hand-off, by one statement in the transaction that writes
it: the request itself makes no other round trip to the database.
"""

import asyncio
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from app.db import SQLiteWriteGate, enable_sqlite_pragmas, is_in_memory, unit_of_work, write_gate_of

T = TypeVar("T")
Work = Callable[[Session], Any]
MAX_BATCH = 64


@dataclass
class _Queue:
    pending: list[tuple[Work, "asyncio.Future[Any]"]] = field(default_factory=list)
    drainer: "asyncio.Task[None] | None" = None


def _begin_immediate(engine: Engine) -> None:
    """The sqlite3 module's own transaction handling is switched off so that SAVEPOINT works as documented
    (SQLAlchemy's pysqlite recipe); BEGIN IMMEDIATE takes the write lock at the start."""

    @event.listens_for(engine, "connect")
    def _autocommit_driver(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


class SQLiteBatchWriter:
    """Runs `work(session)` functions in batches on one thread and one connection of its own."""

    def __init__(self, async_engine: AsyncEngine, gate: SQLiteWriteGate) -> None:
        url = async_engine.url.set(drivername="sqlite")
        self._engine = create_engine(url, connect_args={"timeout": 30}, pool_size=1, max_overflow=0)
        event.listen(self._engine, "connect", enable_sqlite_pragmas)
        _begin_immediate(self._engine)
        self._gate = gate
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="concord-sqlite-writer")
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def engine(self) -> Engine:
        return self._engine

    async def run(self, work: Callable[[Session], T]) -> T:
        """Write `work` in the next batch; its result once that batch is committed, or its exception."""
        loop = asyncio.get_running_loop()
        queue = self._queues.get(loop)
        if queue is None:
            queue = self._queues[loop] = _Queue()
        future: asyncio.Future[T] = loop.create_future()
        queue.pending.append((work, future))
        if queue.drainer is None or queue.drainer.done():
            queue.drainer = loop.create_task(self._drain(queue))
        return await future

    def queued(self) -> int:
        """Edits waiting for the next batch on the running loop."""
        queue = self._queues.get(asyncio.get_running_loop())
        return 0 if queue is None else len(queue.pending)

    async def _drain(self, queue: _Queue) -> None:
        """Batches are taken once the gate is held: whatever queued meanwhile joins the next transaction."""
        loop = asyncio.get_running_loop()
        while queue.pending:
            batch: list[tuple[Work, asyncio.Future[Any]]] = []
            try:
                async with self._gate.held():
                    batch = self._take(queue)
                    outcomes = await loop.run_in_executor(self._thread, self._write, [w for w, _ in batch])
            except BaseException as error:  # the batch failed as a whole (lock timeout, commit, shutdown)
                batch = batch or self._take(queue)
                _answer(batch, [error] * len(batch))
                if not isinstance(error, Exception):
                    raise
                continue
            _answer(batch, outcomes)

    @staticmethod
    def _take(queue: _Queue) -> list[tuple[Work, "asyncio.Future[Any]"]]:
        batch, queue.pending = queue.pending[:MAX_BATCH], queue.pending[MAX_BATCH:]
        return batch

    def _write(self, batch: list[Work]) -> list[Any]:
        """The batch without savepoints first; when an edit fails, the whole transaction is rolled back and
        the batch written again with each edit in its own savepoint. A savepoint and its release cost a
        sixth of an edit's CPU on this thread, and an edit fails rarely; an edit that fails alone in its
        batch is rolled back with the transaction, as its savepoint would be."""
        outcomes = self._write_plain(batch)
        return self._write_in_savepoints(batch) if outcomes is None else outcomes

    def _write_plain(self, batch: list[Work]) -> list[Any] | None:
        """None when an edit failed (nothing written)."""
        outcomes: list[Any] = []
        with self._session() as session:
            for work in batch:
                try:
                    outcomes.append(work(session))
                    session.flush()  # as a savepoint's release would: the edit's changes go in its turn
                except Exception as error:
                    session.rollback()
                    return [error] if len(batch) == 1 else None
            session.commit()
        return outcomes

    def _write_in_savepoints(self, batch: list[Work]) -> list[Any]:
        outcomes: list[Any] = []
        with self._session() as session:
            for work in batch:
                try:
                    with session.begin_nested():
                        outcomes.append(work(session))
                except Exception as error:  # this edit's savepoint is rolled back; the others go on
                    outcomes.append(error)
            session.commit()
        return outcomes

    def _session(self) -> Session:
        return Session(self._engine, expire_on_commit=False, autoflush=False)

    def close(self) -> None:
        # the connection belongs to the writer thread: sqlite3 refuses to close it from another one
        self._thread.submit(self._engine.dispose).result()
        self._thread.shutdown(wait=True)


def _answer(batch: list[tuple[Work, "asyncio.Future[Any]"]], outcomes: list[Any]) -> None:
    for (_, future), outcome in zip(batch, outcomes, strict=True):
        if future.done():  # the request was cancelled (its client went away): the edit stays written
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


class EditRunner:
    """Where a request's edit is written: the batch writer on SQLite, a session's own transaction elsewhere
    (PostgreSQL runs concurrent transactions and groups their commits itself). An edit route opens no
    session of its own unless it needs one: an edit authorised and written in one hand-off makes no other
    round trip."""

    def __init__(
        self, sessionmaker: async_sessionmaker[AsyncSession], writer: SQLiteBatchWriter | None
    ) -> None:
        self._sessionmaker = sessionmaker
        self._writer = writer

    def unit_of_work(self) -> AbstractAsyncContextManager[AsyncSession]:
        """The request's own transaction, committed when the block ends (before the answer is sent)."""
        return unit_of_work(self._sessionmaker)

    async def run(self, work: Callable[[Session], T]) -> T:
        """`work` in a transaction of its own, committed before this returns."""
        if self._writer is not None:
            return await self._writer.run(work)
        async with self.unit_of_work() as session:
            return await session.run_sync(work)

    async def run_in(self, session: AsyncSession, work: Callable[[Session], T]) -> T:
        """`work` after what `session` read or wrote: in its transaction, or on SQLite in the next batch."""
        if self._writer is None:
            return await session.run_sync(work)
        # the request's reads end here; anything it wrote on the way (a first open) is committed first
        await session.commit()
        return await self._writer.run(work)


def make_batch_writer(engine: AsyncEngine) -> SQLiteBatchWriter | None:
    gate = write_gate_of(engine)
    if gate is None or is_in_memory(engine.url.render_as_string(hide_password=False)):
        return None
    return SQLiteBatchWriter(engine, gate)
