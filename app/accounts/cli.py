"""Account commands that run outside a request: they open their own session and commit."""

from app.accounts import service
from app.accounts.security import make_password_hasher
from app.config import Settings
from app.db import make_engine, make_sessionmaker


async def add_user(settings: Settings, name: str, role: str, password: str | None) -> None:
    engine = make_engine(settings.resolved_database_url)
    hasher = make_password_hasher(settings.argon2_time_cost, settings.argon2_memory_kib)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            await service.create_user(session, hasher, name, role, password)
    finally:
        await engine.dispose()


async def new_token(settings: Settings, name: str) -> str:
    engine = make_engine(settings.resolved_database_url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            return await service.issue_token(session, name)
    finally:
        await engine.dispose()
