"""/healthz (the process answers), /readyz (database reachable, schema at the newest migration), /metrics."""

import secrets
from functools import cache

from alembic.script import ScriptDirectory
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.migrate import alembic_config
from app.observability.metrics import database_exposition, process_exposition

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers (the database is not asked)."""
    return {"status": "ok"}


@cache
def newest_revisions() -> frozenset[str]:
    """The heads of the migration scripts shipped with this code."""
    return frozenset(ScriptDirectory.from_config(alembic_config("")).get_heads())


async def _database_revisions(sessionmaker: async_sessionmaker[AsyncSession]) -> frozenset[str]:
    """The revisions the database is at (none when it was never migrated); raises when it does not answer."""
    async with sessionmaker() as session:
        await session.execute(text("SELECT 1"))
        try:
            rows = await session.execute(text("SELECT version_num FROM alembic_version"))
        except DBAPIError:
            return frozenset()
        return frozenset(str(row[0]) for row in rows)


@router.get("/readyz", responses={503: {"description": "not ready: the reason is in the body"}})
async def readyz(request: Request) -> JSONResponse:
    """Readiness: the database answers and its schema is at the newest migration (else 503)."""
    try:
        current = await _database_revisions(request.app.state.sessionmaker)
    except Exception as error:
        return _not_ready(f"database unreachable: {type(error).__name__}")
    expected = newest_revisions()
    if current != expected:
        found = ", ".join(sorted(current)) or "none"
        return _not_ready(
            f"migrations not current: database at {found}, code at {', '.join(sorted(expected))}"
        )
    return JSONResponse({"status": "ready", "revision": ", ".join(sorted(current))})


def _not_ready(reason: str) -> JSONResponse:
    return JSONResponse({"status": "not ready", "reason": reason}, status_code=503)


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus exposition: open by default, 404 when switched off, a bearer token when one is set."""
    settings: Settings = request.app.state.settings
    if not settings.metrics_enabled:
        return PlainTextResponse("metrics are switched off (CONCORD_METRICS_ENABLED)", status_code=404)
    if settings.metrics_token and not _bearer_matches(request, settings.metrics_token):
        return PlainTextResponse(
            "metrics need the token of CONCORD_METRICS_TOKEN",
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    body = process_exposition() + await database_exposition(request.app.state.sessionmaker)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def _bearer_matches(request: Request, token: str) -> bool:
    scheme, _, offered = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(offered.strip().encode(), token.encode())
