"""Typed application errors that carry their HTTP status, and their handlers."""

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response


class AppError(Exception):
    status_code = 400

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code


class NotAuthenticated(AppError):
    status_code = 401


class Forbidden(AppError):
    status_code = 403


class NotFound(AppError):
    status_code = 404


class Conflict(AppError):
    status_code = 409


class PayloadTooLarge(AppError):
    status_code = 413


class TooManyRequests(AppError):
    """Answered with a Retry-After header by the route that raises it (login)."""

    status_code = 429

    def __init__(self, message: str, *, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class UnsupportedMedia(AppError):
    status_code = 415


class Invalid(AppError):
    """A request that is well-formed JSON but breaks a domain rule (box outside image, unknown label)."""

    status_code = 422


def _wants_html(request: Request) -> bool:
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get("accept", "")


async def handle_app_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    if request.headers.get("HX-Request") == "true":
        toast = f'<div class="toast toast-error" role="alert">{_escape(exc.message)}</div>'
        return HTMLResponse(toast, status_code=exc.status_code, headers={"HX-Reswap": "none"})
    if _wants_html(request):
        return HTMLResponse(
            f"<!doctype html><title>Error</title><main><h1>{exc.status_code}</h1>"
            f"<p>{_escape(exc.message)}</p><a href='/'>Back</a></main>",
            status_code=exc.status_code,
        )
    return JSONResponse({"detail": exc.message}, status_code=exc.status_code, headers=headers)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, handle_app_error)
