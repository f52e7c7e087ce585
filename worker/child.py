"""What runs inside the spawned child process: import the kind's function, run it, report back.

Messages to the parent over a one-way pipe: ("progress", fraction, message), then exactly one of
("result", dict) or ("error", text). The child ignores SIGINT (the parent decides what a Ctrl-C
means) and exits by itself when its parent dies, so an orphaned job never keeps running.
This module imports only the standard library and the pure registry: spawning it is cheap.
"""

import json
import os
import signal
import threading
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from app.jobs.registry import load_function

PROGRESS_MIN_INTERVAL_S = 0.1
PARENT_CHECK_INTERVAL_S = 0.5


class PipeProgress:
    """The ProgressReporter handed to a task: clamps the fraction and rate-limits messages."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._pending: tuple[float, str] | None = None
        self._last_sent = 0.0

    def __call__(self, fraction: float, message: str = "") -> None:
        self._pending = (min(max(float(fraction), 0.0), 1.0), str(message)[:2000])
        if time.monotonic() - self._last_sent >= PROGRESS_MIN_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        if self._pending is not None:
            self._connection.send(("progress", *self._pending))
            self._pending = None
            self._last_sent = time.monotonic()


def _exit_when_orphaned(parent_pid: int) -> None:
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_INTERVAL_S)
        os._exit(70)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _checked_result(result: Any) -> dict[str, Any]:
    if not isinstance(result, dict):
        raise TypeError(f"a job function must return a dict, not {type(result).__name__}")
    checked: dict[str, Any] = json.loads(json.dumps(result))
    return checked


def _error_text(error: BaseException) -> str:
    summary = "".join(traceback.format_exception_only(error)).strip()
    return f"{summary}\n\n{''.join(traceback.format_exception(error)).strip()}"


def child_main(function: str, params: dict[str, Any], connection: Connection, parent_pid: int) -> None:
    """Entry point of the spawned process (multiprocessing target)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_when_orphaned(parent_pid)
    progress = PipeProgress(connection)
    try:
        result = _checked_result(load_function(function)(params, progress))
        progress.flush()
        connection.send(("result", result))
    except Exception as error:
        progress.flush()
        connection.send(("error", _error_text(error)))
    finally:
        connection.close()
