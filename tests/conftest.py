"""Real databases: SQLite by default, PostgreSQL when CONCORD_TEST_DATABASE_URL names one.

Each test session migrates a fresh database (on PostgreSQL a new database with a random name that is
dropped at the end). Each test runs in a transaction that is rolled back after it (SQLAlchemy's "Joining
a Session into an External Transaction"): the `app` fixture opens one connection, begins a transaction on
it and binds the app's sessionmaker to that connection with join_transaction_mode="create_savepoint", so
every session of the app under test, and the `db` fixture's, works in a savepoint of that transaction and
its commit releases the savepoint. On SQLite the driver's own transaction handling is switched off and
the transaction begun explicitly (SQLAlchemy's pysqlite SAVEPOINT recipe, as the batch writer does).
Such an app has no batch writer: its edits are written in the request's session (in production the path
of cookie edits on PostgreSQL and of an in-memory SQLite database). After the rollback one statement checks
that every table is empty again: a test that wrote through another connection fails there and names the
marker it needs.

Tests marked `commits` get the app as it runs (its own engine and batch writer) and really
commit; every table is emptied after them (TRUNCATE … RESTART IDENTITY on PostgreSQL). They are the tests
that use more connections than one or more processes: servers, the CLI and the worker on the same
database, concurrent requests, the batch writer and the write gate themselves.

Rolled-back tests do not reset PostgreSQL's sequences: no test may assume the ids a row gets.
"""

import dataclasses
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import event, exists, select, text
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from app.config import Settings
from app.db import make_engine, make_sessionmaker
from app.evaluation import cache as evaluation_cache
from app.evaluation import service as evaluation_service
from app.main import create_app
from app.migrate import upgrade
from app.models import Base

ADMIN_DATABASE_URL = os.environ.get("CONCORD_TEST_DATABASE_URL", "")


def _route_state_built_once() -> None:
    """Each test builds an app of its own from the same routers, and FastAPI builds every included route's
    state (dependants, pydantic adapters for each parameter and answer) once per app: most of a second of
    CPU per test, at its first request. Here an API route included the same way again (prefix, tags,
    dependencies, answer class, body limit ...) gets the state built the first time. What differs is the
    app that would be asked for dependency overrides: no test overrides a dependency (it would need this
    undone)."""
    from fastapi import routing

    build = routing._EffectiveRouteContext.from_api_route
    built: dict[int, tuple[Any, list[tuple[Any, Any]]]] = {}  # the route itself kept: its id stays its own

    def from_api_route(*, original_route: Any, include_context: Any) -> Any:
        same_inclusion = dataclasses.replace(include_context, dependency_overrides_provider=None)
        _route, known = built.setdefault(id(original_route), (original_route, []))
        for inclusion, context in known:
            if inclusion == same_inclusion:
                return context
        context = build(original_route=original_route, include_context=include_context)
        known.append((same_inclusion, context))
        return context

    routing._EffectiveRouteContext.from_api_route = from_api_route  # type: ignore[method-assign]


_route_state_built_once()


def _postgres_database(admin_url: str) -> tuple[str, Callable[[], Coroutine[Any, Any, None]]]:
    name = f"concord_test_{secrets.token_hex(4)}"
    base = admin_url.rsplit("/", 1)[0]

    async def run(statement: str) -> None:
        engine = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
        async with engine.connect() as connection:
            await connection.execute(text(statement))
        await engine.dispose()

    async def drop() -> None:
        await run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    import asyncio

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    return f"{base}/{name}", drop


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if ADMIN_DATABASE_URL.startswith("postgresql"):
        url, drop = _postgres_database(ADMIN_DATABASE_URL)
        upgrade(url)
        yield url
        import asyncio

        asyncio.run(drop())
        return
    path = tmp_path_factory.mktemp("db") / "concord.db"
    url = f"sqlite+aiosqlite:///{path}"
    upgrade(url)
    yield url


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        argon2_time_cost=1,
        argon2_memory_kib=64,
    )


@pytest.fixture
async def app(settings: Settings, request: pytest.FixtureRequest) -> AsyncIterator[FastAPI]:
    # computed evaluations are kept per process by content: another test's identical study must not answer
    evaluation_cache.clear()
    evaluation_service.clear_result_cache()
    url = settings.resolved_database_url
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        if request.node.get_closest_marker("commits") is not None:
            yield application
        else:
            async with _rolled_back(application, url):
                yield application
                return
    await _empty_tables(url)


