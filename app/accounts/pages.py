"""HTML routes of accounts: the root redirect, login and logout."""

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from app.accounts import service
from app.config import Settings
from app.deps import SESSION_COOKIE, HasherDep, OptionalPrincipal, PagePrincipal, SessionDep, SettingsDep
from app.errors import NotAuthenticated, TooManyRequests
from app.templating import redirect, render

router = APIRouter(tags=["pages"], include_in_schema=False)

DASHBOARD = "/dashboard"
ADMIN_LANDING = "/admin"  # the study overview (app/studies/overview_pages.py)


def safe_next(next_url: str | None) -> str:
    """Only local paths: never redirect to another site after login."""
    if not next_url or not next_url.startswith("/") or next_url.startswith("//") or "\\" in next_url:
        return DASHBOARD
    return next_url


@router.get("/")
async def root(request: Request, principal: OptionalPrincipal) -> Response:
    """The overview (admins) or the dashboard when logged in, else the login page."""
    if principal is None:
        return redirect(request, "/login")
    return redirect(request, ADMIN_LANDING if principal.is_admin else DASHBOARD)


@router.get("/login")
async def login_page(
    request: Request, principal: OptionalPrincipal, next: str | None = None, expired: bool = False
) -> Response:
    """The login form."""
    if principal is not None:
        return redirect(request, safe_next(next))
    notice = "Your session has expired. Please log in again." if expired else None
    return _login_form(request, next_url=safe_next(next), notice=notice)


def _login_form(
    request: Request,
    *,
    next_url: str,
    name: str = "",
    notice: str | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    context = {"next_url": next_url, "name": name, "notice": notice, "error": error, "principal": None}
    return render(request, "login.html", context, block="content", status_code=status_code)


def login_limits(settings: Settings) -> service.LoginLimits:
    return service.LoginLimits(
        window=timedelta(seconds=settings.login_window_seconds),
        per_account=settings.login_max_failures_per_account,
        per_address=settings.login_max_failures_per_address,
    )


def client_address(request: Request) -> str:
    """The peer's address; behind a trusted proxy the proxy-headers middleware has already put the
    X-Forwarded-For client here (CONCORD_FORWARDED_ALLOW_IPS)."""
    return request.client.host if request.client else "unknown"


def is_https(request: Request) -> bool:
    """The request's scheme, which reflects X-Forwarded-Proto only from a trusted proxy."""
    return request.url.scheme == "https"


@router.post("/login")
async def login(
    request: Request,
    session: SessionDep,
    hasher: HasherDep,
    settings: SettingsDep,
    name: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = DASHBOARD,
) -> Response:
    """Check the password, set the session cookie and go on."""
    try:
        done = await service.login(
            session,
            hasher,
            name.strip(),
            password,
            settings.session_hours,
            address=client_address(request),
            limits=login_limits(settings),
        )
    except TooManyRequests as error:
        response = _login_form(
            request, next_url=safe_next(next), name=name, error=error.message, status_code=429
        )
        response.headers["Retry-After"] = str(error.retry_after_seconds)
        return response
    except NotAuthenticated as error:
        return _login_form(request, next_url=safe_next(next), name=name, error=error.message, status_code=422)
    landing = safe_next(next)
    if landing == DASHBOARD and done.user.is_admin:
        landing = ADMIN_LANDING
    response = redirect(request, landing)
    response.set_cookie(
        SESSION_COOKIE,
        done.session_token,
        max_age=int(settings.session_hours * 3600),
        httponly=True,
        secure=settings.secret_cookie_secure or is_https(request),
        samesite="lax",
    )
    return response


@router.post("/logout")
async def logout(request: Request, session: SessionDep, _principal: PagePrincipal) -> Response:
    """End the browser session."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        await service.logout(session, cookie)
    response = redirect(request, "/login")
    response.delete_cookie(SESSION_COOKIE)
    return response
