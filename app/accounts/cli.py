"""Account commands that run outside a request: they open their own session and commit."""

from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import repository, service
from app.accounts.schemas import TokenInfo
from app.accounts.security import make_password_hasher
from app.config import Settings
from app.db import make_engine, make_sessionmaker

T = TypeVar("T")


async def _in_transaction(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    engine = make_engine(settings.resolved_database_url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            return await work(session)
    finally:
        await engine.dispose()


async def add_user(settings: Settings, name: str, role: str, password: str | None) -> None:
    hasher = make_password_hasher(settings.argon2_time_cost, settings.argon2_memory_kib)

    async def work(session: AsyncSession) -> None:
        await service.create_user(session, hasher, name, role, password)

    await _in_transaction(settings, work)


async def new_token(settings: Settings, name: str, expires_days: int | None) -> str:
    """`expires_days` None: CONCORD_TOKEN_DAYS; 0: never expires."""
    days = settings.token_days if expires_days is None else expires_days

    async def work(session: AsyncSession) -> str:
        return await service.issue_token(session, name, days or None)

    return await _in_transaction(settings, work)


async def list_tokens(settings: Settings, name: str) -> list[TokenInfo]:
    async def work(session: AsyncSession) -> list[TokenInfo]:
        user = await service.get_user(session, name)
        return [TokenInfo.model_validate(token) for token in await repository.tokens_of(session, user.id)]

    return await _in_transaction(settings, work)


async def revoke_token(settings: Settings, name: str, token_id: int) -> None:
    async def work(session: AsyncSession) -> None:
        await service.revoke_token(session, await service.get_user(session, name), token_id)

    await _in_transaction(settings, work)


async def set_disabled(settings: Settings, name: str, disabled: bool) -> None:
    async def work(session: AsyncSession) -> None:
        await service.set_disabled(session, await service.get_user(session, name), disabled)

    await _in_transaction(settings, work)
