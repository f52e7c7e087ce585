"""Simulated experts editing through a real `concord serve` process: clean rate, then a soak with kills.

    .venv/bin/python bench/load.py [--clients 16] [--edits 100] [--soak-clients 50] [--soak-seconds 180]
                                   [--kills 3] [--database-url URL]

Setup: a fresh database (SQLite file in a temporary folder by default; with --database-url, a PostgreSQL
server URL such as postgresql+asyncpg://postgres@127.0.0.1:5432/postgres, on which a new database is
created and dropped at the end), migrated; one study, one classify task, images, an admin and the experts
with unaided assignments and API tokens, through the service layer. Then `concord serve` is started on
127.0.0.1 and every request goes through it.

Clean phase: --clients experts at once, each with its own asyncio client (app/client.py): open a visit,
edit (create, move, relabel, delete; one request per edit, each with its own Idempotency-Key), heartbeat,
mark the image done, next image, finish. `value` = acknowledged edits per second; p50/p99 per edit.
Baseline: the database's own rate for the same rows (an annotation and its event, in one transaction per
edit) from a plain driver loop (sqlite3 with the service's pragmas; asyncpg with the server's settings).

Soak phase: --soak-clients experts for --soak-seconds while the server is SIGKILLed and restarted --kills
times and a worker is SIGKILLed in the middle of a `sleep` job (another worker then finishes it). Then the
database is checked: every edit the client was answered 2xx for is there exactly once (`lost`,
`duplicated`), the job succeeded; `errors_5xx` counts 5xx answers over both phases.

Last line: {"metric": "edits_per_second", "value", "unit", "baseline", "ratio" (value / baseline, higher is
better), "p50_ms", "p99_ms", "lost", "duplicated", "errors_5xx", "client_cpu_share", ...}.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import resource
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import psutil
from PIL import Image as PILImage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.client import Annotation as ClientAnnotation  # noqa: E402
from app.client import ApiError, CallStats, ConcordClient, Edit, RetryPolicy  # noqa: E402

MODE = "unaided"
LABELS = ("neutrophil", "eosinophil", "macrophage")
IMAGE_SIZE = 512
# As the workspace does, an edit is retried until it is answered: a restart under load here took up to 40 s.
PATIENT = RetryPolicy(attempts=1000, deadline_s=300.0)
BASELINE_NAME = "database driver loop: annotation + event per single-row transaction, same durability"

# ---------------------------------------------------------------- database and seed data


@dataclass
class PreparedDatabase:
    url: str
    drop: Callable[[], Awaitable[None]] | None = None


async def prepare_database(server_url: str | None, folder: Path) -> PreparedDatabase:
    """A fresh, migrated database: a SQLite file in `folder`, or a new database on the PostgreSQL server."""
    from app.migrate import upgrade

    if not server_url:
        url = f"sqlite+aiosqlite:///{folder}/concord.db"
        await asyncio.to_thread(upgrade, url)
        return PreparedDatabase(url)
    import asyncpg

    name = f"concord_load_{secrets.token_hex(4)}"
    admin_dsn = _driver_dsn(server_url)
    connection = await asyncpg.connect(admin_dsn)
    await connection.execute(f'CREATE DATABASE "{name}"')
    await connection.close()

    async def drop() -> None:
        admin = await asyncpg.connect(admin_dsn)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()

    url = f"{server_url.rsplit('/', 1)[0]}/{name}"
    await asyncio.to_thread(upgrade, url)
    return PreparedDatabase(url, drop)


def _driver_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


@dataclass(frozen=True)
class Seeded:
    task_id: int
    image_id: int
    label_id: int
    admin_token: str
    tokens: dict[str, str]
    expert_ids: dict[str, int]


def png_bytes(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


async def seed_study(url: str, data_dir: Path, experts: Iterable[str], images: int = 8) -> Seeded:
    """One study, one classify task with `images` images, an admin, and each expert with an unaided assignment."""
    from app.config import Settings
    from app.db import make_engine, make_sessionmaker

    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            return await _seed(session, Settings(data_dir=data_dir, database_url=url), list(experts), images)
    finally:
        await engine.dispose()


async def _seed(session: Any, settings: Any, experts: list[str], images: int) -> Seeded:
    from app.accounts import service as accounts
    from app.accounts.security import make_password_hasher
    from app.images.service import NewImage, add_images
    from app.models import Assignment, TaskKind
    from app.studies import service as studies
    from app.studies.schemas import LabelIn, StudyCreate, TaskCreate

    hasher = make_password_hasher(1, 64)
    await accounts.create_user(session, hasher, "load-admin", "admin", None)
    study = await studies.create_study(session, StudyCreate(name=f"load study {secrets.token_hex(3)}"))
    task_data = TaskCreate(name="load", kind=TaskKind.classify, labels=[LabelIn(name=n) for n in LABELS])
    task, labels = await studies.create_task(session, study, task_data)
    items = [NewImage(name=f"patch{i}.png", stream=io.BytesIO(png_bytes(i))) for i in range(images)]
    rows = await add_images(session, settings, task, items)
    expert_ids = {}
    for name in experts:
        user = await accounts.create_user(session, hasher, name, "expert", None)
        session.add(Assignment(task_id=task.id, expert_id=user.id, mode=MODE))
        expert_ids[name] = user.id
    await session.flush()
    tokens = {name: await accounts.issue_token(session, name) for name in experts}
    admin_token = await accounts.issue_token(session, "load-admin")
    return Seeded(task.id, rows[0].id, labels[0].id, admin_token, tokens, expert_ids)


# ---------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServiceProcess:
    """A `concord serve` or worker process of this checkout, killed and restarted at will.

    `whole_group`: signals go to the process and everything it started (a server with several worker
    processes dies as a machine would); otherwise to the process alone (a worker's job child must notice).
    """

    def __init__(self, command: list[str], data_dir: Path, url: str, log: TextIO, whole_group: bool) -> None:
        self.command = command
        self.env = {**os.environ, "CONCORD_DATA_DIR": str(data_dir), "CONCORD_DATABASE_URL": url}
        self.log = log
        self.whole_group = whole_group
        self.process: subprocess.Popen[bytes] | None = None
        self.cpu_s = 0.0  # CPU seconds of processes that were killed or stopped
        self.kills = 0
        self.restart_s: list[float] = []  # from SIGKILL to answering again

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def cpu_seconds(self) -> float:
        """CPU seconds of this process and its children, those already ended included."""
        if self.process is None or self.process.poll() is not None:
            return self.cpu_s
        try:
            parent = psutil.Process(self.process.pid)
            times = [parent.cpu_times(), *(child.cpu_times() for child in parent.children(recursive=True))]
        except psutil.NoSuchProcess:
            return self.cpu_s
        return self.cpu_s + float(sum(t.user + t.system for t in times))

    def kill(self) -> None:
        """SIGKILL: no cleanup, no flush, as a power cut or the OOM killer would."""
        self._end(signal.SIGKILL)
        self.kills += 1

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def _end(self, signum: int) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.cpu_s = self.cpu_seconds()
        if self.whole_group:
            os.killpg(self.process.pid, signum)
        else:
            self.process.send_signal(signum)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def server_process(port: int, data_dir: Path, url: str, log: TextIO, workers: int = 1) -> ServiceProcess:
    command = [sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    if workers > 1:
        command += ["--workers", str(workers)]
    return ServiceProcess(command, data_dir, url, log, whole_group=True)


def default_server_workers(url: str) -> int:
    """As deployed: one process on SQLite (one writer at a time), one per core on PostgreSQL."""
    return 1 if url.startswith("sqlite") else os.cpu_count() or 1


def worker_process(data_dir: Path, url: str, log: TextIO) -> ServiceProcess:
    command = [sys.executable, "-m", "worker", "--lease-seconds", "2", "--poll-interval", "0.2"]
    return ServiceProcess(command, data_dir, url, log, whole_group=False)


async def wait_healthy(base_url: str, server: ServiceProcess, timeout_s: float = 90.0) -> None:
    probe = ConcordClient(base_url, "none")
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert server.process is not None and server.process.poll() is None, "the server exited"
            if await probe.health():
                return
            await asyncio.sleep(0.1)
    finally:
        await probe.aclose()
    raise TimeoutError(f"the server did not answer within {timeout_s} s")


async def restart(server: ServiceProcess, base_url: str) -> None:
    started = time.perf_counter()
    server.kill()
    server.start()
    await wait_healthy(base_url, server)
    server.restart_s.append(time.perf_counter() - started)


# ---------------------------------------------------------------- simulated experts


@dataclass(frozen=True)
class AckedEdit:
    """An edit the client was answered 2xx for: it must be in the database exactly once."""

    expert: str
    key: str
    kind: str
    annotation_id: int


@dataclass
class ExpertRun:
    acked: list[AckedEdit] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)
    refused: Counter[str] = field(default_factory=Counter)  # edits answered 4xx or given up, by status
    stats: CallStats = field(default_factory=CallStats)


@dataclass(frozen=True)
class ExpertPlan:
    max_edits: int
    seconds: float
    edits_per_visit: int = 10
    heartbeat_every: int = 5
    finish: bool = True


class SimulatedExpert:
    """Edits images of its assignment one after the other, as the workspace does: one request per edit."""

    def __init__(self, name: str, client: ConcordClient, plan: ExpertPlan, seed: int) -> None:
        self.name = name
        self.client = client
        self.plan = plan
        self.random = random.Random(seed)
        self.run_record = ExpertRun(stats=client.stats)
        self.objects: dict[int, ClientAnnotation] = {}
        self.last_edited = 0

    async def run(self) -> ExpertRun:
        deadline = time.monotonic() + self.plan.seconds
        assignment = next(a for a in await self.client.assignments() if a.mode == MODE)
        images = await self.client.images(assignment.task_id)
        labels = await self.client.labels(assignment.task_id)
        done = 0
        while done < self.plan.max_edits and time.monotonic() < deadline:
            image = images[self.random.randrange(len(images))]
            budget = min(self.plan.edits_per_visit, self.plan.max_edits - done)
            done += await self._visit(image.id, image.width, labels, budget, deadline)
        if self.plan.finish:
            await self.client.finish(assignment.id)
        return self.run_record

    async def _visit(self, image_id: int, size: int, labels: list[str], budget: int, deadline: float) -> int:
        self.objects = {a.id: a for a in await self.client.open_image(image_id, MODE)}
        visit = await self.client.open_visit(image_id, MODE)
        edits = 0
        while edits < budget and time.monotonic() < deadline:
            await self._edit(image_id, size, labels)
            edits += 1
            if edits % self.plan.heartbeat_every == 0:
                await self._tolerated("heartbeat", self.client.heartbeat(visit))
        await self._tolerated("close", self.client.close_visit(visit))
        await self._tolerated("done", self.client.mark_done(image_id, MODE))
        return edits

    async def _tolerated(self, what: str, call: Awaitable[None]) -> None:
        """A refused visit or progress call is counted, not fatal: the edits are what is checked."""
        try:
            await call
        except ApiError as error:
            self.run_record.refused[f"{what} {error.status or 'gave up'}"] += 1

    async def _edit(self, image_id: int, size: int, labels: list[str]) -> None:
        kind = self._next_kind()
        try:
            edit = await self._send(kind, image_id, size, labels)
        except ApiError as error:
            self.run_record.refused[f"{kind} {error.status or 'gave up'}"] += 1
            self.objects = {a.id: a for a in await self.client.annotations(image_id, MODE)}
            return
        self.objects[edit.annotation.id] = edit.annotation
        self.last_edited = edit.annotation.id
        if edit.annotation.deleted:
            del self.objects[edit.annotation.id]
        self.run_record.acked.append(AckedEdit(self.name, edit.key, kind, edit.annotation.id))
        self.run_record.latencies_s.append(edit.seconds)

    def _next_kind(self) -> str:
        roll = self.random.random()
        if not self.objects or roll < 0.5:
            return "create"
        if roll < 0.75:
            return "move"
        return "relabel" if roll < 0.9 else "delete"

    async def _send(self, kind: str, image_id: int, size: int, labels: list[str]) -> Edit:
        if kind == "create":
            return await self.client.create(image_id, MODE, self._box(size), self.random.choice(labels))
        target = self._target()
        if kind == "move":
            return await self.client.update(target, box=self._box(size))
        if kind == "relabel":
            label = self.random.choice([name for name in labels if name != target.label])
            return await self.client.update(target, label=label)
        return await self.client.delete(target)

    def _target(self) -> ClientAnnotation:
        """Half the time the object edited last (an expert adjusts the box just drawn), else any."""
        if self.last_edited in self.objects and self.random.random() < 0.5:
            return self.objects[self.last_edited]
        return self.objects[self.random.choice(list(self.objects))]

    def _box(self, size: int) -> tuple[float, float, float, float]:
        side = self.random.randint(20, 60)
        x1, y1 = self.random.randint(4, size - side - 4), self.random.randint(4, size - side - 4)
        return (float(x1), float(y1), float(x1 + side), float(y1 + side))


class Crew:
    """Simulated experts working at once, each with its own client and connection pool."""

    def __init__(self, base_url: str, tokens: dict[str, str], plan: ExpertPlan, seed: int = 0) -> None:
        self.plan = plan
        self.experts = [
            SimulatedExpert(
                name,
                ConcordClient(base_url, token, retry=PATIENT, timeout_s=30.0),
                plan,
                seed * 100_003 + index,
            )
            for index, (name, token) in enumerate(tokens.items())
        ]
        self.started = time.monotonic()

    def progress(self) -> float:
        """The fraction of the plan done: of its edits or of its time, whichever is further."""
        acked = sum(len(expert.run_record.acked) for expert in self.experts)
        edits = acked / (self.plan.max_edits * len(self.experts))
        return max(edits, (time.monotonic() - self.started) / self.plan.seconds)

    async def run(self) -> list[ExpertRun]:
        self.started = time.monotonic()
        try:
            return list(await asyncio.gather(*(expert.run() for expert in self.experts)))
        finally:
            await asyncio.gather(*(expert.client.aclose() for expert in self.experts))


# ---------------------------------------------------------------- faults


@dataclass
class JobOutcome:
    job_id: int
    status: str
    attempts: int
    killed_worker_while: str  # the job's status and progress when its worker was killed


async def kill_worker_mid_job(
    admin: ConcordClient, url: str, worker: ServiceProcess, seconds: float
) -> JobOutcome:
    """Queue a `sleep` job, SIGKILL its worker once the job has reported progress, start another worker.

    The job is watched in the database, not through the API, so that server kills do not hide its state.
    """
    steps = max(10, int(seconds * 5))
    job_id = int((await admin.submit_job("sleep", {"seconds": seconds, "steps": steps}))["id"])
    state = await _wait_job(url, job_id, lambda job: job.status != "queued" and job.progress > 0, 120.0)
    worker.kill()
    worker.start()
    return JobOutcome(job_id, "", 0, f"{state.status} at {state.progress:.0%}")


async def finish_job(url: str, outcome: JobOutcome, timeout_s: float) -> JobOutcome:
    finished = ("succeeded", "failed", "cancelled")
    state = await _wait_job(url, outcome.job_id, lambda job: job.status in finished, timeout_s)
    return JobOutcome(outcome.job_id, state.status, state.attempts, outcome.killed_worker_while)


async def _wait_job(url: str, job_id: int, done: Callable[[Any], bool], timeout_s: float) -> Any:
    from sqlalchemy import select

    from app.db import make_engine
    from app.models import Job

    query = select(Job.status, Job.progress, Job.attempts).where(Job.id == job_id)
    engine = make_engine(url)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            async with engine.connect() as connection:
                state = (await connection.execute(query)).one_or_none()
            # None: the request that queued it may not have committed yet
            if (state is not None and done(state)) or time.monotonic() > deadline:
                if state is None:
                    raise TimeoutError(f"job {job_id} is not in the database")
                return state
            await asyncio.sleep(0.1)
    finally:
        await engine.dispose()


async def kill_server_repeatedly(
    server: ServiceProcess, base_url: str, crew: Crew, kills: int, editing: asyncio.Future[Any]
) -> None:
    """SIGKILL and restart the server `kills` times, evenly spread over the crew's progress."""
    for kill in range(1, kills + 1):
        while crew.progress() < kill / (kills + 1) and not editing.done():
            await asyncio.sleep(0.05)
        if editing.done():
            return
        await restart(server, base_url)


# ---------------------------------------------------------------- verification


@dataclass(frozen=True)
class Verdict:
    acked: int
    lost: int
    duplicated: int
    examples: list[str]


async def verify(url: str, runs: Iterable[ExpertRun], expert_ids: dict[str, int]) -> Verdict:
    """Every acknowledged edit's event (same key, object and kind) exactly once; no object without its create."""
    from sqlalchemy import select

    from app.db import make_engine
    from app.models import Annotation, AnnotationEvent

    ids = list(expert_ids.values())
    engine = make_engine(url)
    try:
        async with engine.connect() as connection:
            events = (
                await connection.execute(
                    select(
                        AnnotationEvent.expert_id,
                        AnnotationEvent.idempotency_key,
                        AnnotationEvent.annotation_id,
                        AnnotationEvent.kind,
                    ).where(AnnotationEvent.expert_id.in_(ids))
                )
            ).all()
            objects = (
                await connection.execute(select(Annotation.id).where(Annotation.expert_id.in_(ids)))
            ).all()
    finally:
        await engine.dispose()
    by_key: dict[tuple[int, str | None], list[tuple[int, str]]] = defaultdict(list)
    for expert_id, key, annotation_id, kind in events:
        by_key[(expert_id, key)].append((annotation_id, kind))
    created = {annotation_id for _, _, annotation_id, kind in events if kind == "create"}
    return _count(runs, expert_ids, by_key, {row[0] for row in objects} - created)


def _count(
    runs: Iterable[ExpertRun],
    expert_ids: dict[str, int],
    by_key: dict[tuple[int, str | None], list[tuple[int, str]]],
    orphans: set[int],
) -> Verdict:
    acked, lost, duplicated, examples = (
        0,
        0,
        len(orphans),
        [f"object {i} has no create event" for i in orphans],
    )
    for run in runs:
        for edit in run.acked:
            acked += 1
            found = by_key.get((expert_ids[edit.expert], edit.key), [])
            if (edit.annotation_id, edit.kind) not in found:
                lost += 1
                examples.append(f"lost: {edit} (database: {found})")
            duplicated += max(len(found) - 1, 0)
    return Verdict(acked, lost, duplicated, examples[:10])


# ---------------------------------------------------------------- baseline: the database's own rate


def baseline_sqlite(url: str, seeded: Seeded, expert_id: int, edits: int) -> float:
    """Edits per second of a sqlite3 loop writing an annotation and its event per transaction."""
    from app.db import enable_sqlite_pragmas  # the service's own pragmas: same journal, same durability

    connection = sqlite3.connect(url.split("///", 1)[1], isolation_level=None)
    enable_sqlite_pragmas(connection, None)
    started = time.perf_counter()
    for position in range(edits):
        now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        connection.execute("BEGIN")
        cursor = connection.execute(
            "INSERT INTO annotation (image_id, expert_id, mode, label_id, x1, y1, x2, y2, origin, deleted,"
            " version, position, created_at, updated_at) VALUES (?, ?, ?, ?, 10, 10, 50, 50, 'expert', 0, 1, ?, ?, ?)",
            (seeded.image_id, expert_id, MODE, seeded.label_id, position, now, now),
        )
        connection.execute(
            "INSERT INTO annotation_event (annotation_id, image_id, expert_id, mode, kind, after, server_ts,"
            " idempotency_key) VALUES (?, ?, ?, ?, 'create', ?, ?, ?)",
            (cursor.lastrowid, seeded.image_id, expert_id, MODE, _after_json(), now, secrets.token_hex(16)),
        )
        connection.execute("COMMIT")
    elapsed = time.perf_counter() - started
    connection.close()
    return edits / elapsed


async def baseline_postgres(url: str, seeded: Seeded, expert_id: int, edits: int) -> tuple[float, str]:
    """Edits per second of an asyncpg loop, and the server's synchronous_commit (the durability setting)."""
    import asyncpg

    connection = await asyncpg.connect(_driver_dsn(url))
    durability = str(await connection.fetchval("SHOW synchronous_commit"))
    started = time.perf_counter()
    for position in range(edits):
        now = datetime.now(UTC)
        async with connection.transaction():
            annotation_id = await connection.fetchval(
                "INSERT INTO annotation (image_id, expert_id, mode, label_id, x1, y1, x2, y2, origin, deleted,"
                " version, position, created_at, updated_at) VALUES ($1, $2, $3, $4, 10, 10, 50, 50, 'expert',"
                " false, 1, $5, $6, $6) RETURNING id",
                seeded.image_id,
                expert_id,
                MODE,
                seeded.label_id,
                position,
                now,
            )
            await connection.execute(
                "INSERT INTO annotation_event (annotation_id, image_id, expert_id, mode, kind, after, server_ts,"
                " idempotency_key) VALUES ($1, $2, $3, $4, 'create', $5::json, $6, $7)",
                annotation_id,
                seeded.image_id,
                expert_id,
                MODE,
                _after_json(),
                now,
                secrets.token_hex(16),
            )
    elapsed = time.perf_counter() - started
    await connection.close()
    return edits / elapsed, durability


def _sqlite_durability(url: str) -> str:
    """The journal mode and synchronous level a connection of the service gets (2 = FULL, 1 = NORMAL)."""
    from app.db import enable_sqlite_pragmas

    connection = sqlite3.connect(url.split("///", 1)[1])
    enable_sqlite_pragmas(connection, None)
    journal = connection.execute("PRAGMA journal_mode").fetchone()[0]
    synchronous = connection.execute("PRAGMA synchronous").fetchone()[0]
    connection.close()
    return f"journal_mode={journal}, synchronous={synchronous}"


def _after_json() -> str:
    state = {"x1": 10.0, "y1": 10.0, "x2": 50.0, "y2": 50.0, "label": LABELS[0], "deleted": False}
    return json.dumps({**state, "origin": "expert"})


async def measure_baseline(url: str, seeded: Seeded, edits: int) -> tuple[float, str]:
    expert_id = seeded.expert_ids["baseline"]
    if url.startswith("sqlite"):
        rate = await asyncio.to_thread(baseline_sqlite, url, seeded, expert_id, edits)
        return rate, _sqlite_durability(url)
    rate, durability = await baseline_postgres(url, seeded, expert_id, edits)
    return rate, f"synchronous_commit={durability}"


# ---------------------------------------------------------------- phases


@dataclass
class Phase:
    runs: list[ExpertRun]
    seconds: float
    client_cpu_s: float
    server_cpu_s: float

    @property
    def acked(self) -> int:
        return sum(len(run.acked) for run in self.runs)

    @property
    def latencies_ms(self) -> list[float]:
        return sorted(1000 * s for run in self.runs for s in run.latencies_s)

    def count(self, attribute: str) -> int:
        return sum(int(getattr(run.stats, attribute)) for run in self.runs)

    def refused(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for run in self.runs:
            total.update(run.refused)
        return dict(total)


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def timed_phase(server: ServiceProcess, work: Awaitable[list[ExpertRun]]) -> Phase:
    cpu, server_cpu, started = own_cpu_seconds(), server.cpu_seconds(), time.perf_counter()
    runs = await work
    seconds = time.perf_counter() - started
    return Phase(runs, seconds, own_cpu_seconds() - cpu, server.cpu_seconds() - server_cpu)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(q * len(values)))]


