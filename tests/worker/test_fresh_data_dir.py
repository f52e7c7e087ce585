"""`concord worker` and `python -m worker` on a fresh data dir migrate first, as `serve` does."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest


def _run(command: list[str], data_dir: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CONCORD_DATA_DIR": str(data_dir), "CONCORD_DATABASE_URL": ""}
    return subprocess.run(
        [sys.executable, *command], env=env, cwd=cwd, capture_output=True, text=True, check=False, timeout=120
    )


@pytest.mark.parametrize("command", [["-m", "app.cli", "worker", "--once"], ["-m", "worker", "--once"]])
def test_the_worker_migrates_a_fresh_data_dir_before_it_polls(tmp_path: Path, command: list[str]) -> None:
    data = tmp_path / "fresh" / "data"

    done = _run(command, data, tmp_path)

    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "no such table" not in output, output
    assert "claim step failed" not in output, output
    with closing(sqlite3.connect(data / "concord.db")) as database:
        tables = {row[0] for row in database.execute("select name from sqlite_master where type = 'table'")}
    assert {"job", "worker_heartbeat", "alembic_version"} <= tables


def test_the_worker_says_in_one_line_when_the_data_dir_is_unusable(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")

    done = _run(["-m", "worker", "--once"], blocker / "data", tmp_path)

    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith(f"worker: cannot use the data dir {blocker / 'data'}: ")
