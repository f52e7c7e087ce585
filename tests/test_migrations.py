"""Migrations are reversible and give the same schema as the models, on SQLite and PostgreSQL."""

import asyncio
import secrets
from pathlib import Path

from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine

from app.migrate import downgrade, upgrade
from app.models import Base
from tests.conftest import ADMIN_DATABASE_URL, _postgres_database


async def _table_names(url: str) -> set[str]:
    engine = create_async_engine(url)
    async with engine.connect() as connection:
        names = await connection.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    await engine.dispose()
    return names - {"alembic_version"}


def _fresh_url(tmp_path: Path) -> tuple[str, object]:
    if ADMIN_DATABASE_URL.startswith("postgresql"):
        return _postgres_database(ADMIN_DATABASE_URL)
    return f"sqlite+aiosqlite:///{tmp_path / f'{secrets.token_hex(4)}.db'}", None


def test_upgrade_downgrade_upgrade(tmp_path: Path) -> None:
    url, drop = _fresh_url(tmp_path)
    try:
        upgrade(url)
        assert asyncio.run(_table_names(url)) == set(Base.metadata.tables)
        downgrade(url)
        assert asyncio.run(_table_names(url)) == set()
        upgrade(url)
        assert asyncio.run(_table_names(url)) == set(Base.metadata.tables)
    finally:
        if drop is not None:
            asyncio.run(drop())  # type: ignore[operator]
