"""Tile requests per second and p99 at 32 connections: Concord's tile endpoint vs. a bare static route.

    .venv/bin/python bench/tiles.py [--tiles 1500] [--connections 32] [--side 50000] [--seed 0]

The slide: a phantom H&E whole slide of --side x --side pixels (default 50 000) written as an Aperio-style
SVS (tiled JPEG, Q 80, levels 4x apart as Aperio's are) and cached under $CONCORD_BENCH_CACHE (default
~/.cache/concord-bench); the first run generates it and prints how long that took. Level 0 repeats a
4096 x 4096 block of app/phantoms/detect.py's H&E region (period 16 tiles); each lower level is the
same block shrunk, repeated: every tile of the file is its own stored JPEG that a read decodes. Once the
server is up, the client reads the slide through once (`slide_read_through_s`), so that the cold phase
reads tiles from the OS page cache, as a server does with a slide in use: this machine's memory reclaim
pages out file data idle for about a minute, and tiles then read from the disk measure the disk, which
the static route (bytes in memory) never meets.

Setup: a fresh SQLite database and data dir in a temporary folder; an admin and an expert (API token,
unaided assignment), a study, a task, the slide stored for the study (linked, not copied) and its whole
extent made into a study image through the slides service. Then one server process (uvicorn, the app of
`concord serve` (app.main:create_served_app) with two routes added: PUT/GET /bench/static/{i}, no authentication, bytes from a dict;
the GET a bare Starlette route, called without FastAPI's per-request wrapper as the granted tile route is)
and this client process (--connections keep-alive connections, one request in flight on each, written
on bare asyncio streams: httpx costs several times the CPU of a cached tile's answer).

Client: --client raw (default) or httpx.

Phases, in one run: the client first asks the image's descriptor (GET /api/v1/images/{id}), as a viewer
does, and takes its `tile_url` (the granted tile route: the descriptor authorises once, each tile request
is checked by its signature and the same credential; see the README's "Tile path"), and opens its
connections (one health request each, not timed: otherwise only the first cold round would pay for
them). Then `cold` requests --tiles distinct tiles (levels 0-2, drawn with a seed; 256 px JPEG) as the
expert, each for the first time (the slide's stored JPEG passed through; a tile cut by the bottom edge
with its frame header cut to its rows; one cut by the right edge, 18 of 1500, as cropped and encoded by the
server's background thread that the descriptor's grant started (done about 0.1 s into the first round),
smallest level first; see the README's "Tile path"); `warm` requests the same tiles again (encoded cache); then the client stores each tile's
bytes under /bench/static/{i} (not timed) and `static` requests them from the bare route; then
`fastapi_static` requests them from an ordinary FastAPI route (/bench/fastapi-static/{i}, this
bench's baseline until 2026-11-29; the granted tile route skips FastAPI's per-request
wrapper, so against it the ratio would credit Concord with the wrapper's cost, about 30 µs per request).
The four phases alternate in --rounds rounds over slices of the tiles, so that all meet the same background
load of a shared machine. The bare static route is the baseline: ratio = tiles/s of a phase over the bare
static route's, in the same run; `ratio_vs_fastapi_route` and `ratio_cold_vs_fastapi_route` beside it.

Last line: {"metric": "tile_requests_per_second", "value" (warm), "unit", "baseline" (static), "ratio"
(warm / static), "ratio_cold", "cold_per_second", "p99_ms" (warm), "cold_p99_ms", "static_p99_ms",
"server_cpu_us" (each phase's server CPU per request, all its threads, from /proc; null elsewhere),
"server_page_faults" (each phase's minor page faults of the server per request: a cold tile's answer kept in
the encoded cache is new heap, a few pages a tile), ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from fastapi import Request
from fastapi.responses import Response
from starlette.routing import Route

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BLOCK = 4096
TILE = 256
FACTORS = (1, 4, 16, 64)
MPP = 0.25
PHASES = ("cold", "warm", "static", "fastapi_static")
BASELINE_NAME = (
    "same JPEG bytes from a bare Starlette GET route of the same app (no auth, no DB, bytes in a dict)"
)


# ---------------------------------------------------------------- the phantom slide


def cache_dir() -> Path:
    folder = Path(os.environ.get("CONCORD_BENCH_CACHE", Path.home() / ".cache" / "concord-bench"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _wrapped(block: np.ndarray, period: int) -> np.ndarray:
    """The block repeated so that any 256 px tile starting inside one period can be cut from it."""
    reps = -(-(period + TILE) // block.shape[0])
    return np.tile(block, (reps, reps, 1))


def _tiles(wrap: np.ndarray, period: int, width: int, height: int) -> Iterator[np.ndarray]:
    for top in range(0, height, TILE):
        for left in range(0, width, TILE):
            y, x = top % period, left % period
            yield wrap[y : y + TILE, x : x + TILE]


def make_phantom_slide(path: Path, side: int, seed: int) -> float:
    """Write the slide; returns the seconds it took."""
    from app.phantoms.detect import detect_region
    from tests.images.slidefiles import shrink, write_svs_tiles

    started = time.perf_counter()
    block = detect_region(seed, width=BLOCK, height=BLOCK).image
    levels = []
    for factor in FACTORS:
        base = shrink(block, factor)
        period = base.shape[0]
        size = -(-side // factor)
        levels.append((size, size, _tiles(_wrapped(base, period), period, size, size)))
    thumbnail = shrink(block, BLOCK // 256)
    partial = path.with_suffix(".partial")
    write_svs_tiles(partial, levels, thumbnail, mpp=MPP)
    partial.replace(path)
    return time.perf_counter() - started


def phantom_slide(side: int, seed: int) -> tuple[Path, str, float | None]:
    """The cached slide, its SHA-256, and the seconds generation took when this call generated it."""
    path = cache_dir() / f"phantom-{side}-{seed}.svs"
    took = None
    if not path.is_file():
        print(f"generating a {side} x {side} phantom slide at {path} (once) ...", file=sys.stderr, flush=True)
        took = make_phantom_slide(path, side, seed)
        print(
            f"generated in {took:.0f} s ({path.stat().st_size / 2**20:.0f} MiB)", file=sys.stderr, flush=True
        )
    digest_file = path.with_suffix(".sha256")
    if not digest_file.is_file() or digest_file.stat().st_mtime < path.stat().st_mtime:
        digest_file.write_text(_sha256(path))
    return path, digest_file.read_text().strip(), took


def read_through(path: Path) -> float:
    """Read the whole file once, so that its bytes are in the OS page cache; returns the seconds it took.
    This machine's memory reclaim pages out file data left idle for about a minute, and a cold tile whose
    bytes then come from the disk measures the disk, which the static route, serving from memory, never
    meets."""
    started = time.perf_counter()
    with path.open("rb", buffering=0) as file:
        while file.read(2**23):
            pass
    return time.perf_counter() - started


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(2**22):
            digest.update(chunk)
    return digest.hexdigest()


# ---------------------------------------------------------------- setup


@dataclass(frozen=True)
class Seeded:
    image_id: int
    token: str
    levels: list[tuple[int, int]]


def link_into_store(settings: Any, slide: Path, sha256: str) -> None:
    from app.images import storage

    target = storage.stored_path(settings, sha256, "svs")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(slide)


async def seed(settings: Any, slide: Path, sha256: str) -> Seeded:
    from argon2 import PasswordHasher

    from app.accounts import service as accounts
    from app.db import make_engine, make_sessionmaker
    from app.images import slides
    from app.images.tiles import ImageSource, Window
    from app.models import Assignment, Slide
    from app.studies import service as studies
    from app.studies.schemas import LabelIn, StudyCreate, TaskCreate

    link_into_store(settings, slide, sha256)
    with ImageSource(slide) as source:
        width, height, level_count = source.width, source.height, source.native_level_count
    engine = make_engine(settings.resolved_database_url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            expert = await accounts.create_user(session, PasswordHasher(), "expert", "expert", None)
            study = await studies.create_study(session, StudyCreate(name="tiles"))
            task, _ = await studies.create_task(
                session, study, TaskCreate(name="mitoses", kind="detect", labels=[LabelIn(name="mitosis")])
            )
            row = Slide(
                study_id=study.id,
                name="phantom",
                sha256=sha256,
                file_format="svs",
                width=width,
                height=height,
                level_count=level_count,
                microns_per_pixel=MPP,
            )
            session.add(row)
            await session.flush()
            whole = slides.Region("phantom-whole", Window(0, 0, width, height))
            (image,) = await slides.add_regions(session, task, row, [whole])
            session.add(Assignment(task_id=task.id, expert_id=expert.id, mode="unaided"))
            token = await accounts.issue_token(session, expert.name)
            image_id = image.id
    finally:
        await engine.dispose()
    with ImageSource(slide) as source:
        levels = source.levels
    return Seeded(image_id, token, levels)


def pick_tiles(levels: list[tuple[int, int]], count: int, seed: int) -> list[tuple[int, int, int]]:
    """Distinct tiles: 70 % of level 0, 20 % of level 1, 10 % of level 2 (what panning at 1x-1/16x asks)."""
    rng = random.Random(seed)
    chosen: list[tuple[int, int, int]] = []
    for level, share in ((0, 0.7), (1, 0.2), (2, 0.1)):
        width, height = levels[level]
        cols, rows = -(-width // TILE), -(-height // TILE)
        wanted = min(cols * rows, round(count * share))
        picks = rng.sample(range(cols * rows), wanted)
        chosen += [(level, pick % cols, pick // cols) for pick in picks]
    rng.shuffle(chosen)
    return chosen


# ---------------------------------------------------------------- server


def serve(args: argparse.Namespace) -> None:
    """Run in the server process: Concord's app as `concord serve` makes it (create_served_app: start-up
    objects frozen out of the garbage collector's generations, else a full collection pauses every request
    in flight for tens to hundreds of milliseconds) plus the bare static routes, on one uvicorn worker."""
    import uvicorn

    from app.main import create_served_app

    app = create_served_app()
    stored: dict[int, bytes] = {}

    @app.put("/bench/static/{index}", include_in_schema=False)
    async def put_static(index: int, request: Request) -> Response:
        stored[index] = await request.body()
        return Response(status_code=204)

    async def get_static(request: Request) -> Response:
        return Response(stored[int(request.path_params["index"])], media_type="image/jpeg")

    @app.get("/bench/fastapi-static/{index}", include_in_schema=False)
    async def get_fastapi_static(index: int) -> Response:
        return Response(stored[index], media_type="image/jpeg")

    # The baseline as bare as the granted tile route: a Starlette route, called without FastAPI's
    # per-request wrapper, which the granted route skips too (app/images/api.py, add_granted_tile_route).
    place_bench_routes(app, Route("/bench/static/{index:int}", get_static, methods=["GET"]))
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


def place_bench_routes(app: Any, bare: Route) -> None:
    """The bare route first in the routing table, so that matching the baseline's path costs no walk over
    Concord's routes; the bench's two FastAPI routes (added last) right after the granted tile route, so
    that Concord's routes keep their order of `concord serve` in front of it (the granted route second
    there, behind /openapi.json; the two routes' misses in front of it cost every tile about 1.1 µs)."""
    from app.images.api import get_granted_tile

    routes = app.router.routes
    added = [routes.pop(), routes.pop()]
    granted = next(
        i for i, route in enumerate(routes) if getattr(route, "endpoint", None) is get_granted_tile
    )
    routes[granted + 1 : granted + 1] = added
    routes.insert(0, bare)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, str(Path(__file__).resolve()), "--serve", "--port", str(port)]
    with log.open("wb") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)


