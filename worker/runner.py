"""The worker's parent process: recover stale leases, claim a job, supervise its child, write the outcome.

Each step is one short transaction (one commit). The job itself runs in a child started with the
"spawn" method (never fork: CUDA and threads do not survive a fork). While the child runs, the parent
renews the lease every `heartbeat_s`, stores progress, enforces `timeout_s`, and stops the child when
an admin asks to cancel, when the lease was taken over, or when the worker is asked to stop.

On a clean stop (SIGTERM/SIGINT) the running job is released: status queued, its attempt not counted
(attempts is decremented back), so a deploy never uses up a job's attempts.
"""

import asyncio
import contextlib
import logging
import math
import multiprocessing
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any, Literal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import make_engine, make_sessionmaker
from app.jobs import service
from app.jobs.registry import job_kind
from app.jobs.repository import ClaimKey
from app.models import Job
from app.observability.logs import job_context
from worker.child import child_main

log = logging.getLogger("worker")

TICK_S = 0.05
CHILD_STOP_GRACE_S = 5.0
CHILD_EXIT_WAIT_S = 5.0
RECORD_TRIES = 3

OutcomeKind = Literal["succeeded", "failed", "timed_out", "cancelled", "crashed", "released", "lost"]


def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class WorkerOptions:
    name: str = field(default_factory=default_worker_name)
    lease_s: float = 30.0
    poll_interval_s: float = 1.0
    once: bool = False
    kinds: tuple[str, ...] = ()

    @property
    def heartbeat_s(self) -> float:
        """Renew the lease four times per lease period (at most every 10 s)."""
        return max(0.05, min(self.lease_s / 4, 10.0))

    @property
    def progress_s(self) -> float:
        """Fresh progress is written at least this often while it changes."""
        return min(self.heartbeat_s, 1.0)


@dataclass
class Outcome:
    kind: OutcomeKind
    result: dict[str, Any] | None = None
    error: str = ""


@dataclass
class _Supervision:
    key: ClaimKey
    started: float
    last_touch: float
    progress: tuple[float, str] | None = None
    outcome: Outcome | None = None


