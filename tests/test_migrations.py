"""Migrations are reversible and give the schema of the models (Alembic's autogenerate diff is empty:
tables, columns and their types, nullability, server defaults, indexes, unique and foreign keys), on SQLite
and PostgreSQL."""

import asyncio
import secrets
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, Connection, Integer, MetaData, inspect
from sqlalchemy.ext.asyncio import create_async_engine

from app.migrate import downgrade, upgrade
from app.models import Base
from tests.conftest import ADMIN_DATABASE_URL, _postgres_database

COMPARE = {"compare_type": True, "compare_server_default": True}


def _diff_with(metadata: MetaData) -> Any:
    def compare(connection: Connection) -> list[Any]:
        differences: list[Any] = compare_metadata(
            MigrationContext.configure(connection, opts=COMPARE), metadata
        )
        return differences

    return compare


def _table_names(connection: Connection) -> set[str]:
    return set(inspect(connection).get_table_names()) - {"alembic_version"}


async def _inspect(url: str, look: Any) -> Any:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(look)
    finally:
        await engine.dispose()


def _fresh_url(tmp_path: Path) -> tuple[str, object]:
    if ADMIN_DATABASE_URL.startswith("postgresql"):
        return _postgres_database(ADMIN_DATABASE_URL)
    return f"sqlite+aiosqlite:///{tmp_path / f'{secrets.token_hex(4)}.db'}", None


def _models_with_one_more_column() -> MetaData:
    changed = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["study"].append_column(Column("not_migrated", Integer, nullable=True))
    return changed


def test_upgrade_downgrade_upgrade_gives_the_models_schema(tmp_path: Path) -> None:
    url, drop = _fresh_url(tmp_path)
    try:
        upgrade(url)
        assert asyncio.run(_inspect(url, _diff_with(Base.metadata))) == []
        downgrade(url)
        assert asyncio.run(_inspect(url, _table_names)) == set()
        upgrade(url)
        assert asyncio.run(_inspect(url, _diff_with(Base.metadata))) == []
        [(operation, _schema, table, column)] = asyncio.run(
            _inspect(url, _diff_with(_models_with_one_more_column()))
        )
        assert (operation, table, column.name) == ("add_column", "study", "not_migrated")
    finally:
        if drop is not None:
            asyncio.run(drop())  # type: ignore[operator]