async def wait_up(base: str, server: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(base_url=base) as client:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError("the server exited; see its log")
            try:
                if (await client.get("/api/v1/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("the server did not answer in time")


# ---------------------------------------------------------------- client


@dataclass
class Phase:
    name: str
    seconds: float
    latencies_ms: list[float]
    bodies: list[bytes]
    server_cpu_s: float | None = None
    server_faults: int | None = None

    def add(self, other: Phase) -> None:
        self.seconds += other.seconds
        self.latencies_ms += other.latencies_ms
        if other.server_cpu_s is not None:
            self.server_cpu_s = (self.server_cpu_s or 0.0) + other.server_cpu_s
        if other.server_faults is not None:
            self.server_faults = (self.server_faults or 0) + other.server_faults

    @property
    def server_page_faults(self) -> float | None:
        if self.server_faults is None:
            return None
        return round(self.server_faults / len(self.latencies_ms), 2)

    @property
    def server_cpu_us(self) -> float | None:
        """The server's CPU per request in this phase (µs): the p99 at 32 connections grows with it, as each
        request waits behind a generation of others."""
        if self.server_cpu_s is None:
            return None
        return round(self.server_cpu_s / len(self.latencies_ms) * 1e6, 1)

    @property
    def per_second(self) -> float:
        return len(self.latencies_ms) / self.seconds

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_ms, 0.99)


def process_cpu_s(pid: int) -> float | None:
    """CPU seconds of the process's live threads (Linux: /proc/<pid>/task/*/schedstat, in nanoseconds rather
    than the clock ticks of /proc/<pid>/stat); None where there is no such file."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return None
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as file:
                total += int(file.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # a thread that ended meanwhile
    return total / 1e9


def minor_faults(pid: int) -> int | None:
    """Minor page faults of the process so far (Linux: field 10 of /proc/<pid>/stat); None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            fields = file.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[7])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Connection:
    """One keep-alive HTTP/1.1 connection with the least client work (httpx costs several times the CPU
    of a cached tile's answer, and client and server share two cores). Reopened when the server closed
    it while idle (uvicorn's keep-alive timeout, during the untimed uploads)."""

    def __init__(self, port: int, token: str) -> None:
        self._port = port
        self._headers = f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def get(self, url: str) -> tuple[int, bytes]:
        try:
            return await self._get(url)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.close()
            return await self._get(url)

    async def _get(self, url: str) -> tuple[int, bytes]:
        if self._streams is None:
            self._streams = await asyncio.open_connection("127.0.0.1", self._port)
        reader, writer = self._streams
        writer.write(f"GET {url} HTTP/1.1\r\n{self._headers}\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return status, await reader.readexactly(length)

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


class HttpxConnection:
    """The same requests through one shared httpx client (--client httpx: the client of the issue's
    first measurement, whose own CPU then bounds the static route)."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def get(self, url: str) -> tuple[int, bytes]:
        response = await self._client.get(url)
        return response.status_code, response.content

    def close(self) -> None:
        pass


async def run_phase(
    connections: Sequence[Connection | HttpxConnection],
    name: str,
    urls: list[str],
    server_pid: int | None = None,
) -> Phase:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(urls)):
        queue.put_nowait(index)
    latencies = [0.0] * len(urls)
    bodies = [b""] * len(urls)

    async def work(connection: Connection | HttpxConnection) -> None:
        while not queue.empty():
            index = queue.get_nowait()
            started = time.perf_counter()
            status, body = await connection.get(urls[index])
            latencies[index] = (time.perf_counter() - started) * 1000
            if status != 200:
                raise RuntimeError(f"{name}: {urls[index]} answered {status}: {body[:200]!r}")
            bodies[index] = body

    cpu_before = None if server_pid is None else process_cpu_s(server_pid)
    faults_before = None if server_pid is None else minor_faults(server_pid)
    started = time.perf_counter()
    await asyncio.gather(*(work(connection) for connection in connections))
    seconds = time.perf_counter() - started
    cpu_after = None if server_pid is None else process_cpu_s(server_pid)
    faults_after = None if server_pid is None else minor_faults(server_pid)
    cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    faults = None if faults_before is None or faults_after is None else faults_after - faults_before
    return Phase(name, seconds, latencies, bodies, cpu, faults)


async def tile_urls(
    base: str, headers: dict[str, str], image_id: int, tiles: list[tuple[int, int, int]]
) -> list[str]:
    """As a viewer does: the image's descriptor first, whose tile_url carries the signed grant."""
    async with httpx.AsyncClient(base_url=base, headers=headers) as client:
        response = await client.get(f"/api/v1/images/{image_id}")
        response.raise_for_status()
    template: str = response.json()["tile_url"]
    return [template.format(level=level, col=col, row=row) for level, col, row in tiles]


async def measure(
    port: int, seeded: Seeded, tiles: list[tuple[int, int, int]], args: argparse.Namespace, server_pid: int
) -> list[Phase]:
    """Rounds of cold, warm and static requests, so that the three phases meet the same background load
    (this machine is shared); each phase's figures are over all its rounds."""
    phases = {name: Phase(name, 0.0, [], []) for name in PHASES}
    limits = httpx.Limits(max_connections=args.connections, max_keepalive_connections=args.connections)
    headers = {"Authorization": f"Bearer {seeded.token}"}
    base = f"http://127.0.0.1:{port}"
    urls = await tile_urls(base, headers, seeded.image_id, tiles)
    pool: list[Connection | HttpxConnection] = [
        Connection(port, seeded.token) for _ in range(args.connections)
    ]
    try:
        async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits, headers=headers) as client:
            if args.client == "httpx":
                pool = [HttpxConnection(client) for _ in range(args.connections)]
            # Opened before the first round (untimed), or the first cold round alone pays for them.
            await run_phase(pool, "connect", ["/api/v1/health"] * len(pool))
            size = -(-len(urls) // args.rounds)
            for start in range(0, len(urls), size):
                chunk = urls[start : start + size]
                cold = await run_phase(pool, "cold", chunk, server_pid)
                warm = await run_phase(pool, "warm", chunk, server_pid)
                if warm.bodies != cold.bodies:
                    raise RuntimeError("warm tiles differ from cold tiles")
                statics = [f"/bench/static/{start + offset}" for offset in range(len(chunk))]
                for url, body in zip(statics, cold.bodies, strict=True):
                    (await client.put(url, content=body)).raise_for_status()
                static = await run_phase(pool, "static", statics, server_pid)
                fastapi_statics = [url.replace("/static/", "/fastapi-static/") for url in statics]
                fastapi_static = await run_phase(pool, "fastapi_static", fastapi_statics, server_pid)
                if static.bodies != cold.bodies or fastapi_static.bodies != cold.bodies:
                    raise RuntimeError("static bytes differ from the tiles")
                for phase in (cold, warm, static, fastapi_static):
                    phases[phase.name].add(phase)
    finally:
        for connection in pool:
            connection.close()
    return [phases[name] for name in PHASES]


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiles", type=int, default=1500)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--client", choices=["raw", "httpx"], default="raw", help="raw: bare asyncio streams")
    parser.add_argument(
        "--rounds", type=int, default=10, help="cold, warm, static phases alternate in rounds"
    )
    parser.add_argument("--side", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args)
        return
    with tempfile.TemporaryDirectory(prefix="concord-tiles-") as folder:
        print(json.dumps(asyncio.run(run(args, Path(folder)))))


async def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    from app.config import Settings
    from app.migrate import upgrade

    slide, sha256, generated_s = phantom_slide(args.side, args.seed)
    url = f"sqlite+aiosqlite:///{folder / 'bench.db'}"
    env = {**os.environ, "CONCORD_DATA_DIR": str(folder / "data"), "CONCORD_DATABASE_URL": url}
    settings = Settings(data_dir=folder / "data", database_url=url)
    await asyncio.to_thread(upgrade, url)
    seeded = await seed(settings, slide, sha256)
    tiles = pick_tiles(seeded.levels, args.tiles, args.seed)
    port = free_port()
    server = start_server(port, env, folder / "server.log")
    try:
        await wait_up(f"http://127.0.0.1:{port}", server)
        read_s = read_through(slide)
        cold, warm, static, fastapi_static = await measure(port, seeded, tiles, args, server.pid)
    except BaseException:
        print((folder / "server.log").read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        server.terminate()
        server.wait(timeout=30)
    for phase in (cold, warm, static, fastapi_static):
        print(
            f"{phase.name:>14}: {phase.per_second:7.1f} tiles/s, p50 {percentile(phase.latencies_ms, 0.5):6.1f} ms,"
            f" p99 {phase.p99_ms:6.1f} ms ({len(phase.latencies_ms)} tiles, {phase.seconds:.1f} s,"
            f" server CPU {phase.server_cpu_us} µs/tile)",
            file=sys.stderr,
        )
    return {
        "metric": "tile_requests_per_second",
        "value": round(warm.per_second, 1),
        "unit": "tiles/s",
        "baseline": round(static.per_second, 1),
        "baseline_name": BASELINE_NAME,
        "ratio": round(warm.per_second / static.per_second, 3),
        "ratio_cold": round(cold.per_second / static.per_second, 3),
        "cold_per_second": round(cold.per_second, 1),
        "p99_ms": round(warm.p99_ms, 1),
        "cold_p99_ms": round(cold.p99_ms, 1),
        "static_p99_ms": round(static.p99_ms, 1),
        "p99_over_static": round(max(warm.p99_ms, cold.p99_ms) / static.p99_ms, 2),
        "fastapi_route_baseline": round(fastapi_static.per_second, 1),
        "ratio_vs_fastapi_route": round(warm.per_second / fastapi_static.per_second, 3),
        "ratio_cold_vs_fastapi_route": round(cold.per_second / fastapi_static.per_second, 3),
        "fastapi_route_p99_ms": round(fastapi_static.p99_ms, 1),
        "server_cpu_us": {phase.name: phase.server_cpu_us for phase in (cold, warm, static, fastapi_static)},
        "server_page_faults": {
            phase.name: phase.server_page_faults for phase in (cold, warm, static, fastapi_static)
        },
        "tiles": len(tiles),
        "connections": args.connections,
        "rounds": args.rounds,
        "client": args.client,
        "slide_side": args.side,
        "slide_levels": seeded.levels,
        "slide_generated_s": None if generated_s is None else round(generated_s, 1),
        "slide_read_through_s": round(read_s, 2),
    }


if __name__ == "__main__":
    main()
