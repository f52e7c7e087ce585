"""Edits written in batches: the edits that arrive while one batch is written share the next transaction,
and all are answered after its commit.

Why: SQLite has one writer. Written through the async driver, an edit's transaction holds the write lock
across several round trips between the event loop and the driver's thread, and under many concurrent
requests every round trip waits behind the other requests' work on the loop: the lock is held for tens of
milliseconds per edit. Here a batch is written by one thread in one hand-off, with SQLAlchemy's
synchronous session, and the log is synced once per batch, not once per edit. Durability is unchanged: no
edit is answered before the commit that holds it.

A request sent with an API token (an edit, a visit's start, heartbeat or close, a done mark, the listing of
an image opened before) is authorised in the same hand-off, by one statement in the transaction that writes
it: the request itself makes no other round trip to the database.

On PostgreSQL (one writer per server process, several processes at once) the same batches are written on a
pooled connection of the request engine, through SQLAlchemy's greenlet bridge (what `AsyncSession.run_sync`
does): N edits cost one BEGIN, one COMMIT and one WAL flush instead of N of each. A batch that meets a
deadlock or a serialization failure with another process's batch is rolled back and written again, a
bounded number of times.
"""

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session
from sqlalchemy.util import greenlet_spawn

from app.db import SQLiteWriteGate, enable_sqlite_pragmas, is_in_memory, unit_of_work, write_gate_of

T = TypeVar("T")
Work = Callable[[Session], Any]
MAX_BATCH = 64
# a batch that lost a deadlock or a serialization failure to another process's batch is written again
BATCH_ATTEMPTS = 5
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization_failure, deadlock_detected


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


class _RetryBatch(Exception):
    """The batch lost a deadlock or a serialization failure: its transaction is rolled back, write it again."""


def _is_retryable(error: BaseException) -> bool:
    if not isinstance(error, DBAPIError):
        return False
    return getattr(error.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES


class BatchWriter:
    """Runs `work(session)` functions in batches, one batch at a time per event loop; how a batch reaches
    the database (`_write_batch`) is the subclass's."""

    # every write of the engine must go through this writer (SQLite's one writer), even a request's own
    serialises_writes = False

    def __init__(self) -> None:
        self._queues: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Queue] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def engine(self) -> Engine:
        raise NotImplementedError

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
        """Batches are taken when the previous one is written: whatever queued meanwhile joins the next."""
        while queue.pending:
            batch: list[tuple[Work, asyncio.Future[Any]]] = []

            def take() -> list[Work]:
                nonlocal batch
                batch = self._take(queue)
                return [w for w, _ in batch]

            try:
                outcomes = await self._write_batch(take)
            except BaseException as error:  # the batch failed as a whole (lock timeout, commit, shutdown)
                batch = batch or self._take(queue)
                _answer(batch, [error] * len(batch))
                if not isinstance(error, Exception):
                    raise
                continue
            _answer(batch, outcomes)

    async def _write_batch(self, take: Callable[[], list[Work]]) -> list[Any]:
        """Take the batch (`take()`) once the writer may write, and write it: each edit's outcome."""
        raise NotImplementedError

    @staticmethod
    def _take(queue: _Queue) -> list[tuple[Work, "asyncio.Future[Any]"]]:
        batch, queue.pending = queue.pending[:MAX_BATCH], queue.pending[MAX_BATCH:]
        return batch

    def _write(self, batch: list[Work]) -> list[Any]:
        """The batch without savepoints first; when an edit fails, the whole transaction is rolled back and
        the batch written again with each edit in its own savepoint. A savepoint and its release cost a
        sixth of an edit's CPU on this thread, and an edit fails rarely; an edit that fails alone in its
        batch is rolled back with the transaction, as its savepoint would be. A batch that lost a deadlock
        or a serialization failure (PostgreSQL, another process's batch) is rolled back whole and written
        again, at most BATCH_ATTEMPTS times; then its edits get that error."""
        for attempt in range(1, BATCH_ATTEMPTS + 1):
            try:
                outcomes = self._write_plain(batch)
                return self._write_in_savepoints(batch) if outcomes is None else outcomes
            except _RetryBatch as retry:
                if attempt == BATCH_ATTEMPTS:
                    raise retry.__cause__ or retry from None
        raise AssertionError("unreachable")

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
                    if _is_retryable(error):
                        raise _RetryBatch from error
                    return [error] if len(batch) == 1 else None
            self._commit(session)
        return outcomes

    def _write_in_savepoints(self, batch: list[Work]) -> list[Any]:
        outcomes: list[Any] = []
        with self._session() as session:
            for work in batch:
                try:
                    with session.begin_nested():
                        outcomes.append(work(session))
                except Exception as error:  # this edit's savepoint is rolled back; the others go on
                    if _is_retryable(error):
                        session.rollback()
                        raise _RetryBatch from error
                    outcomes.append(error)
            self._commit(session)
        return outcomes

    @staticmethod
    def _commit(session: Session) -> None:
        try:
            session.commit()
        except Exception as error:
            if _is_retryable(error):
                session.rollback()
                raise _RetryBatch from error
            raise

    def _session(self) -> Session:
        return Session(self.engine, expire_on_commit=False, autoflush=False)

    def close(self) -> None:
        pass