@dataclass
class Soak:
    phase: Phase
    verdict: Verdict
    job: JobOutcome
    server_kills: int
    restart_s: list[float]


async def soak(
    base_url: str,
    server: ServiceProcess,
    worker: ServiceProcess,
    seeded: Seeded,
    url: str,
    experts: list[str],
    plan: ExpertPlan,
    kills: int,
    job_seconds: float,
) -> Soak:
    """Experts working through `plan` while the server is killed `kills` times and a worker mid job."""
    crew = Crew(base_url, {name: seeded.tokens[name] for name in experts}, plan, seed=1)
    kills_before = server.kills
    async with ConcordClient(base_url, seeded.admin_token) as admin:
        worker.start()
        editing = asyncio.ensure_future(timed_phase(server, crew.run()))
        job, _ = await asyncio.gather(
            kill_worker_mid_job(admin, url, worker, job_seconds),
            kill_server_repeatedly(server, base_url, crew, kills, editing),
        )
        phase = await editing
    job = await finish_job(url, job, timeout_s=120.0)
    verdict = await verify(url, phase.runs, {name: seeded.expert_ids[name] for name in experts})
    return Soak(phase, verdict, job, server.kills - kills_before, server.restart_s[-kills:] if kills else [])


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=16, help="experts at once in the clean phase")
    parser.add_argument("--edits", type=int, default=100, help="edits per expert in the clean phase")
    parser.add_argument("--clean-seconds", type=float, default=120.0, help="upper bound of the clean phase")
    parser.add_argument("--baseline-edits", type=int, default=2000)
    parser.add_argument("--soak-clients", type=int, default=50)
    parser.add_argument("--soak-seconds", type=float, default=180.0)
    parser.add_argument("--kills", type=int, default=3, help="server SIGKILLs during the soak")
    parser.add_argument(
        "--job-seconds", type=float, default=20.0, help="length of the job whose worker is killed"
    )
    parser.add_argument(
        "--database-url", help="PostgreSQL server URL (a fresh database is made on it); default: SQLite"
    )
    parser.add_argument(
        "--server-workers",
        type=int,
        help="server processes (`concord serve --workers`); default 1 on SQLite, one per core on PostgreSQL",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="concord-load-") as folder:
        result = asyncio.run(run(args, Path(folder)))
    print(json.dumps(result))