class Worker:
    def __init__(self, settings: Settings, options: WorkerOptions, stop: asyncio.Event | None = None) -> None:
        self.settings = settings
        self.options = options
        self.stop = stop or asyncio.Event()
        self._maker: async_sessionmaker[AsyncSession] | None = None
        self._announce = False  # only a polling worker (run) keeps a heartbeat row
        self._last_beat = -math.inf

    async def run(self) -> int:
        """Claim and run jobs until stopped (or after one claim attempt with `once`)."""
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(self.settings.resolved_database_url)
        self._maker = make_sessionmaker(engine)
        self._announce = True
        log.info("worker %s polls for jobs", self.options.name, extra={"worker": self.options.name})
        try:
            while not self.stop.is_set():
                ran = await self._step_or_log()
                if self.options.once:
                    break
                if not ran:
                    await self._sleep(self.options.poll_interval_s)
        finally:
            await self._forget_heartbeat()
            await engine.dispose()
        log.info("worker %s stopped", self.options.name)
        return 0

    async def run_one_now(self) -> bool:
        """One claim-and-run step with its own engine (for a job that works through other jobs)."""
        engine = make_engine(self.settings.resolved_database_url)
        self._maker = make_sessionmaker(engine)
        try:
            return await self.run_one()
        finally:
            self._maker = None
            await engine.dispose()

    async def _step_or_log(self) -> bool:
        try:
            return await self.run_one()
        except Exception:
            log.exception("worker %s: claim step failed; retrying", self.options.name)
            return False

    async def run_one(self) -> bool:
        """Recover expired leases, claim one job and run it; False when the queue had nothing."""
        async with self._session() as session, session.begin():
            requeued, failed = await service.recover_expired_leases(session)
            await self._beat_if_due(session, job_id=None)
        if requeued or failed:
            log.warning("expired leases: %d re-queued, %d failed", requeued, failed)
        async with self._session() as session, session.begin():
            job = await service.claim_next(
                session, self.options.name, self.options.lease_s, self.options.kinds
            )
        if job is None:
            return False
        with job_context(job.id):
            step = {"kind": job.kind, "attempt": job.attempts, "worker": self.options.name}
            log.info(
                "job %d (%s) claimed, attempt %d",
                job.id,
                job.kind,
                job.attempts,
                extra=step | {"step": "claim"},
            )
            started = time.monotonic()
            outcome = await self._run_claimed(job)
            step |= {"outcome": outcome.kind, "duration_s": round(time.monotonic() - started, 3)}
            await self._record(job, outcome, step)
        return True

    async def _beat_if_due(self, session: AsyncSession, job_id: int | None) -> None:
        """Renew this worker's heartbeat row (every `heartbeat_s`), in the caller's transaction."""
        if self._announce and time.monotonic() - self._last_beat >= self.options.heartbeat_s:
            await service.worker_alive(session, self.options.name, job_id)
            self._last_beat = time.monotonic()

    async def _forget_heartbeat(self) -> None:
        try:
            async with self._session() as session, session.begin():
                await service.worker_stopped(session, self.options.name)
        except Exception:
            log.exception("worker %s: removing its heartbeat row failed", self.options.name)

    def _session(self) -> AsyncSession:
        assert self._maker is not None, "Worker.run() builds the session factory"
        return self._maker()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)

    async def _run_claimed(self, job: Job) -> Outcome:
        entry = job_kind(job.kind)
        if entry is None:
            return Outcome("failed", error=f"unknown job kind {job.kind!r} in worker {self.options.name}")
        context = multiprocessing.get_context("spawn")
        receiver, sender = context.Pipe(duplex=False)
        process = context.Process(
            target=child_main,
            args=(entry.function, job.params, sender, os.getpid()),
            name=f"concord-job-{job.id}",
        )
        process.start()
        sender.close()
        try:
            outcome = await self._supervise(job, process, receiver)
        except BaseException:
            await _stop_child(process, wait_s=0.0)
            raise
        finally:
            receiver.close()
        reported = outcome.kind in ("succeeded", "failed")
        await _stop_child(process, wait_s=CHILD_EXIT_WAIT_S if reported else 0.0)
        return outcome

    async def _supervise(self, job: Job, process: BaseProcess, receiver: Connection) -> Outcome:
        now = time.monotonic()
        state = _Supervision(ClaimKey(job.id, self.options.name, job.attempts), now, now)
        while state.outcome is None:
            _drain(receiver, state)
            if state.outcome is None:
                state.outcome = await self._check(job, process, receiver, state)
            if state.outcome is None:
                await self._sleep(TICK_S)
        return state.outcome

    async def _check(
        self, job: Job, process: BaseProcess, receiver: Connection, state: _Supervision
    ) -> Outcome | None:
        if not process.is_alive():
            _drain(receiver, state)
            return state.outcome or Outcome(
                "crashed", error=f"child process exited with code {process.exitcode}"
            )
        elapsed = time.monotonic() - state.started
        if elapsed > job.timeout_s:
            return Outcome("timed_out", error=f"timed out after {job.timeout_s:g} s (attempt {job.attempts})")
        if self.stop.is_set():
            return Outcome("released")
        return await self._touch_if_due(state)

    async def _touch_if_due(self, state: _Supervision) -> Outcome | None:
        since = time.monotonic() - state.last_touch
        due = since >= self.options.heartbeat_s or (
            state.progress is not None and since >= self.options.progress_s
        )
        if not due:
            return None
        try:
            async with self._session() as session, session.begin():
                cancel = await service.heartbeat(session, state.key, self.options.lease_s, state.progress)
                await self._beat_if_due(session, job_id=state.key.job_id)
        except Exception:
            log.exception("job %d: heartbeat failed; will retry", state.key.job_id)
            return None
        state.last_touch, state.progress = time.monotonic(), None
        if cancel is None:
            return Outcome("lost")
        return Outcome("cancelled") if cancel else None

    async def _record(self, job: Job, outcome: Outcome, step: dict[str, Any]) -> None:
        """Write the outcome, retrying a few times: a lost write means the job runs again."""
        key = ClaimKey(job.id, self.options.name, job.attempts)
        for attempt in range(1, RECORD_TRIES + 1):
            try:
                async with self._session() as session, session.begin():
                    written = await _write_outcome(session, key, job, outcome, self.options.name)
                break
            except Exception:
                if attempt == RECORD_TRIES:
                    raise
                log.exception("job %d: writing the outcome failed; retrying", job.id)
                await asyncio.sleep(attempt)
        level = logging.INFO if written else logging.WARNING
        log.log(
            level,
            "job %d: %s%s",
            job.id,
            outcome.kind,
            "" if written else " (lease lost, not recorded)",
            extra=step | {"step": "finish", "recorded": written},
        )


async def _write_outcome(
    session: AsyncSession, key: ClaimKey, job: Job, outcome: Outcome, owner: str
) -> bool:
    match outcome.kind:
        case "succeeded":
            return await service.mark_succeeded(session, key, outcome.result or {})
        case "failed" | "timed_out":
            return await service.mark_failed(session, key, outcome.error)
        case "cancelled":
            return await service.mark_cancelled(session, key)
        case "crashed":
            return await service.mark_crashed(session, key, job.max_attempts, outcome.error)
        case "released":
            return await service.release(session, key, owner)
        case "lost":
            return False


def _drain(receiver: Connection, state: _Supervision) -> None:
    try:
        while state.outcome is None and receiver.poll():
            _take(receiver.recv(), state)
    except (EOFError, OSError):
        return


def _take(message: Sequence[Any], state: _Supervision) -> None:
    match message:
        case ("progress", fraction, text):
            state.progress = (float(fraction), str(text))
        case ("result", result):
            state.outcome = Outcome("succeeded", result=result)
        case ("error", text):
            state.outcome = Outcome("failed", error=str(text))


async def _stop_child(process: BaseProcess, wait_s: float) -> None:
    """Give a child that reported its outcome `wait_s` to exit; terminate (then kill) it otherwise."""
    if wait_s > 0:
        await asyncio.to_thread(process.join, wait_s)
    if process.is_alive():
        process.terminate()
        await asyncio.to_thread(process.join, CHILD_STOP_GRACE_S)
    if process.is_alive():
        process.kill()
        await asyncio.to_thread(process.join)
    process.close()


async def serve(settings: Settings, options: WorkerOptions) -> int:
    """Run a worker until SIGTERM or SIGINT; the running job is released, not lost."""
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    return await Worker(settings, options, stop).run()
