"""Error answers of browser requests as pages in the site layout; API and script requests keep JSON.

A page shows the status, the message (timestamps in it as `<time>` elements that app/static/pages.js
writes in the browser's time zone) and a way back. HTMX requests keep their toast (app/errors.py).
"""

import logging
import re
from dataclasses import dataclass
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.accounts import service as accounts
from app.db import unit_of_work
from app.deps import SESSION_COOKIE, Principal
from app.errors import AppError, handle_app_error, handle_validation_error

logger = logging.getLogger(__name__)

ISO_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?")


@dataclass(frozen=True)
class Part:
    """A piece of an error message: plain text, or a timestamp to show in local time."""

    text: str
    timestamp: str | None = None


def message_parts(message: str) -> list[Part]:
    """The message split around its ISO timestamps, e.g. "opens 2026-12-12T07:05:26+00:00 (washout)"."""
    parts: list[Part] = []
    position = 0
    for found in ISO_TIMESTAMP.finditer(message):
        if found.start() > position:
            parts.append(Part(message[position : found.start()]))
        parts.append(Part(found.group(), timestamp=found.group()))
        position = found.end()
    if position < len(message):
        parts.append(Part(message[position:]))
    return parts


def wants_page(request: Request) -> bool:
    """A browser navigation (not an API call, not HTMX) that accepts HTML."""
    return (
        not request.url.path.startswith("/api/")
        and request.headers.get("HX-Request") != "true"
        and "text/html" in request.headers.get("accept", "")
    )


async def _principal(request: Request) -> Principal | None:
    """The logged-in user for the menu, read in a session of its own (the request's may be rolled back)."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    try:
        async with unit_of_work(request.app.state.sessionmaker) as session:
            found = await accounts.user_from_cookie(session, cookie)
    except Exception:  # the database itself may be what failed: the page is shown without the menu
        logger.exception("no user for the error page")
        return None
    return Principal(user=found[0], csrf_token=found[1]) if found else None


def _phrase(status_code: int) -> str:
    try:
        return HTTPStatus(status_code).phrase
    except ValueError:
        return "Error"


async def error_page(request: Request, status_code: int, message: str) -> Response:
    principal = await _principal(request)
    context = {
        "principal": principal,
        "status_code": status_code,
        "reason": _phrase(status_code),
        "parts": message_parts(message),
        "home_url": "/dashboard" if principal else "/login",
    }
    response: Response = request.app.state.templates.TemplateResponse(
        request, "error.html", context, status_code=status_code
    )
    response.headers["Vary"] = "HX-Request"
    return response


async def handle_app_error_page(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    if wants_page(request):
        return await error_page(request, exc.status_code, exc.message)
    return await handle_app_error(request, exc)


async def handle_http_error_page(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (no such route 404, 405): a page for browsers, `{"detail": …}` else."""
    assert isinstance(exc, StarletteHTTPException)
    if wants_page(request):
        message = "There is no such page." if exc.status_code == 404 else str(exc.detail)
        return await error_page(request, exc.status_code, message)
    return await handle_app_error(request, AppError(str(exc.detail), status_code=exc.status_code))


async def handle_validation_error_page(request: Request, exc: Exception) -> Response:
    """A page address with a malformed parameter: a page naming the fields; JSON for the API."""
    assert isinstance(exc, RequestValidationError)
    if not wants_page(request):
        return await handle_validation_error(request, exc)
    response = await handle_validation_error(request, exc)
    if response.status_code == 404:
        return await error_page(request, 404, "There is no such object: the id is out of range.")
    fields = ", ".join(str(error.get("loc", ("?",))[-1]) for error in exc.errors())
    return await error_page(request, 422, f"This address has an invalid value in: {fields}.")


class ServerErrorPage:
    """An unhandled exception on a browser navigation answers a 500 page in the site layout (then the
    exception goes on, so the server still logs it). Sits inside the security-headers middleware."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_watched(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_watched)
        except Exception:
            request = Request(scope)
            if not started and wants_page(request):
                message = "Something went wrong on the server; it has been logged. Please try again."
                response = await error_page(request, 500, message)
                await response(scope, receive, send)
            raise


def install_error_pages(app: FastAPI) -> None:
    """Replaces the JSON-or-toast handlers by ones that answer browser navigations with a page."""
    app.add_exception_handler(AppError, handle_app_error_page)
    app.add_exception_handler(StarletteHTTPException, handle_http_error_page)
    app.add_exception_handler(RequestValidationError, handle_validation_error_page)
