"""One JSON object per log line, carrying the request id or job id of the work that wrote it.

`logging_config(settings)` is a `logging.config.dictConfig` dictionary: `concord serve` hands it to
uvicorn (which applies it in every server process), the worker applies it itself. Request and job ids
live in context variables, so any log line written while a request or job step runs carries them.
"""

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from app.config import Settings

request_id_var: ContextVar[str | None] = ContextVar("concord_request_id", default=None)
job_id_var: ContextVar[int | None] = ContextVar("concord_job_id", default=None)

# Attributes every LogRecord has; anything else was passed through `extra=` and belongs in the line.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """ts, level, logger, message, request_id/job_id when set, the `extra=` fields, and the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _RECORD_ATTRIBUTES and not name.startswith("_"):
                line[name] = value
        request_id, job_id = request_id_var.get(), job_id_var.get()
        if request_id is not None:
            line.setdefault("request_id", request_id)
        if job_id is not None:
            line.setdefault("job_id", job_id)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class ContextTextFormatter(logging.Formatter):
    """The plain text format, with the request or job id in brackets when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        request_id, job_id = request_id_var.get(), job_id_var.get()
        if request_id is not None:
            return f"{text} [request {request_id}]"
        return f"{text} [job {job_id}]" if job_id is not None else text


def logging_config(settings: Settings) -> dict[str, Any]:
    formatter = (
        {"()": JsonFormatter}
        if settings.log_format == "json"
        else {"()": ContextTextFormatter, "format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"concord": formatter},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "concord", "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": ["stderr"], "level": settings.log_level},
        # uvicorn's own loggers go through the root handler; its access log is replaced by ours.
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": False, "level": "WARNING"},
        },
    }


@contextmanager
def job_context(job_id: int) -> Iterator[None]:
    """Log lines written inside the block carry this job id."""
    token = job_id_var.set(job_id)
    try:
        yield
    finally:
        job_id_var.reset(token)
