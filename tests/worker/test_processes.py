"""Real `python -m worker` processes against the test database (SQLite WAL or PostgreSQL)."""

import asyncio
import os
import signal
import subprocess
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.models import JobStatus
from tests.worker.helpers import (
    enqueue_sleep,
    job_row,
    job_rows,
    process_gone,
    records,
    start_worker,
    wait_for_status,
    wait_until,
    worker_log,
)

# worker processes with engines of their own
pytestmark = pytest.mark.commits

Maker = async_sessionmaker[AsyncSession]
FINISHED = {JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled}


async def _stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    return await asyncio.to_thread(process.wait, 30)


async def test_two_workers_run_fifty_jobs_each_exactly_once(
    sessionmaker: Maker, settings: Settings, tmp_path: Path
) -> None:
    record_dir = tmp_path / "records"
    record_dir.mkdir()
    ids = await enqueue_sleep(sessionmaker, 50, record_dir, seconds=0.02, steps=2)
    workers = {name: start_worker(settings, name, tmp_path) for name in ("w1", "w2")}

    async def all_finished() -> bool:
        return all(job.status in FINISHED for job in await job_rows(sessionmaker))

    try:
        await wait_until(all_finished, "all 50 jobs finished")
    finally:
        exit_codes = {name: await _stop(process) for name, process in workers.items()}
    assert exit_codes == {"w1": 0, "w2": 0}, [worker_log(tmp_path, name) for name in workers]

    jobs = await job_rows(sessionmaker)
    assert [job.id for job in jobs] == ids
    assert {(job.status, job.attempts) for job in jobs} == {(JobStatus.succeeded, 1)}
    done = records(record_dir, "done")
    assert sorted(Counter(record["marker"] for record in done).values()) == [1] * 50
    assert len(records(record_dir, "started")) == 50
    pid_of = {name: process.pid for name, process in workers.items()}
    for job in jobs:
        assert job.result is not None
        assert job.result["worker_pid"] == pid_of[str(job.lease_owner)]
    assert {record["worker_pid"] for record in done} == set(pid_of.values())


async def test_killed_worker_loses_its_job_to_another_worker(
    sessionmaker: Maker, settings: Settings, tmp_path: Path
) -> None:
    record_dir = tmp_path / "records"
    record_dir.mkdir()
    [job_id] = await enqueue_sleep(sessionmaker, 1, record_dir, seconds=1.0, steps=10)
    first = start_worker(settings, "doomed", tmp_path, "--lease-seconds", "2")
    await wait_for_status(sessionmaker, job_id, JobStatus.running)
    await wait_until(_has_records(record_dir, "started", 1), "the first child started")
    second = start_worker(settings, "rescuer", tmp_path, "--lease-seconds", "2")
    try:
        os.killpg(first.pid, signal.SIGKILL)
        await asyncio.to_thread(first.wait, 30)
        job = await wait_for_status(sessionmaker, job_id, *FINISHED)
    finally:
        assert await _stop(second) == 0, worker_log(tmp_path, "rescuer")

    assert (job.status, job.attempts, job.lease_owner) == (JobStatus.succeeded, 2, "rescuer")
    started = {record["worker_pid"]: record["pid"] for record in records(record_dir, "started")}
    assert set(started) == {first.pid, second.pid}
    assert process_gone(started[first.pid])
    assert [record["worker_pid"] for record in records(record_dir, "done")] == [second.pid]


async def test_sigterm_releases_the_running_job_and_stops_its_child(
    sessionmaker: Maker, settings: Settings, tmp_path: Path
) -> None:
    record_dir = tmp_path / "records"
    record_dir.mkdir()
    [job_id] = await enqueue_sleep(sessionmaker, 1, record_dir, seconds=60.0, steps=600)
    worker = start_worker(settings, "leaving", tmp_path, "--lease-seconds", "2")
    await wait_until(_has_records(record_dir, "started", 1), "the child started")
    running = await job_row(sessionmaker, job_id)
    assert (running.status, running.attempts, running.lease_owner) == (JobStatus.running, 1, "leaving")

    assert await _stop(worker) == 0, worker_log(tmp_path, "leaving")

    job = await job_row(sessionmaker, job_id)
    assert (job.status, job.attempts, job.lease_owner, job.lease_expires_at) == (
        JobStatus.queued,
        0,
        None,
        None,
    )
    assert "shut down" in job.message
    [record] = records(record_dir, "started")
    assert process_gone(record["pid"])
    assert records(record_dir, "done") == []


def _has_records(record_dir: Path, stage: str, count: int) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return len(records(record_dir, stage)) >= count

    return check
