"""Security headers on every response — API, pages, static files and errors alike — as ASGI middleware.

The policy allows scripts only from our own origin (no inline script, no eval): templates keep their
JavaScript in app/static. HSTS is sent only on HTTPS requests; behind a proxy the scheme is the
forwarded one only when CONCORD_FORWARDED_ALLOW_IPS trusts that proxy (see `install_security_headers`).
"""

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from app.config import Settings

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        # Inline style attributes (label swatches) and the styles that htmx, Swagger UI and ReDoc inject.
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "font-src 'self' data:",
        "connect-src 'self'",
        "worker-src 'self' blob:",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
BASE_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
}


def security_headers(*, https: bool, hsts_seconds: int) -> list[tuple[bytes, bytes]]:
    headers = dict(BASE_HEADERS)
    if https and hsts_seconds > 0:
        headers["strict-transport-security"] = f"max-age={hsts_seconds}"
    return [(name.encode(), value.encode()) for name, value in headers.items()]


class SecurityHeadersMiddleware:
    """Adds the headers to each HTTP response (a route's own value of a header wins).

    An unhandled exception is answered here with a plain 500 that carries the headers too, then re-raised
    so that the server still logs it (Starlette's outer error middleware sees the response started)."""

    def __init__(self, app: ASGIApp, *, hsts_seconds: int) -> None:
        self.app = app
        self.hsts_seconds = hsts_seconds
        # built once: encoding them per response cost more than the rest of this middleware
        self._by_https = {
            https: security_headers(https=https, hsts_seconds=hsts_seconds) for https in (False, True)
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self._by_https[scope.get("scheme") == "https"]
        started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [
                    *message.get("headers", []),
                    *((name, value) for name, value in extra if name not in present),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            if not started:
                await send_with_headers(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")],
                    }
                )
                await send({"type": "http.response.body", "body": b"Internal Server Error"})
            raise


def install_security_headers(app: FastAPI, settings: Settings) -> None:
    """The headers on every response; behind the proxies named in CONCORD_FORWARDED_ALLOW_IPS the client
    address and scheme come from X-Forwarded-For and X-Forwarded-Proto (uvicorn's own proxy-headers
    handling is switched off in `concord serve`, so this setting is the only one that counts)."""
    app.add_middleware(SecurityHeadersMiddleware, hsts_seconds=settings.hsts_seconds)
    if settings.trusted_proxies:
        # Added last, so it runs first: the headers middleware then sees the forwarded scheme.
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
