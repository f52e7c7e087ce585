"""The `sleep` job kind: counts to `steps` over `seconds`, reporting progress; a smoke job for tests.

Params: seconds (float, default 1), steps (int, default 10), fail (str: raise RuntimeError with it at
the middle step), exit_code (int: end the process abruptly at the middle step, as a crash), record_dir (str: write `started-<marker>-<pid>.json` when it starts and
`done-<marker>-<pid>.json` when it finishes, so tests can count executions and find the process),
marker (str, names the record files).
"""

import json
import os
import time
from pathlib import Path
from typing import Any

from app.jobs.registry import ProgressReporter


def _record(params: dict[str, Any], stage: str) -> None:
    record_dir = params.get("record_dir")
    if not record_dir:
        return
    marker = str(params.get("marker", "job"))
    record = {"marker": marker, "pid": os.getpid(), "worker_pid": os.getppid(), "stage": stage}
    path = Path(record_dir) / f"{stage}-{marker}-{os.getpid()}.json"
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(record))
    temporary.replace(path)


def _fail_if_asked(params: dict[str, Any]) -> None:
    if params.get("fail"):
        raise RuntimeError(str(params["fail"]))
    if params.get("exit_code") is not None:
        os._exit(int(params["exit_code"]))


def run(params: dict[str, Any], progress: ProgressReporter) -> dict[str, Any]:
    seconds = float(params.get("seconds", 1.0))
    steps = max(int(params.get("steps", 10)), 1)
    _record(params, "started")
    for step in range(steps):
        if step == steps // 2:
            _fail_if_asked(params)
        time.sleep(seconds / steps)
        progress((step + 1) / steps, f"counted {step + 1} of {steps}")
    _record(params, "done")
    return {"counted": steps, "slept_s": seconds, "pid": os.getpid(), "worker_pid": os.getppid()}
