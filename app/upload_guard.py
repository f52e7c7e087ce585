"""Refuse request bodies before reading them: uploads need a valid credential first, and no body may be
larger than CONCORD_MAX_UPLOAD_BYTES (plus room for the multipart framing), declared or streamed.

Starlette parses (and spools to disk) a multipart body before FastAPI runs any dependency, so these
checks cannot live in a route: a pure ASGI middleware makes them on the request head alone. A body that
is multipart, of undeclared length (chunked) or larger than ANONYMOUS_BODY_BYTES is read only after its
bearer token or session cookie is found valid; a multipart upload by cookie must also carry the CSRF
token in the X-CSRF-Token header (the form body is not read to find it). A body that grows past the
limit while streaming is cut off there. Every refusal says `Connection: close`, so that the server
closes the connection instead of draining the rest of the body. (Starlette's own body-limit middleware
caps the size, but neither authenticates first nor closes the connection.)
"""

import hmac
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.accounts import service as accounts
from app.config import Settings
from app.deps import CSRF_HEADER, SAFE_METHODS, SESSION_COOKIE
from app.errors import AppError, Forbidden, NotAuthenticated, PayloadTooLarge, handle_app_error

MULTIPART_ALLOWANCE = 1024 * 1024
ANONYMOUS_BODY_BYTES = 64 * 1024


class BodyTooLarge(Exception):
    """Raised into the application when a streamed body passes the limit; the guard answers 413."""


def body_limit(settings: Settings) -> int:
    """The largest request body accepted: the upload limit plus room for form fields and part headers."""
    return settings.max_upload_bytes + MULTIPART_ALLOWANCE


class UploadGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        settings: Settings = scope["app"].state.settings
        limit = body_limit(settings)
        headers = Headers(scope=scope)
        declared = _declared_length(headers)
        if _needs_credential_first(headers, declared):
            problem = await credential_problem(scope["app"].state.sessionmaker, HTTPConnection(scope))
            if problem is not None:
                await refuse(scope, send, problem)
                return
        if declared is not None and declared > limit:
            await refuse(scope, send, PayloadTooLarge(f"request bodies are limited to {limit} bytes"))
            return
        await _run_capped(self.app, scope, receive, send, limit)


def _declared_length(headers: Headers) -> int | None:
    value = headers.get("content-length")
    return int(value) if value is not None and value.isdigit() else None


def _is_multipart(headers: Headers) -> bool:
    return headers.get("content-type", "").lower().startswith("multipart/")


def _needs_credential_first(headers: Headers, declared: int | None) -> bool:
    if _is_multipart(headers):
        return True
    if declared is None:
        return "chunked" in headers.get("transfer-encoding", "").lower()
    return declared > ANONYMOUS_BODY_BYTES


async def credential_problem(
    maker: async_sessionmaker[AsyncSession], connection: HTTPConnection
) -> AppError | None:
    """Why the request's credential does not let it send a body yet, or None when it does."""
    authorization = connection.headers.get("authorization", "")
    async with maker() as session:
        if authorization.lower().startswith("bearer "):
            user = await accounts.user_from_bearer(session, authorization[7:].strip())
            return None if user is not None else NotAuthenticated("invalid API token")
        cookie = connection.cookies.get(SESSION_COOKIE)
        found = None if not cookie else await accounts.user_from_cookie(session, cookie)
    if found is None:
        return NotAuthenticated("log in or send an API token (Authorization: Bearer …) before uploading")
    _user, csrf = found
    if _is_multipart(connection.headers):
        sent = connection.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent, csrf):
            return Forbidden(f"uploads need the CSRF token in the {CSRF_HEADER} header; reload the page")
    return None


async def refuse(scope: Scope, send: Send, error: AppError) -> None:
    """Answer with the error as the app's handlers render it, and close the connection."""
    response = await handle_app_error(Request(scope), error)
    response.headers["Connection"] = "close"
    await response(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


@dataclass
class _Progress:
    received: int = 0
    exceeded: bool = False
    response_started: bool = False


async def _run_capped(app: ASGIApp, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    """Run the app with a receive that stops at the limit; past it, the app's own answer becomes 413."""
    progress = _Progress()

    async def capped_receive() -> Message:
        message = await receive()
        if message["type"] == "http.request":
            progress.received += len(message.get("body", b""))
            if progress.received > limit:
                progress.exceeded = True
                raise BodyTooLarge(f"the request body passed {limit} bytes")
        return message

    async def guarded_send(message: Message) -> None:
        if progress.exceeded and not progress.response_started:
            return
        if message["type"] == "http.response.start":
            progress.response_started = True
        await send(message)

    try:
        await app(scope, capped_receive, guarded_send)
    except Exception:
        if not progress.exceeded:
            raise
    if progress.exceeded and not progress.response_started:
        await refuse(scope, send, PayloadTooLarge(f"request bodies are limited to {limit} bytes"))
