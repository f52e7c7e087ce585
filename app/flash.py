"""Flash messages after an action, without inline script: a short-lived cookie read by the next full
page (after a redirect), or an `HX-Trigger` event that app/static/ui.js shows as a toast (in-place swaps)."""

import json
from urllib.parse import quote, unquote

from fastapi import Request
from fastapi.responses import Response

FLASH_COOKIE = "concord_flash"
FLASH_EVENT = "concord-flash"
FLASH_MAX_CHARS = 300


def flash(response: Response, message: str) -> Response:
    """Attach `message` to the response: a cookie when it redirects, else an HTMX event."""
    text = message[:FLASH_MAX_CHARS]
    redirects = response.status_code in (301, 302, 303, 307, 308) or "HX-Redirect" in response.headers
    if redirects:
        response.set_cookie(FLASH_COOKIE, quote(text), max_age=60, httponly=True, samesite="lax")
    else:
        response.headers["HX-Trigger"] = json.dumps({FLASH_EVENT: text})
    return response


def read_flash(request: Request) -> str | None:
    """The message waiting for this page, if any."""
    value = request.cookies.get(FLASH_COOKIE)
    if not value:
        return None
    return unquote(value)[:FLASH_MAX_CHARS] or None


def clear_flash(response: Response) -> None:
    response.delete_cookie(FLASH_COOKIE)