async def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    database = await prepare_database(args.database_url, folder)
    try:
        return await _run_on(args, folder, database.url)
    finally:
        if database.drop is not None:
            await database.drop()


async def _run_on(args: argparse.Namespace, folder: Path, url: str) -> dict[str, Any]:
    clean_experts = [f"clean{i:02d}" for i in range(args.clients)]
    soak_experts = [f"soak{i:02d}" for i in range(args.soak_clients)]
    data_dir = folder / "data"
    seeded = await seed_study(url, data_dir, [*clean_experts, *soak_experts, "baseline"])
    baseline, durability = await measure_baseline(url, seeded, args.baseline_edits)
    print(f"baseline: {baseline:.1f} edits/s ({durability})", flush=True)
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with open(folder / "server.log", "w") as server_log, open(folder / "worker.log", "w") as worker_log:
        workers = args.server_workers or default_server_workers(url)
        server = server_process(port, data_dir, url, server_log, workers)
        worker = worker_process(data_dir, url, worker_log)
        server.start()
        try:
            await wait_healthy(base_url, server)
            clean_plan = ExpertPlan(max_edits=args.edits, seconds=args.clean_seconds)
            tokens = {name: seeded.tokens[name] for name in clean_experts}
            clean = await timed_phase(server, Crew(base_url, tokens, clean_plan).run())
            _report_clean(clean)
            soaked = await soak(
                base_url,
                server,
                worker,
                seeded,
                url,
                soak_experts,
                ExpertPlan(max_edits=10**9, seconds=args.soak_seconds),
                args.kills,
                args.job_seconds,
            )
        finally:
            server.stop()
            worker.stop()
    return _summary(args, url, clean, baseline, durability, soaked)


