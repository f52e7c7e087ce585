"""Account rules: creating and disabling users, API tokens, browser sessions, the login rate limit."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import repository
from app.accounts.password_policy import password_problem
from app.accounts.security import digest, hash_password, new_secret, verify_password
from app.errors import Conflict, Invalid, NotAuthenticated, NotFound, TooManyRequests
from app.models import ApiToken, Role, User, WebSession
from app.models.base import utcnow

VALID_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-@")
MAX_TOKEN_DAYS = 3650
# A token's last use is written at most this often, so that authenticating is not a write per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def check_user_name(name: str) -> str:
    if not 1 <= len(name) <= 64 or not set(name) <= VALID_NAME_CHARS:
        raise Invalid("user names are 1-64 characters of letters, digits, _ . - @")
    return name


def check_password(password: str, user_name: str) -> None:
    problem = password_problem(password, user_name)
    if problem is not None:
        raise Invalid(problem)


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
    if password is not None:
        check_password(password, name)
    user = User(
        name=name,
        role=role,
        password_hash=hash_password(hasher, password) if password else None,
    )
    session.add(user)
    await session.flush()
    return user


async def set_password(session: AsyncSession, hasher: PasswordHasher, user: User, password: str) -> None:
    check_password(password, user.name)
    user.password_hash = hash_password(hasher, password)
    await session.flush()


async def get_user(session: AsyncSession, name: str) -> User:
    user = await repository.user_by_name(session, name)
    if user is None:
        raise NotFound(f"no user {name!r}")
    return user


async def set_disabled(session: AsyncSession, user: User, disabled: bool, *, by: User | None = None) -> User:
    """Disabling ends the user's browser sessions; their tokens stop working until they are enabled."""
    if disabled and by is not None and by.id == user.id:
        raise Conflict("you cannot disable your own account")
    if disabled and user.disabled_at is None:
        user.disabled_at = utcnow()
        await repository.delete_sessions_of(session, user.id)
    elif not disabled:
        user.disabled_at = None
    await session.flush()
    return user


async def issue_token(session: AsyncSession, user_name: str, expires_days: int | None = None) -> str:
    """A new personal API token, shown once; it expires after `expires_days` days (None: never)."""
    if expires_days is not None and not 1 <= expires_days <= MAX_TOKEN_DAYS:
        raise Invalid(f"a token expires after 1 to {MAX_TOKEN_DAYS} days")
    user = await get_user(session, user_name)
    token = new_secret("cc_")
    expires_at = utcnow() + timedelta(days=expires_days) if expires_days is not None else None
    session.add(ApiToken(user_id=user.id, token_hash=digest(token), expires_at=expires_at))
    await session.flush()
    return token


async def revoke_token(session: AsyncSession, user: User, token_id: int) -> None:
    """Revoke one of the user's own tokens; someone else's token is as unknown as a missing one."""
    if not await repository.delete_token(session, user.id, token_id):
        raise NotFound(f"no token {token_id}")


@dataclass(frozen=True)
class LoginLimits:
    window: timedelta
    per_account: int
    per_address: int


@dataclass(frozen=True)
class BrowserLogin:
    user: User
    session_token: str
    csrf_token: str


def _failure_keys(name: str, address: str) -> tuple[str, str]:
    return f"account:{name.lower()[:150]}", f"address:{address[:150]}"


async def _refuse_when_limited(
    session: AsyncSession, limits: LoginLimits, name: str, address: str, now: datetime
) -> None:
    account_key, address_key = _failure_keys(name, address)
    counts = await repository.login_failures(session, [account_key, address_key], now - limits.window)
    waits = []
    for key, limit in ((account_key, limits.per_account), (address_key, limits.per_address)):
        found = counts.get(key)
        if found is not None and found.failures >= limit:
            waits.append(found.window_started_at + limits.window - now)
    if waits:
        seconds = max(1, int(max(waits).total_seconds() + 0.999))
        raise TooManyRequests(
            f"too many failed logins; try again in {seconds} s", retry_after_seconds=seconds
        )


async def login(
    session: AsyncSession,
    hasher: PasswordHasher,
    name: str,
    password: str,
    hours: float,
    *,
    address: str,
    limits: LoginLimits,
) -> BrowserLogin:
    """Check the password (the same argon2 work for unknown names), counting failures per name and address.

    Raises TooManyRequests before any password check when either counter is at its limit."""
    now = utcnow()
    await _refuse_when_limited(session, limits, name, address, now)
    user = await repository.user_by_name(session, name)
    matched = verify_password(hasher, user.password_hash if user else None, password)
    if user is None or not matched:
        for key in _failure_keys(name, address):
            await repository.count_login_failure(session, key, now, now - limits.window)
        raise NotAuthenticated("wrong user name or password")
    if user.is_disabled:
        raise NotAuthenticated("this account is disabled; ask an admin")
    await repository.forget_login_failures(session, _failure_keys(name, address)[0])
    token, csrf = new_secret(), new_secret()
    session.add(
        WebSession(
            user_id=user.id,
            token_hash=digest(token),
            csrf_token=csrf,
            expires_at=now + timedelta(hours=hours),
        )
    )
    await session.flush()
    return BrowserLogin(user=user, session_token=token, csrf_token=csrf)


async def logout(session: AsyncSession, session_token: str) -> None:
    await repository.delete_session(session, digest(session_token))


async def user_from_bearer(session: AsyncSession, token: str) -> User | None:
    """The token's user, unless the token expired or the user is disabled."""
    now = utcnow()
    found = await repository.user_by_token_hash(session, digest(token), now)
    if found is None:
        return None
    user, api_token = found
    note_token_use(api_token, now)
    return user


def note_token_use(api_token: ApiToken, now: datetime) -> None:
    """Record when the token was last used, to the minute (a write per request would cost more than it tells)."""
    if api_token.last_used_at is None or now - api_token.last_used_at >= LAST_USED_RESOLUTION:
        api_token.last_used_at = now


async def user_from_cookie(session: AsyncSession, cookie: str) -> tuple[User, str] | None:
    found = await repository.session_by_hash(session, digest(cookie), utcnow())
    if found is None:
        return None
    user, web_session = found
    return user, web_session.csrf_token
