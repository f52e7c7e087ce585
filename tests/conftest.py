"""Real databases: SQLite by default, PostgreSQL when CONCORD_TEST_DATABASE_URL names one.

Each test session migrates a fresh database (on PostgreSQL a new database with a random name that is
dropped at the end); after each test every table is emptied, so tests stay independent.
"""

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from app.config import Settings
from app.db import make_engine
from app.evaluation import cache as evaluation_cache
from app.evaluation import service as evaluation_service
from app.main import create_app
from app.migrate import upgrade
from app.models import Base

ADMIN_DATABASE_URL = os.environ.get("CONCORD_TEST_DATABASE_URL", "")


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
async def app(settings: Settings) -> AsyncIterator[object]:
    # computed evaluations are kept per process by content: another test's identical study must not answer
    evaluation_cache.clear()
    evaluation_service.clear_result_cache()
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application
    await _empty_tables(settings.resolved_database_url)


async def _empty_tables(url: str) -> None:
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