@asynccontextmanager
async def _rolled_back(application: FastAPI, url: str) -> AsyncIterator[None]:
    """Points the started app at one connection whose transaction is rolled back when the block ends."""
    engine = make_engine(url)
    if engine.dialect.name == "sqlite":
        _explicit_sqlite_transactions(engine)
    try:
        async with engine.connect() as connection:
            transaction = await connection.begin()
            _share_database(application, engine, make_sessionmaker(connection, "create_savepoint"))
            try:
                yield
            finally:
                await transaction.rollback()
                left = await _tables_with_rows(connection)
        if left:
            await _empty_tables(url)
            pytest.fail(
                f"rows committed outside the test's transaction are left in {', '.join(left)}: "
                "mark the test `commits` if it must write through connections of its own"
            )
    finally:
        await engine.dispose()


def _share_database(
    application: FastAPI, engine: AsyncEngine, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """The started app reaches the database only through these (its own engine is left unused)."""
    state = application.state
    if state.batch_writer is not None:
        state.batch_writer.close()
    state.engine = engine
    state.sessionmaker = sessionmaker
    state.batch_writer = None


AppStarter = Callable[[Settings], AbstractAsyncContextManager[FastAPI]]


@pytest.fixture
def another_app(app: FastAPI, request: pytest.FixtureRequest) -> AppStarter:
    """Starts another app (other settings) on the test's database; in a rolled-back test it shares `app`'s
    connection and transaction, so each sees what the other wrote."""
    rolled_back = request.node.get_closest_marker("commits") is None

    @asynccontextmanager
    async def started(settings: Settings) -> AsyncIterator[FastAPI]:
        other = create_app(settings)
        async with other.router.lifespan_context(other):
            if rolled_back:
                _share_database(other, app.state.engine, app.state.sessionmaker)
            yield other

    return started


def _explicit_sqlite_transactions(engine: AsyncEngine) -> None:
    """SQLAlchemy's pysqlite/aiosqlite recipe: without it the driver's implicit transactions break
    SAVEPOINT (a RELEASE would commit, a ROLLBACK TO would find no savepoint)."""

    @event.listens_for(engine.sync_engine, "connect")
    def _driver_autocommit(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine.sync_engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN")


async def _tables_with_rows(connection: AsyncConnection) -> list[str]:
    tables = Base.metadata.sorted_tables
    statement = select(*(exists().select_from(table).label(table.name) for table in tables))
    row = (await connection.execute(statement)).one()
    return [table.name for table, filled in zip(tables, row, strict=True) if filled]


async def _empty_tables(url: str) -> None:
    """What the tests marked `commits` leave behind."""
    engine = make_engine(url)
    async with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            names = ", ".join(f'"{table.name}"' for table in Base.metadata.sorted_tables)
            await connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            # Self-referencing RESTRICT keys (derived suggestion sets) make row order matter otherwise.
            await connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            for table in reversed(Base.metadata.sorted_tables):
                await connection.execute(table.delete())
        await connection.commit()
    await engine.dispose()


@pytest.fixture
async def sessionmaker(app: object) -> async_sessionmaker[AsyncSession]:
    factory: async_sessionmaker[AsyncSession] = app.state.sessionmaker  # type: ignore[attr-defined]
    return factory


@pytest.fixture
async def db(sessionmaker: async_sessionmaker[AsyncSession]) -> AsyncIterator[AsyncSession]:
    async with sessionmaker() as session:
        yield session


@pytest.fixture
async def anonymous(app: object) -> AsyncIterator[AsyncClient]:
    transport = ASGITransport(app=app)  # type: ignore[arg-type]
    async with AsyncClient(transport=transport, base_url="http://test") as client:
        yield client


ClientFactory = Callable[[str], Awaitable[AsyncClient]]


@pytest.fixture
async def client_for(app: object) -> AsyncIterator[ClientFactory]:
    """A client authenticated with a fresh API token of the named user."""
    from tests.factories import token_for

    clients: list[AsyncClient] = []

    async def make(name: str) -> AsyncClient:
        token = await token_for(app, name)
        transport = ASGITransport(app=app)  # type: ignore[arg-type]
        client = AsyncClient(
            transport=transport, base_url="http://test", headers={"Authorization": f"Bearer {token}"}
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
