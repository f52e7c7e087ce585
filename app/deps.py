"""Annotated dependencies: the request's database session and the authenticated user."""

import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from argon2 import PasswordHasher
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import service as accounts
from app.config import Settings
from app.db import unit_of_work
from app.errors import Forbidden, NotAuthenticated
from app.models import User

SESSION_COOKIE = "concord_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request, its unit of work ending before the response is sent (scope "function")."""
    async with unit_of_work(request.app.state.sessionmaker) as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


def get_hasher(request: Request) -> PasswordHasher:
    hasher: PasswordHasher = request.app.state.password_hasher
    return hasher


HasherDep = Annotated[PasswordHasher, Depends(get_hasher)]


@dataclass(frozen=True)
class Principal:
    user: User
    csrf_token: str | None

    @property
    def is_admin(self) -> bool:
        return self.user.is_admin


async def _csrf_from_request(request: Request) -> str:
    """The header, or a plain form's field; uploads (multipart) must send the header (app/upload_guard.py)."""
    header = request.headers.get(CSRF_HEADER)
    if header:
        return header
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("application/x-www-form-urlencoded"):
        form = await request.form()
        value = form.get("csrf_token")
        return value if isinstance(value, str) else ""
    return ""


async def optional_principal(request: Request, session: SessionDep) -> Principal | None:
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        user = await accounts.user_from_bearer(session, authorization[7:].strip())
        if user is None:
            raise NotAuthenticated("invalid, expired or revoked API token, or a disabled account")
        return Principal(user=user, csrf_token=None)
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    found = await accounts.user_from_cookie(session, cookie)
    if found is None:
        return None
    user, csrf = found
    if request.method not in SAFE_METHODS:
        sent = await _csrf_from_request(request)
        if not hmac.compare_digest(sent, csrf):
            raise Forbidden("missing or wrong CSRF token; reload the page")
    return Principal(user=user, csrf_token=csrf)


OptionalPrincipal = Annotated[Principal | None, Depends(optional_principal)]


async def require_principal(principal: OptionalPrincipal) -> Principal:
    if principal is None:
        raise NotAuthenticated("log in or send an API token (Authorization: Bearer …)")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(require_principal)]


async def require_user(principal: CurrentPrincipal) -> User:
    return principal.user


CurrentUser = Annotated[User, Depends(require_user)]


async def require_admin(user: CurrentUser) -> User:
    if not user.is_admin:
        raise Forbidden("this needs the admin role")
    return user


AdminUser = Annotated[User, Depends(require_admin)]