class SQLiteBatchWriter(BatchWriter):
    """Batches written on one thread and one connection of its own, the write gate held meanwhile."""

    serialises_writes = True

    def __init__(self, async_engine: AsyncEngine, gate: SQLiteWriteGate) -> None:
        super().__init__()
        url = async_engine.url.set(drivername="sqlite")
        self._engine = create_engine(url, connect_args={"timeout": 30}, pool_size=1, max_overflow=0)
        event.listen(self._engine, "connect", enable_sqlite_pragmas)
        _begin_immediate(self._engine)
        self._gate = gate
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="concord-sqlite-writer")

    @property
    def engine(self) -> Engine:
        return self._engine

    async def _write_batch(self, take: Callable[[], list[Work]]) -> list[Any]:
        """Batches are taken once the gate is held: whatever queued meanwhile joins the next transaction."""
        async with self._gate.held():
            works = take()
            return await asyncio.get_running_loop().run_in_executor(self._thread, self._write, works)

    def close(self) -> None:
        # the connection belongs to the writer thread: sqlite3 refuses to close it from another one
        self._thread.submit(self._engine.dispose).result()
        self._thread.shutdown(wait=True)


class PostgresBatchWriter(BatchWriter):
    """Batches written on a pooled connection of the request engine, in the event loop's thread: the
    synchronous session's statements are awaited through SQLAlchemy's greenlet bridge, as in
    `AsyncSession.run_sync`."""

    def __init__(self, async_engine: AsyncEngine) -> None:
        super().__init__()
        self._engine = async_engine.sync_engine

    @property
    def engine(self) -> Engine:
        return self._engine

    async def _write_batch(self, take: Callable[[], list[Work]]) -> list[Any]:
        written: Awaitable[list[Any]] = greenlet_spawn(self._write, take())
        return await written


def _answer(batch: list[tuple[Work, "asyncio.Future[Any]"]], outcomes: list[Any]) -> None:
    for (_, future), outcome in zip(batch, outcomes, strict=True):
        if future.done():  # the request was cancelled (its client went away): the edit stays written
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)


class EditRunner:
    """Where a request's edit is written: the batch writer of the server process (a session's own
    transaction where there is none: in-memory SQLite, the rolled-back tests). An edit route opens no
    session of its own unless it needs one: an edit authorised and written in one hand-off makes no other
    round trip."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], writer: BatchWriter | None) -> None:
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
        """`work` after what `session` read or wrote: in its transaction, or on SQLite (one writer: the
        batch writer) in the next batch."""
        if self._writer is None or not self._writer.serialises_writes:
            return await session.run_sync(work)
        # the request's reads end here; anything it wrote on the way (a first open) is committed first
        await session.commit()
        return await self._writer.run(work)


def make_batch_writer(engine: AsyncEngine) -> BatchWriter | None:
    if engine.dialect.name == "postgresql":
        return PostgresBatchWriter(engine)
    gate = write_gate_of(engine)
    if gate is None or is_in_memory(engine.url.render_as_string(hide_password=False)):
        return None
    return SQLiteBatchWriter(engine, gate)
