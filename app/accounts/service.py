"""Account rules: creating users, issuing API tokens, browser sessions."""

from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import repository
from app.accounts.security import digest, hash_password, new_secret, verify_password
from app.errors import Conflict, Invalid, NotAuthenticated, NotFound
from app.models import ApiToken, Role, User, WebSession
from app.models.base import utcnow

LAST_USED_RESOLUTION = timedelta(minutes=1)
VALID_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-@")


def check_user_name(name: str) -> str:
    if not 1 <= len(name) <= 64 or not set(name) <= VALID_NAME_CHARS:
        raise Invalid("user names are 1-64 characters of letters, digits, _ . - @")
    return name


async def create_user(
    session: AsyncSession,
    hasher: PasswordHasher,
    name: str,
    role: str,
    password: str | None,
) -> User:
    check_user_name(name)
    if role not in set(Role):
        raise Invalid(f"unknown role {role!r}; use admin or expert")
    if await repository.user_by_name(session, name):
        raise Conflict(f"user {name!r} already exists")
    if password is not None and len(password) < 8:
        raise Invalid("passwords need at least 8 characters")
    user = User(
        name=name,
        role=role,
        password_hash=hash_password(hasher, password) if password else None,
    )
    session.add(user)
    await session.flush()
    return user


async def set_password(session: AsyncSession, hasher: PasswordHasher, user: User, password: str) -> None:
    if len(password) < 8:
        raise Invalid("passwords need at least 8 characters")
    user.password_hash = hash_password(hasher, password)
    await session.flush()


async def issue_token(session: AsyncSession, user_name: str) -> str:
    user = await repository.user_by_name(session, user_name)
    if user is None:
        raise NotFound(f"no user {user_name!r}")
    token = new_secret("cc_")
    session.add(ApiToken(user_id=user.id, token_hash=digest(token)))
    await session.flush()
    return token


@dataclass(frozen=True)
class BrowserLogin:
    user: User
    session_token: str
    csrf_token: str


async def login(
    session: AsyncSession,
    hasher: PasswordHasher,
    name: str,
    password: str,
    hours: float,
) -> BrowserLogin:
    user = await repository.user_by_name(session, name)
    if user is None or not verify_password(hasher, user.password_hash, password):
        raise NotAuthenticated("wrong user name or password")
    token, csrf = new_secret(), new_secret()
    expires = utcnow() + timedelta(hours=hours)
    session.add(
        WebSession(
            user_id=user.id,
            token_hash=digest(token),
            csrf_token=csrf,
            expires_at=expires,
        )
    )
    await session.flush()
    return BrowserLogin(user=user, session_token=token, csrf_token=csrf)


async def logout(session: AsyncSession, session_token: str) -> None:
    await repository.delete_session(session, digest(session_token))


async def user_from_bearer(session: AsyncSession, token: str) -> User | None:
    found = await repository.user_by_token_hash(session, digest(token))
    if found is None:
        return None
    user, api_token = found
    now = utcnow()
    if api_token.last_used_at is None or now - api_token.last_used_at >= LAST_USED_RESOLUTION:
        api_token.last_used_at = now  # to the minute: a write per request would lock the token's row
    return user


async def user_from_cookie(session: AsyncSession, cookie: str) -> tuple[User, str] | None:
    found = await repository.session_by_hash(session, digest(cookie), utcnow())
    if found is None:
        return None
    user, web_session = found
    return user, web_session.csrf_token
