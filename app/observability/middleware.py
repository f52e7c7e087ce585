"""One ASGI middleware around the whole app: request id, one JSON log line and one latency sample per request.

It is added last, so it wraps every other middleware and times the full answer. The request id is the
client's `X-Request-ID` when that is a short token, else a new one; it is sent back in `X-Request-ID`
and is on every log line written while the request runs.
"""

import logging
import os
import re
import time
from collections.abc import Sequence

from fastapi.routing import iter_route_contexts
from prometheus_client import Histogram
from starlette.datastructures import Headers, MutableHeaders
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.observability.logs import request_id_var
from app.observability.metrics import REQUEST_SECONDS, TileCacheTally

log = logging.getLogger("concord.request")

REQUEST_ID_HEADER = "X-Request-ID"
UNMATCHED_ROUTE = "unmatched"  # 404s of unknown paths share one label: paths must not become label values
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id_of(scope: Scope) -> str:
    offered = Headers(scope=scope).get(REQUEST_ID_HEADER, "")
    return (
        offered if _CLIENT_REQUEST_ID.fullmatch(offered) else os.urandom(16).hex()
    )  # as random as uuid4().hex, for less


def full_templates(routes: Sequence[BaseRoute]) -> dict[int, str]:
    """Each route object's full path template, prefixes of included routers and mounts added."""
    return {
        id(context.original_route): context.path
        for context in iter_route_contexts(routes)
        if context.path is not None
    }


def _templates_of(scope: Scope) -> dict[int, str]:
    return full_templates(getattr(scope.get("app"), "routes", []))


def route_template(scope: Scope, templates: dict[int, str]) -> str:
    """The matched route's path template (`/api/v1/images/{image_id}`), never the raw path."""
    route = scope.get("route")
    if route is None:
        return UNMATCHED_ROUTE
    return templates.get(id(route)) or getattr(route, "path", None) or UNMATCHED_ROUTE


class ObservabilityMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.tile_cache = TileCacheTally()
        self._templates: dict[int, str] | None = None  # built at start-up (lifespan), when routes are final
        self._series: dict[tuple[str, str, int], Histogram] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan" and self._templates is None:
            # at start-up, not at the first requests: walking the routes also builds FastAPI's route
            # state, a quarter of a second that every request arriving meanwhile would wait for
            self._templates = _templates_of(scope)
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500  # unless a response starts: an exception that escapes every handler
        recorded = False

        def record_once() -> None:
            nonlocal recorded
            if not recorded:
                recorded = True
                self._record(scope, request_id, status, time.perf_counter() - started)

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message).append(REQUEST_ID_HEADER, request_id)
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                record_once()  # before the client has the whole answer: a request it saw is counted
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            record_once()
            request_id_var.reset(token)

    def _latency(self, method: str, route: str, status: int) -> Histogram:
        """The histogram's series of these labels, kept: looking a series up takes a lock every time."""
        key = (method, route, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = REQUEST_SECONDS.labels(
                method=method, route=route, status=str(status)
            )
        return series

    def _record(self, scope: Scope, request_id: str, status: int, seconds: float) -> None:
        if self._templates is None:  # an app served without its lifespan
            self._templates = _templates_of(scope)
        method, route = scope["method"], route_template(scope, self._templates)
        self._latency(method, route, status).observe(seconds)
        app_state = getattr(scope.get("app"), "state", None)
        self.tile_cache.sync(getattr(app_state, "tile_cache", None))
        log.log(
            logging.WARNING if status >= 500 else logging.INFO,
            "%s %s %d",
            method,
            scope["path"],
            status,
            extra={
                "request_id": request_id,
                "method": method,
                "path": scope["path"],
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
            },
        )
