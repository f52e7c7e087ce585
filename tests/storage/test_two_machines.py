"""An API process and a worker process that share nothing but the database and the bucket.

Each has its own data dir, as on two machines. Through the API: a detector and a whole-slide TIFF are
uploaded, a detect job is queued; the worker (which never saw either file) runs it; the API then serves
the suggestions and tiles. Runs on SQLite, or PostgreSQL when CONCORD_TEST_DATABASE_URL names one.
"""

import asyncio
import io
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from app.accounts.cli import add_user, new_token
from app.config import Settings
from app.detectors.service import BUILTIN_DIR
from app.images.tiles import TileCache
from app.migrate import upgrade
from app.phantoms import DETECT_LABELS, detect_region, write_pyramidal_tiff
from tests.conftest import ADMIN_DATABASE_URL, _postgres_database
from tests.detectors.helpers import box_iou
from tests.storage.conftest import bucket_keys

GIVE_UP_S = 120.0


@pytest.fixture
def fresh_database_url(tmp_path: Path) -> Iterator[str]:
    """A database of its own: the processes write rows that the shared test database must not keep."""
    if ADMIN_DATABASE_URL.startswith("postgresql"):
        url, drop = _postgres_database(ADMIN_DATABASE_URL)
        upgrade(url)
        yield url
        asyncio.run(drop())
        return
    url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"
    upgrade(url)
    yield url


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _machine_env(
    data_dir: Path, database_url: str, storage_url: str, s3_env: dict[str, str]
) -> dict[str, str]:
    return {
        **os.environ,
        **s3_env,
        "CONCORD_DATA_DIR": str(data_dir),
        "CONCORD_DATABASE_URL": database_url,
        "CONCORD_STORAGE_URL": storage_url,
        "CONCORD_LOG_FORMAT": "text",
    }


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", *command], env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait(condition: Callable[[], Any], what: str, logs: list[Path]) -> Any:
    deadline = time.monotonic() + GIVE_UP_S
    while time.monotonic() < deadline:
        try:
            value = condition()
        except httpx.TransportError:
            value = None
        if value:
            return value
        time.sleep(0.3)
    tails = "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}" for log in logs)
    raise AssertionError(f"{what} did not happen in {GIVE_UP_S} s\n{tails}")


def _files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def test_a_worker_elsewhere_runs_a_detector_uploaded_to_the_api(
    fresh_database_url: str, bucket: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    storage_url = f"s3://{bucket}/concord"
    api_dir, worker_dir = tmp_path / "api-machine", tmp_path / "worker-machine"
    admin_settings = Settings(data_dir=tmp_path / "cli", database_url=fresh_database_url)
    asyncio.run(add_user(admin_settings, "admin", "admin", None))
    token = asyncio.run(new_token(admin_settings, "admin", 0))

    phantom = detect_region(11, 1200, 1000)
    slide = tmp_path / "slide.tif"
    write_pyramidal_tiff(slide, phantom.image, mpp=0.25)

    port = _free_port()
    logs = [tmp_path / "api.log", tmp_path / "worker.log"]
    api = _start(
        ["app.cli", "serve", "--port", str(port)],
        _machine_env(api_dir, fresh_database_url, storage_url, s3_env),
        logs[0],
    )
    worker = _start(
        ["app.cli", "worker", "--name", "elsewhere", "--poll-interval", "0.3"],
        _machine_env(worker_dir, fresh_database_url, storage_url, s3_env),
        logs[1],
    )
    headers = {"Authorization": f"Bearer {token}"}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", headers=headers, timeout=60) as client:
            _wait(lambda: client.get("/health").status_code == 200, "the API answering", logs)
            detector = client.post(
                "/detectors",
                files={
                    "model": ("detect.onnx", (BUILTIN_DIR / "detect.onnx").read_bytes()),
                    "sidecar": ("detect.json", (BUILTIN_DIR / "detect.json").read_bytes()),
                },
            )
            assert detector.status_code == 201, detector.text
            study = client.post("/studies", json={"name": "two machines"}).json()
            task = client.post(
                f"/studies/{study['id']}/tasks",
                json={
                    "name": "mitoses",
                    "kind": "detect",
                    "labels": [{"name": name} for name in DETECT_LABELS],
                },
            ).json()
            with slide.open("rb") as stream:
                uploaded = client.post(f"/tasks/{task['id']}/images", files={"files": ("hpf.tif", stream)})
            assert uploaded.status_code == 201, uploaded.text
            image = uploaded.json()[0]

            started = client.post(f"/tasks/{task['id']}/detect", json={"detector_id": detector.json()["id"]})
            assert started.status_code == 202, started.text
            job_url = f"/jobs/{started.json()['job_id']}"
            job = _wait(
                lambda: (row := client.get(job_url).json())["status"] in ("succeeded", "failed") and row,
                "the detect job finishing",
                logs,
            )
            assert job["status"] == "succeeded", job["error"]
            assert job["lease_owner"] in (None, "elsewhere")

            sets = client.get(f"/tasks/{task['id']}/suggestion-sets").json()
            assert [item["source"] for item in sets] == ["detector"]
            detail = client.get(f"/suggestion-sets/{sets[0]['id']}").json()
            found = [(s["x1"], s["y1"], s["x2"], s["y2"]) for s in detail["suggestions"]]
            truth = [(o.x1, o.y1, o.x2, o.y2) for o in phantom.objects if o.label == DETECT_LABELS[0]]
            hits = sum(any(box_iou(box, other) >= 0.3 for other in found) for box in truth)
            assert truth, (hits, len(truth))
            assert hits / len(truth) >= 0.5, (hits, len(truth))

            tile = client.get(f"/images/{image['id']}/tiles/1/1/0", params={"size": 256, "format": "png"})
            assert tile.status_code == 200, tile.text
            with TileCache() as local:
                expected = local.tile(slide, 1, 1, 0, 256, "png")
            served = np.asarray(Image.open(io.BytesIO(tile.content)))
            assert np.array_equal(served, np.asarray(Image.open(io.BytesIO(expected))))
    finally:
        _stop(worker)
        _stop(api)

    keys = bucket_keys(s3_env, bucket)
    assert any(key.startswith("concord/images/") and key.endswith(".tif") for key in keys), keys
    assert any(key.startswith("concord/models/") for key in keys), keys
    assert any(key.startswith("concord/raw/") for key in keys), keys
    for folder in (api_dir, worker_dir):
        kept = _files_under(folder)
        assert not [name for name in kept if name.startswith(("images", "models", "raw"))], kept
    worker_files = _files_under(worker_dir)
    assert any(name.startswith("cache/models/") for name in worker_files), worker_files
