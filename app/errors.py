"""Typed application errors that carry their HTTP status, and their handlers."""

import math
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel


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


class ErrorOut(BaseModel):
    """An error: the message of a refused request."""

    detail: str


class ValidationErrorOut(BaseModel):
    """A 422: the request's fields that failed validation, or the domain rule it broke."""

    detail: str | list[dict[str, Any]]


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "The body cannot be parsed"},
    401: {"model": ErrorOut, "description": "Not logged in, or an invalid API token"},
    403: {"model": ErrorOut, "description": "The role does not allow it, or a missing CSRF token"},
    404: {"model": ErrorOut, "description": "No such object, or not one of yours"},
    409: {"model": ErrorOut, "description": "Conflicts with the current state (version, duplicate)"},
    413: {"model": ErrorOut, "description": "The body is too large"},
    415: {"model": ErrorOut, "description": "Unsupported media type"},
    422: {"model": ValidationErrorOut, "description": "Invalid request"},
}
"""Documented on every API route: AppError answers carry `detail` as text, validation errors as a list."""


async def handle_app_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
    if request.headers.get("HX-Request") == "true":
        toast = f'<div class="toast toast-error" role="alert">{_escape(exc.message)}</div>'
        # htmx swaps 422 answers (forms showing their field errors): this one goes to the toasts instead.
        swap = {"HX-Retarget": "#toasts", "HX-Reswap": "beforeend"} if exc.status_code == 422 else {}
        headers = {"HX-Reswap": "none", **swap}
        return HTMLResponse(toast, status_code=exc.status_code, headers=headers)
    return JSONResponse({"detail": exc.message}, status_code=exc.status_code, headers=headers)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


async def handle_validation_error(request: Request, exc: Exception) -> Response:
    """422 with FastAPI's error list made JSON-safe; an out-of-range id in the path is 404 instead."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if _names_nothing(errors):
        return await handle_app_error(request, NotFound("no such object: the id is out of range"))
    return JSONResponse({"detail": _json_safe(errors)}, status_code=422)


OUT_OF_RANGE = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})


def _names_nothing(errors: Sequence[Any]) -> bool:
    """A path parameter is outside its bounds: no object has that id, whatever else is wrong."""
    return any(
        error.get("loc", ())[:1] == ("path",) and error.get("type") in OUT_OF_RANGE for error in errors
    )


def _json_safe(value: object) -> Any:
    """The value as plain JSON: the echoed input may hold NaN or ±Infinity, and ctx may hold exceptions."""
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, handle_app_error)
    app.add_exception_handler(RequestValidationError, handle_validation_error)
