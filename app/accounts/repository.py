"""Queries of the accounts domain."""

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import ApiToken, User, WebSession


async def user_by_name(session: AsyncSession, name: str) -> User | None:
    return await session.scalar(select(User).where(User.name == name))


async def user_by_id(session: AsyncSession, user_id: int) -> User | None:
    return await session.get(User, user_id)


async def list_users(session: AsyncSession) -> list[User]:
    return list(await session.scalars(select(User).order_by(User.id)))


async def user_by_token_hash(session: AsyncSession, token_hash: str) -> tuple[User, ApiToken] | None:
    row = (
        await session.execute(
            select(User, ApiToken)
            .join(ApiToken, ApiToken.user_id == User.id)
            .where(ApiToken.token_hash == token_hash)
        )
    ).first()
    return (row[0], row[1]) if row else None


async def session_by_hash(
    session: AsyncSession, token_hash: str, now: datetime
) -> tuple[User, WebSession] | None:
    row = (
        await session.execute(
            select(User, WebSession)
            .join(WebSession, WebSession.user_id == User.id)
            .where(WebSession.token_hash == token_hash, WebSession.expires_at > now)
        )
    ).first()
    return (row[0], row[1]) if row else None


async def delete_session(session: AsyncSession, token_hash: str) -> None:
    await session.execute(delete(WebSession).where(WebSession.token_hash == token_hash))
