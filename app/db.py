"""Engine and session factories, and the per-request unit of work."""

import asyncio
import sqlite3
import time
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event, make_url
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DisconnectionError, OperationalError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm.session import JoinTransactionMode
from sqlalchemy.util import await_

SQLITE_BUSY_TIMEOUT_MS = 30000
# Connection.info key: seconds a connection waits for the write gate (default: the busy timeout)
WRITE_GATE_WAIT_S = "concord_write_gate_wait_s"
_HOLDS_GATE = "concord_holds_write_gate"
_WRITE_VERBS = ("INSERT", "UPDATE", "DELETE", "REPLACE")
# a pooled PostgreSQL connection unused this long is pinged before it is handed out
IDLE_PING_S = 10.0
_LAST_CHECKIN = "concord_last_checkin"


def enable_sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL, not NORMAL: in WAL mode NORMAL skips the sync at commit, so a power loss could drop the last
    # acknowledged edits. FULL syncs the log at every commit.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


async def _acquire_within(lock: asyncio.Lock, seconds: float) -> None:
    # asyncio.timeout, not wait_for: wait_for (3.11) can lose a lock acquired just as it is cancelled
    async with asyncio.timeout(seconds):
        await lock.acquire()


class SQLiteWriteGate:
    """One writing transaction at a time per process, queued in asyncio instead of in SQLite.

    SQLite allows one writer; a second connection that tries to write meanwhile is refused and sleeps in
    SQLite's busy handler (1, 2, 5 … 100 ms steps) before it tries again. Under many concurrent edits those
    sleeps, not the work, set the pace (p99 of seconds). The gate lets a connection start its write (the
    first INSERT/UPDATE/DELETE, where the sqlite3 module begins the transaction) only when no other
    connection of this engine is writing, and opens at its commit or rollback: writers queue fairly and
    wake at once. Other processes (the worker, the CLI) still meet the busy timeout as before.
    """

    def __init__(self) -> None:
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    def _lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock

    @asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """Hold the gate for writes made outside this engine's connections (the batched edit writer)."""
        lock = self._lock()
        await _acquire_within(lock, SQLITE_BUSY_TIMEOUT_MS / 1000)
        try:
            yield
        finally:
            lock.release()

    def before_execute(
        self, conn: Connection, _cursor: Any, statement: str, parameters: Any, *_args: Any
    ) -> None:
        if _HOLDS_GATE in conn.info or not statement.lstrip()[:7].upper().startswith(_WRITE_VERBS):
            return
        lock = self._lock()
        wait_s = conn.info.get(WRITE_GATE_WAIT_S, SQLITE_BUSY_TIMEOUT_MS / 1000)
        try:
            await_(_acquire_within(lock, wait_s))
        except TimeoutError as error:
            locked = sqlite3.OperationalError("database is locked (write gate)")
            raise OperationalError(statement, parameters, locked) from error
        conn.info[_HOLDS_GATE] = lock

    def _release(self, info: dict[Any, Any]) -> None:
        lock = info.pop(_HOLDS_GATE, None)
        if lock is not None:
            lock.release()

    def _release_connection(self, dbapi_connection: Any) -> None:
        try:
            info = dbapi_connection.info
        except NotImplementedError:  # the pool's first-connect probe has no record
            return
        self._release(info)

    def install(self, engine: Engine) -> None:
        """Opened after the COMMIT or ROLLBACK has run (SQLAlchemy's commit event fires before it: the
        next writer would meet the lock still held while this commit syncs), and when a connection goes
        back to the pool or is dropped mid-transaction."""
        dialect = engine.dialect
        do_commit, do_rollback = dialect.do_commit, dialect.do_rollback

        def commit_then_open(dbapi_connection: Any) -> None:
            try:
                do_commit(dbapi_connection)
            finally:
                self._release_connection(dbapi_connection)

        def rollback_then_open(dbapi_connection: Any) -> None:
            try:
                do_rollback(dbapi_connection)
            finally:
                self._release_connection(dbapi_connection)

        dialect.do_commit = commit_then_open  # type: ignore[method-assign]
        dialect.do_rollback = rollback_then_open  # type: ignore[method-assign]
        event.listen(engine, "before_cursor_execute", self.before_execute)
        event.listen(engine.pool, "checkin", lambda _dbapi, record: self._release(record.info))
        event.listen(engine.pool, "invalidate", lambda _dbapi, record, _exc: self._release(record.info))