def _report_clean(clean: Phase) -> None:
    latencies = clean.latencies_ms
    print(
        f"clean: {clean.acked} edits in {clean.seconds:.1f} s = {clean.acked / clean.seconds:.1f}/s,"
        f" p50 {percentile(latencies, 0.5):.0f} ms, p99 {percentile(latencies, 0.99):.0f} ms,"
        f" refused {clean.refused()}",
        flush=True,
    )


def _summary(
    args: argparse.Namespace, url: str, clean: Phase, baseline: float, durability: str, soaked: Soak
) -> dict[str, Any]:
    value = clean.acked / clean.seconds
    latencies = clean.latencies_ms
    soak_phase = soaked.phase
    print(
        f"soak: {soaked.verdict.acked} acknowledged edits in {soak_phase.seconds:.1f} s,"
        f" {soaked.server_kills} server kills, job {soaked.job}; refused {soak_phase.refused()};"
        f" examples {soaked.verdict.examples}",
        flush=True,
    )
    return {
        "metric": "edits_per_second",
        "value": round(value, 1),
        "unit": "edits/s",
        "baseline": round(baseline, 1),
        "ratio": round(value / baseline, 3),
        "baseline_name": BASELINE_NAME,
        "baseline_durability": durability,
        "p50_ms": round(percentile(latencies, 0.5), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
        "lost": soaked.verdict.lost,
        "duplicated": soaked.verdict.duplicated,
        "errors_5xx": clean.count("errors_5xx") + soak_phase.count("errors_5xx"),
        "client_cpu_share": round(clean.client_cpu_s / (clean.client_cpu_s + clean.server_cpu_s), 3),
        "client_cpu_ms_per_edit": round(1000 * clean.client_cpu_s / clean.acked, 2),
        "server_cpu_ms_per_edit": round(1000 * clean.server_cpu_s / clean.acked, 2),
        "clients": args.clients,
        "server_workers": args.server_workers or default_server_workers(url),
        "edits": clean.acked,
        "clean_refused": clean.refused(),
        "soak_clients": args.soak_clients,
        "soak_seconds": round(soak_phase.seconds, 1),
        "soak_acked": soaked.verdict.acked,
        "soak_refused": soak_phase.refused(),
        "soak_retries": soak_phase.count("retries"),
        "soak_network_errors": soak_phase.count("network_errors"),
        "server_kills": soaked.server_kills,
        "server_restart_s": [round(seconds, 1) for seconds in soaked.restart_s],
        "job": {
            "status": soaked.job.status,
            "attempts": soaked.job.attempts,
            "worker_killed": soaked.job.killed_worker_while,
        },
        "database": url.split(":", 1)[0],
        "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


if __name__ == "__main__":
    main()
