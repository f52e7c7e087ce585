"""`concord serve --with-worker` answers on its port, runs one worker, and takes the worker down with it."""

import gc
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from app.config import Settings
from app.main import create_served_app


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_health(port: int, process: subprocess.Popen[bytes], attempts: int = 120) -> dict[str, str]:
    for _ in range(attempts):
        assert process.poll() is None, "serve exited early"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health", timeout=2) as response:
                return {"status": response.read().decode()}
        except OSError:
            time.sleep(0.5)
    raise AssertionError("serve did not answer")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Kill serve if a failed assertion left it running; reap it and close its pipes either way."""
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=30)


def _worker_children(pid: int) -> list[psutil.Process]:
    children = psutil.Process(pid).children(recursive=True)
    return [child for child in children if "worker" in " ".join(child.cmdline())]


def test_serve_with_worker_starts_and_stops_both(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "CONCORD_DATA_DIR": str(tmp_path), "CONCORD_DATABASE_URL": ""}
    command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--with-worker"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert '"ok"' in _wait_for_health(port, process)["status"]
        workers = _worker_children(process.pid)
        assert len(workers) == 1
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
        _gone, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, "the worker outlived serve"
    finally:
        _stop(process)


def _server_children(pid: int) -> list[psutil.Process]:
    children = psutil.Process(pid).children(recursive=True)
    return [child for child in children if "spawn_main" in " ".join(child.cmdline())]


def test_serve_with_workers_runs_that_many_server_processes(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "CONCORD_DATA_DIR": str(tmp_path), "CONCORD_DATABASE_URL": ""}
    command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", "2"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert '"ok"' in _wait_for_health(port, process)["status"]
        for _ in range(60):  # the second process may still be starting
            if len(_server_children(process.pid)) == 2:
                break
            time.sleep(0.5)
        assert len(_server_children(process.pid)) == 2
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=30)
        assert b"SQLite takes one writer at a time" in errors
    finally:
        _stop(process)


def _get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
        return str(response.read().decode())


def _healthz_count(exposition: str) -> float:
    from tests.observability.helpers import parse_samples, value

    samples = parse_samples(exposition)
    return value(
        samples, "concord_http_request_duration_seconds_count", method="GET", route="/healthz", status="200"
    )


def test_metrics_of_several_server_processes_add_up_and_requests_log_json(tmp_path: Path) -> None:
    """Each scrape may land on either process: only summed counts give the same total every time."""
    port = _free_port()
    env = {**os.environ, "CONCORD_DATA_DIR": str(tmp_path), "CONCORD_DATABASE_URL": ""}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", "2"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for_health(port, process)
        for _ in range(60):
            if len(_server_children(process.pid)) == 2:
                break
            time.sleep(0.5)
        for _ in range(40):
            _get(port, "/healthz")
        totals = {_healthz_count(_get(port, "/metrics")) for _ in range(6)}
        assert totals == {40.0}
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=30)
    finally:
        _stop(process)
    lines = [json.loads(line) for line in errors.decode().splitlines() if line.startswith("{")]
    requests = [
        line for line in lines if line.get("logger") == "concord.request" and line["route"] == "/healthz"
    ]
    assert len(requests) == 40
    assert len({line["request_id"] for line in requests}) == 40


@pytest.fixture
def collector_restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)


@pytest.mark.usefixtures("collector_restored")
async def test_the_served_app_freezes_what_its_lifespan_built(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Objects the lifespan makes (after create_served_app's own freeze) leave the collector's generations
    too, so that a full collection of a running server does not walk them."""
    monkeypatch.setenv("CONCORD_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CONCORD_DATABASE_URL", settings.resolved_database_url)
    app = create_served_app()
    async with app.router.lifespan_context(app):
        built = app.state.tile_cache
        assert gc.is_tracked(built)
        assert all(obj is not built for obj in gc.get_objects())
