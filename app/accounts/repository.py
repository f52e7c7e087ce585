"""Queries of the accounts domain."""

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import and_, bindparam, case, delete, literal, or_, select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import ApiToken, LoginFailures, User, WebSession
from app.models.base import UTCDateTime

PRUNE_BATCH = 100


async def user_by_name(session: AsyncSession, name: str) -> User | None:
    return await session.scalar(select(User).where(User.name == name))


async def user_by_id(session: AsyncSession, user_id: int) -> User | None:
    return await session.get(User, user_id)


async def list_users(session: AsyncSession) -> list[User]:
    return list(await session.scalars(select(User).order_by(User.id)))


# Built once: every API request runs it, and building a statement costs more than running it.
TOKEN_IS_VALID = and_(
    ApiToken.token_hash == bindparam("token_hash"),
    or_(ApiToken.expires_at.is_(None), ApiToken.expires_at > bindparam("now", type_=UTCDateTime())),
    User.disabled_at.is_(None),
)
"""The condition `user_by_token_hash` checks, for statements that authorise and load in one (bound
parameters `token_hash` and `now`; User joined to ApiToken)."""
_USER_BY_TOKEN_HASH = select(User, ApiToken).join(ApiToken, ApiToken.user_id == User.id).where(TOKEN_IS_VALID)


async def user_by_token_hash(
    session: AsyncSession, token_hash: str, now: datetime
) -> tuple[User, ApiToken] | None:
    """The token's enabled user, unless the token has expired."""
    row = (await session.execute(_USER_BY_TOKEN_HASH, {"token_hash": token_hash, "now": now})).first()
    return (row[0], row[1]) if row else None


async def tokens_of(session: AsyncSession, user_id: int) -> list[ApiToken]:
    return list(
        await session.scalars(select(ApiToken).where(ApiToken.user_id == user_id).order_by(ApiToken.id))
    )


async def delete_token(session: AsyncSession, user_id: int, token_id: int) -> bool:
    result = await session.execute(
        delete(ApiToken).where(ApiToken.id == token_id, ApiToken.user_id == user_id).returning(ApiToken.id)
    )
    return result.first() is not None


async def session_by_hash(
    session: AsyncSession, token_hash: str, now: datetime
) -> tuple[User, WebSession] | None:
    row = (
        await session.execute(
            select(User, WebSession)
            .join(WebSession, WebSession.user_id == User.id)
            .where(
                WebSession.token_hash == token_hash,
                WebSession.expires_at > now,
                User.disabled_at.is_(None),
            )
        )
    ).first()
    return (row[0], row[1]) if row else None


async def delete_session(session: AsyncSession, token_hash: str) -> None:
    await session.execute(delete(WebSession).where(WebSession.token_hash == token_hash))


async def delete_sessions_of(session: AsyncSession, user_id: int) -> None:
    await session.execute(delete(WebSession).where(WebSession.user_id == user_id))


async def login_failures(
    session: AsyncSession, keys: Sequence[str], window_start: datetime
) -> dict[str, LoginFailures]:
    """The counters of these keys whose window began after `window_start` (older ones no longer count)."""
    rows = await session.scalars(
        select(LoginFailures).where(
            LoginFailures.key.in_(keys), LoginFailures.window_started_at > window_start
        )
    )
    return {row.key: row for row in rows}


async def count_login_failure(session: AsyncSession, key: str, now: datetime, window_start: datetime) -> None:
    """Add one failure in one atomic upsert (concurrent processes never lose a count); a counter whose
    window began at or before `window_start` starts again at 1. Expired counters of other keys are removed."""
    dialect = session.get_bind().dialect.name
    stale = select(LoginFailures.key).where(
        LoginFailures.window_started_at <= window_start, LoginFailures.key != key
    )
    if dialect == "postgresql":
        # Rows another login is counting stay for the next prune: waiting for them could deadlock.
        stale = stale.with_for_update(skip_locked=True)
    await session.execute(delete(LoginFailures).where(LoginFailures.key.in_(stale.limit(PRUNE_BATCH))))
    insert = postgresql_insert if dialect == "postgresql" else sqlite_insert
    expired = LoginFailures.window_started_at <= literal(window_start, UTCDateTime())
    statement = insert(LoginFailures).values(key=key, failures=1, window_started_at=now)
    await session.execute(
        statement.on_conflict_do_update(
            index_elements=[LoginFailures.key],
            set_={
                "failures": case((expired, 1), else_=LoginFailures.failures + 1),
                "window_started_at": case(
                    (expired, literal(now, UTCDateTime())), else_=LoginFailures.window_started_at
                ),
            },
        )
    )


async def forget_login_failures(session: AsyncSession, key: str) -> None:
    await session.execute(delete(LoginFailures).where(LoginFailures.key == key))
