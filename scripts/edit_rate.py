"""Edit rate of a real `concord serve` process: N experts at once, one annotation per request.

    .venv/bin/python scripts/edit_rate.py [--clients 16] [--requests 60] [--workers 1] [--database-url URL]

A quick check of the write path, not the study simulation (that is bench/load.py). A fresh database (SQLite
file in a temporary folder, or with --database-url a PostgreSQL server URL on which a new database is created
and dropped), one study with one expert per client, then `concord serve` on loopback. Each client (its own
httpx.AsyncClient) sends --requests edits one after the other, alternating a create and a move of the object
it just created, each with its own Idempotency-Key. Prints edits/s, p50/p99 latency, server CPU ms per edit
and the client's CPU share; last line JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.config import Settings  # noqa: E402
from app.main import create_app  # noqa: E402
from app.migrate import upgrade  # noqa: E402
from tests.factories import make_study, token_for  # noqa: E402


async def fresh_database(server_url: str | None, folder: Path) -> tuple[str, str | None]:
    if not server_url:
        return f"sqlite+aiosqlite:///{folder}/concord.db", None
    name = f"concord_rate_{secrets.token_hex(4)}"
    engine = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    await engine.dispose()
    return f"{server_url.rsplit('/', 1)[0]}/{name}", name


async def drop_database(server_url: str, name: str) -> None:
    engine = create_async_engine(server_url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as connection:
        await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await engine.dispose()


async def seed(url: str, folder: Path, clients: int) -> tuple[list[str], list[int]]:
    settings = Settings(data_dir=folder, database_url=url, argon2_time_cost=1, argon2_memory_kib=64)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        names = tuple(f"expert{index}" for index in range(clients))
        setup = await make_study(app, experts=names, image_count=4)
        tokens = [await token_for(app, name) for name in names]
    return tokens, [image.id for image in setup.images]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_server(url: str, folder: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CONCORD_DATABASE_URL": url, "CONCORD_DATA_DIR": str(folder)}
    command = [sys.executable, "-m", "app.cli", "serve", "--port", str(port)]
    if workers > 1:
        command += ["--workers", str(workers)]
    log = (folder / "serve.log").open("wb")
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)


async def wait_healthy(base_url: str, process: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(base_url=base_url) as client:
        for _ in range(240):
            if process.poll() is not None:
                raise SystemExit("concord serve exited; see serve.log")
            try:
                if (await client.get("/api/v1/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.25)
    raise SystemExit("concord serve did not answer")


async def expert(
    base_url: str, token: str, image_id: int, requests: int, log: list[tuple[float, int]]
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as client:
        url = f"/api/v1/images/{image_id}/annotations?mode=unaided"
        await client.get(url)  # the first open, outside the timed part
        last: dict[str, Any] | None = None
        for index in range(requests):
            x = 10 + (index % 40) * 4
            key = {"Idempotency-Key": secrets.token_hex(12)}
            start = time.perf_counter()
            if last is None or index % 2 == 0:
                box = {"label": "tumor", "x1": x, "y1": 10, "x2": x + 20, "y2": 30}
                response = await client.post(url, json=box, headers=key)
            else:
                move = {"version": last["version"], "x1": x, "y1": 40, "x2": x + 20, "y2": 60}
                response = await client.patch(f"/api/v1/annotations/{last['id']}", json=move, headers=key)
            log.append((time.perf_counter() - start, response.status_code))
            if response.is_success:
                last = response.json()


def server_cpu_seconds(pid: int) -> float:
    root = psutil.Process(pid)
    total = 0.0
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(args: argparse.Namespace, url: str, folder: Path) -> dict[str, Any]:
    tokens, images = await seed(url, folder, args.clients)
    port = free_port()
    process = start_server(url, folder, port, args.workers)
    base_url = f"http://127.0.0.1:{port}"
    try:
        await wait_healthy(base_url, process)
        log: list[tuple[float, int]] = []
        server_before, own_before = server_cpu_seconds(process.pid), time.process_time()
        start = time.perf_counter()
        await asyncio.gather(
            *(
                expert(base_url, token, images[index % len(images)], args.requests, log)
                for index, token in enumerate(tokens)
            )
        )
        wall = time.perf_counter() - start
        server_cpu = server_cpu_seconds(process.pid) - server_before
        own_cpu = time.process_time() - own_before
    except BaseException:
        print((folder / "serve.log").read_text()[-4000:], file=sys.stderr)
        raise
    finally:
        process.terminate()
        process.wait(timeout=30)
    ok = [seconds for seconds, status in log if status < 300]
    statuses: dict[str, int] = {}
    for _, status in log:
        statuses[str(status)] = statuses.get(str(status), 0) + 1
    return {
        "metric": "edits_per_second",
        "database": "postgresql" if args.database_url else "sqlite",
        "workers": args.workers,
        "clients": args.clients,
        "edits": len(ok),
        "value": round(len(ok) / wall, 1),
        "p50_ms": round(1000 * percentile(ok, 0.50), 1),
        "p99_ms": round(1000 * percentile(ok, 0.99), 1),
        "server_cpu_ms_per_edit": round(1000 * server_cpu / max(len(ok), 1), 2),
        "client_cpu_share": round(own_cpu / wall, 2),
        "statuses": statuses,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=60, help="edits per client")
    parser.add_argument("--workers", type=int, default=1, help="server processes (concord serve --workers)")
    parser.add_argument("--database-url", default=None, help="a PostgreSQL server URL; default SQLite")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="concord-rate-") as folder:
        url, created = asyncio.run(fresh_database(args.database_url, Path(folder)))
        try:
            upgrade(url)  # runs its own event loop
            result = asyncio.run(measure(args, url, Path(folder)))
        finally:
            if created and args.database_url:
                asyncio.run(drop_database(args.database_url, created))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
