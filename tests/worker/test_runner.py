"""The worker loop in this process (real spawned children): outcomes, progress, cancel, timeout, retries."""

import asyncio
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.models import JobStatus
from tests.conftest import ClientFactory
from tests.factories import make_user
from tests.worker.helpers import enqueue_sleep, job_row, process_gone, records, wait_until
from worker.runner import Worker, WorkerOptions

# the worker, and its job children, open engines of their own
pytestmark = pytest.mark.commits

Maker = async_sessionmaker[AsyncSession]


def _worker(settings: Settings, name: str = "inproc") -> Worker:
    return Worker(settings, WorkerOptions(name=name, lease_s=2.0, poll_interval_s=0.05, once=True))


async def test_job_succeeds_with_result_and_full_progress(
    sessionmaker: Maker, settings: Settings, tmp_path: Path
) -> None:
    [job_id] = await enqueue_sleep(sessionmaker, 1, tmp_path, seconds=0.1, steps=4)
    assert await _worker(settings).run() == 0
    job = await job_row(sessionmaker, job_id)
    assert (job.status, job.attempts, job.progress, job.error) == (JobStatus.succeeded, 1, 1.0, None)
    assert job.result is not None
    assert job.result["counted"] == 4
    assert job.started_at is not None
    assert job.finished_at is not None
    assert job.lease_expires_at is None
    assert job.lease_owner == "inproc"


async def test_once_with_an_empty_queue_returns(sessionmaker: Maker, settings: Settings) -> None:
    assert await _worker(settings).run() == 0


async def test_progress_is_visible_while_running_and_cancel_stops_the_child(
    app: object, sessionmaker: Maker, settings: Settings, client_for: ClientFactory, tmp_path: Path
) -> None:
    await make_user(app, "root", "admin")
    admin = await client_for("root")
    [job_id] = await enqueue_sleep(sessionmaker, 1, tmp_path, seconds=60.0, steps=600)
    worker = asyncio.create_task(_worker(settings).run())

    async def progressing() -> bool:
        job = await job_row(sessionmaker, job_id)
        return job.status == JobStatus.running and job.progress > 0 and job.message.startswith("counted")

    await wait_until(progressing, "progress stored while the job runs")
    response = await admin.post(f"/api/v1/jobs/{job_id}/cancel")
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["cancel_requested"]) == ("running", True)
    await worker

    job = await job_row(sessionmaker, job_id)
    assert (job.status, job.message) == (JobStatus.cancelled, "cancelled while running")
    assert job.finished_at is not None
    assert job.result is None
    [started] = records(tmp_path, "started")
    assert process_gone(started["pid"])
    assert records(tmp_path, "done") == []


async def test_timeout_fails_the_job_and_stops_the_child(
    sessionmaker: Maker, settings: Settings, tmp_path: Path
) -> None:
    [job_id] = await enqueue_sleep(sessionmaker, 1, tmp_path, seconds=60.0, steps=600, timeout_s=1.0)
    await _worker(settings).run()
    job = await job_row(sessionmaker, job_id)
    assert (job.status, job.attempts) == (JobStatus.failed, 1)
    assert job.error == "timed out after 1 s (attempt 1)"
    assert all(process_gone(record["pid"]) for record in records(tmp_path, "started"))
    assert records(tmp_path, "done") == []


async def test_a_raising_job_fails_with_the_error_text(
    sessionmaker: Maker, settings: Settings, tmp_path: Path
) -> None:
    [job_id] = await enqueue_sleep(sessionmaker, 1, tmp_path, seconds=0.1, steps=4, fail="bad params")
    await _worker(settings).run()
    job = await job_row(sessionmaker, job_id)
    assert (job.status, job.attempts, job.result) == (JobStatus.failed, 1, None)
    assert job.error is not None
    assert job.error.startswith("RuntimeError: bad params")
    assert "Traceback" in job.error


async def test_a_crashing_child_is_retried_until_attempts_run_out(
    sessionmaker: Maker, settings: Settings, tmp_path: Path
) -> None:
    [job_id] = await enqueue_sleep(
        sessionmaker, 1, tmp_path, seconds=0.1, steps=2, exit_code=3, max_attempts=2
    )
    await _worker(settings).run()
    job = await job_row(sessionmaker, job_id)
    assert (job.status, job.attempts, job.lease_owner) == (JobStatus.queued, 1, None)
    assert "exited with code 3" in job.message

    await _worker(settings).run()
    job = await job_row(sessionmaker, job_id)
    assert (job.status, job.attempts) == (JobStatus.failed, 2)
    assert job.error == "child process exited with code 3 after 2 attempts"