def is_in_memory(url: str) -> bool:
    return make_url(url).database in (None, "", ":memory:")


_WRITE_GATES: "weakref.WeakKeyDictionary[Engine, SQLiteWriteGate]" = weakref.WeakKeyDictionary()


def make_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        # enough pooled connections for many concurrent requests: an overflow connection is closed at
        # check-in, and opening one costs a thread, a file open and the pragmas
        pooled = {} if is_in_memory(url) else {"pool_size": 32, "max_overflow": 32}
        engine = create_async_engine(url, connect_args={"timeout": 30}, **pooled)
        event.listen(engine.sync_engine, "connect", enable_sqlite_pragmas)
        gate = SQLiteWriteGate()
        gate.install(engine.sync_engine)
        _WRITE_GATES[engine.sync_engine] = gate
        return engine
    # One plan per prepared statement and connection: under `auto`, PostgreSQL planned the edit's
    # authorising statement (a join of ten tables) at every execution, milliseconds each time.
    generic_plans = {"server_settings": {"plan_cache_mode": "force_generic_plan"}}
    engine = create_async_engine(url, pool_size=20, max_overflow=20, connect_args=generic_plans)
    ping_when_idle(engine.sync_engine, IDLE_PING_S)
    return engine


def ping_when_idle(engine: Engine, idle_s: float) -> None:
    """Ping a pooled connection before use only when it sat unused for `idle_s`; a dead one is replaced.

    Why not `pool_pre_ping`: on asyncpg its ping is three round trips and a transaction (BEGIN, a query,
    ROLLBACK) at every checkout, that is before every request. A connection used
    moments ago is known alive. After a database restart, the first statement on such a connection fails
    instead, and SQLAlchemy then drops every connection of the pool opened before the failure.
    """

    @event.listens_for(engine.pool, "checkin")
    def _note_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info[_LAST_CHECKIN] = time.monotonic()

    @event.listens_for(engine.pool, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        last = record.info.get(_LAST_CHECKIN)
        if last is None or time.monotonic() - last < idle_s:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as error:  # the driver's own error for a closed connection
            raise DisconnectionError("a pooled connection did not answer its ping") from error
        if not alive:
            raise DisconnectionError("a pooled connection did not answer its ping")


def write_gate_of(engine: AsyncEngine) -> SQLiteWriteGate | None:
    return _WRITE_GATES.get(engine.sync_engine)


def make_sessionmaker(
    bind: AsyncEngine | AsyncConnection, join_transaction_mode: JoinTransactionMode = "conditional_savepoint"
) -> async_sessionmaker[AsyncSession]:
    """Sessions of the app. The tests bind them to one connection whose transaction is rolled back after
    each test, with join_transaction_mode="create_savepoint": a session's commit releases a savepoint."""
    return async_sessionmaker(
        bind, expire_on_commit=False, autoflush=False, join_transaction_mode=join_transaction_mode
    )


def is_sqlite_engine(engine: AsyncEngine | Engine) -> bool:
    return engine.dialect.name == "sqlite"


@asynccontextmanager
async def unit_of_work(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    """One transaction: committed when the block ends normally, rolled back when it raises.

    Requests enter it through `app.deps.SessionDep`, whose dependency scope makes the block end before the
    response is sent: a client never hears of a write that is not committed yet.
    """
    async with sessionmaker() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise
