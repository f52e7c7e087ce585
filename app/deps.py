"""Annotated dependencies: the request's database session, the authenticated user (API and pages), and the
objects a path names, loaded or 404."""

import hmac
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from argon2 import PasswordHasher
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import service as accounts
from app.config import Settings
from app.db import unit_of_work
from app.errors import Forbidden, NotAuthenticated, NotFound
from app.jobs import repository as jobs_repository
from app.models import Image, Job, Study, SuggestionSet, Task, User
from app.schemas_common import PathId
from app.studies import service as studies
from app.suggestions import repository as suggestions_repository

SESSION_COOKIE = "concord_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
API_PATH_PREFIX = "/api/"


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request, its unit of work ending before the response is sent (scope "function")."""
    async with unit_of_work(request.app.state.sessionmaker) as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def get_settings_dep(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]


async def get_hasher(request: Request) -> PasswordHasher:
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


def bearer_token(request: Request) -> str | None:
    # the raw headers scanned as Headers.get scans them (names as sent, lowercased by the server), without
    # building a Headers object: a granted tile asks this on every request
    for name, value in request.scope["headers"]:
        if name == b"authorization":
            authorization: str = value.decode("latin-1")
            if authorization[:7].lower() == "bearer ":
                return authorization[7:].strip()
            return None
    return None


def request_credential(request: Request) -> str | None:
    """The credential a request authenticates with, as optional_principal reads it: the API token, else the
    session cookie (tile grants are bound to it)."""
    return bearer_token(request) or request.cookies.get(SESSION_COOKIE) or None


async def optional_principal(request: Request, session: SessionDep) -> Principal | None:
    token = bearer_token(request)
    if token is not None:
        user = await accounts.user_from_bearer(session, token)
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


# --- pages: a missing login sends to the login page instead of answering 401 --------------------------


class LoginRequired(Exception):
    """A page needs a logged-in user; answered by a redirect to the login page (app.templating)."""

    def __init__(self, next_url: str, expired: bool) -> None:
        super().__init__(next_url)
        self.next_url = next_url
        self.expired = expired


def _next_of(request: Request) -> str:
    if request.method == "GET":
        query = f"?{request.url.query}" if request.url.query else ""
        return request.url.path + query
    current = urlsplit(request.headers.get("HX-Current-URL", "/"))
    return current.path or "/"


async def require_page_principal(request: Request, principal: OptionalPrincipal) -> Principal:
    if principal is None:
        raise LoginRequired(_next_of(request), expired=SESSION_COOKIE in request.cookies)
    return principal


PagePrincipal = Annotated[Principal, Depends(require_page_principal)]


async def require_page_admin(principal: PagePrincipal) -> Principal:
    if not principal.is_admin:
        raise Forbidden("this page needs the admin role")
    return principal


PageAdmin = Annotated[Principal, Depends(require_page_admin)]


# --- objects a path names: loaded, or 404 when missing or hidden from the user ----------------------
# A route states its role (AdminUser, PageAdmin …) before these, so that an expert on an admin route
# meets the 403 of the role before the 404 of an object hidden from experts.


async def require_viewer(request: Request, principal: OptionalPrincipal) -> User:
    """The user an object is loaded for: the API answers 401 without one, a page sends to the login page."""
    if request.url.path.startswith(API_PATH_PREFIX):
        return (await require_principal(principal)).user
    return (await require_page_principal(request, principal)).user


Viewer = Annotated[User, Depends(require_viewer)]


async def load_study(study_id: PathId, session: SessionDep, viewer: Viewer) -> Study:
    return await studies.get_study(session, viewer, study_id)


async def load_task(task_id: PathId, session: SessionDep, viewer: Viewer) -> Task:
    return await studies.get_task(session, viewer, task_id)


async def load_image(image_id: PathId, session: SessionDep, viewer: Viewer) -> Image:
    return await studies.get_image(session, viewer, image_id)


async def load_suggestion_set(set_id: PathId, session: SessionDep, viewer: Viewer) -> SuggestionSet:
    """Admins only: experts never reach a suggestion set (they see its suggestions in their workspace)."""
    suggestion_set = await suggestions_repository.set_by_id(session, set_id)
    if suggestion_set is None or not viewer.is_admin:
        raise NotFound(f"no suggestion set {set_id}")
    return suggestion_set


async def load_job(job_id: PathId, session: SessionDep, viewer: Viewer) -> Job:
    """Admins only, as the whole job queue."""
    job = await jobs_repository.job_by_id(session, job_id)
    if job is None or not viewer.is_admin:
        raise NotFound(f"no job {job_id}")
    return job


StudyDep = Annotated[Study, Depends(load_study)]
TaskDep = Annotated[Task, Depends(load_task)]
ImageDep = Annotated[Image, Depends(load_image)]
SuggestionSetDep = Annotated[SuggestionSet, Depends(load_suggestion_set)]
JobDep = Annotated[Job, Depends(load_job)]
