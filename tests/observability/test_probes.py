"""/healthz answers without the database; /readyz needs a reachable database at the newest migration."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
from httpx import ASGITransport, AsyncClient

from app.config import Settings
from app.main import create_app
from app.migrate import downgrade, upgrade
from app.observability.routes import newest_revisions

ClientOf = Callable[[str, Path], Awaitable[AsyncClient]]


@pytest.fixture
async def client_of() -> AsyncIterator[ClientOf]:
    """A client of an app on the given database URL (its own lifespan, its own engine)."""
    async with AsyncExitStack() as stack:

        async def make(database_url: str, data_dir: Path) -> AsyncClient:
            app = create_app(Settings(data_dir=data_dir, database_url=database_url))
            await stack.enter_async_context(app.router.lifespan_context(app))
            transport = ASGITransport(app=app)
            return await stack.enter_async_context(AsyncClient(transport=transport, base_url="http://test"))

        yield make


async def test_healthz_answers_ok(anonymous: AsyncClient) -> None:
    response = await anonymous.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_readyz_is_ready_at_the_newest_migration(anonymous: AsyncClient) -> None:
    response = await anonymous.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "revision": ", ".join(sorted(newest_revisions()))}


async def test_readyz_refuses_a_database_one_migration_behind(client_of: ClientOf, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'behind.db'}"
    await asyncio.to_thread(upgrade, url)  # Alembic's env runs its own event loop
    await asyncio.to_thread(downgrade, url, "-1")
    response = await (await client_of(url, tmp_path / "data")).get("/readyz")
    assert response.status_code == 503
    assert response.json()["reason"].startswith("migrations not current: database at ")


async def test_readyz_refuses_a_database_never_migrated(client_of: ClientOf, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    response = await (await client_of(url, tmp_path / "data")).get("/readyz")
    assert response.status_code == 503
    assert response.json()["reason"].startswith("migrations not current: database at none")


async def test_readyz_refuses_an_unreachable_database_and_healthz_still_answers(
    client_of: ClientOf, tmp_path: Path
) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'no-such-folder' / 'x.db'}"
    client = await client_of(url, tmp_path / "data")
    response = await client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["reason"].startswith("database unreachable")
    assert (await client.get("/healthz")).status_code == 200
