"""The one hook app/main.py calls: the outermost middleware, the probe and metrics routes, edit counting."""

from fastapi import FastAPI

from app.observability.metrics import count_committed_edits
from app.observability.middleware import ObservabilityMiddleware
from app.observability.routes import router


def install_observability(app: FastAPI) -> None:
    """Call after every other `add_middleware`: the last one added wraps all the others."""
    app.add_middleware(ObservabilityMiddleware)
    app.include_router(router)
    count_committed_edits()
