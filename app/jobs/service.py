"""Business rules of the job queue. Services flush, never commit: the caller owns the transaction.

Other domains enqueue work with `enqueue(session, kind, params, created_by)`; the job runs once the
request (or worker step) that enqueued it commits. The worker calls the claim/heartbeat/finish steps,
each in its own short transaction.

Retry rules: a lost lease (the worker died) re-queues the job while attempts < max_attempts, else it
fails with "lease expired after N attempts". A child process that dies without reporting (killed,
out of memory) is treated the same way. A task that raises, a timeout and a cancel are final.
"""

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, Invalid, NotFound
from app.jobs import repository
from app.jobs.registry import InvalidParams, job_kind, job_kinds
from app.jobs.repository import ClaimKey
from app.models import Job, JobStatus, WorkerHeartbeat
from app.models.base import utcnow


async def enqueue(
    session: AsyncSession,
    kind: str,
    params: dict[str, Any],
    created_by: int | None,
    *,
    timeout_s: float | None = None,
    max_attempts: int | None = None,
) -> Job:
    """Queue a job of a registered kind with parameters its model accepts (else 422, nothing queued);
    timeout and attempts default to the kind's."""
    entry = job_kind(kind)
    if entry is None:
        known = ", ".join(item.name for item in job_kinds())
        raise Invalid(f"unknown job kind {kind!r}; known kinds: {known}")
    try:
        checked = entry.checked_params(params)
    except InvalidParams as error:
        raise Invalid(str(error)) from error
    job = Job(
        kind=kind,
        params=checked,
        status=JobStatus.queued,
        progress=0.0,
        message="queued",
        attempts=0,
        max_attempts=max_attempts or entry.default_max_attempts,
        timeout_s=timeout_s or entry.default_timeout_s,
        cancel_requested=False,
        created_by=created_by,
        created_at=utcnow(),
    )
    return await repository.add_job(session, job)


async def get_job(session: AsyncSession, job_id: int) -> Job:
    job = await repository.job_by_id(session, job_id)
    if job is None:
        raise NotFound(f"no job {job_id}")
    return job


async def list_jobs(
    session: AsyncSession,
    status: str | None = None,
    kind: str | None = None,
    limit: int = 100,
    before_id: int | None = None,
) -> Sequence[Job]:
    """Newest first; page with before_id = the smallest id of the previous page."""
    return await repository.list_jobs(session, status, kind, limit, before_id)


async def cancel(session: AsyncSession, job_id: int) -> Job:
    """A queued job is cancelled at once; a running one is asked to stop; a finished one is a conflict."""
    if await repository.cancel_if_queued(session, job_id, utcnow()):
        return await get_job(session, job_id)
    if await repository.request_cancel_if_running(session, job_id):
        return await get_job(session, job_id)
    job = await get_job(session, job_id)
    raise Conflict(f"job {job_id} has already finished ({job.status})")


async def recover_expired_leases(session: AsyncSession, now: datetime | None = None) -> tuple[int, int]:
    """Re-queue (or fail, when out of attempts) running jobs whose worker stopped renewing the lease."""
    now = now or utcnow()
    failed = await repository.fail_exhausted_leases(session, now)
    requeued = await repository.requeue_expired_leases(session, now)
    return requeued, failed


async def claim_next(
    session: AsyncSession,
    owner: str,
    lease_s: float,
    kinds: Sequence[str] | None = None,
) -> Job | None:
    """Claim the oldest queued job (SKIP LOCKED on PostgreSQL, compare-and-set on SQLite)."""
    now = utcnow()
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        return await repository.claim_skip_locked(session, owner, now, lease_s, kinds)
    return await repository.claim_compare_and_set(session, owner, now, lease_s, kinds)


async def heartbeat(
    session: AsyncSession, key: ClaimKey, lease_s: float, progress: tuple[float, str] | None
) -> bool | None:
    """Renew the lease; returns whether cancel was requested, or None when the lease was lost."""
    expires_at = utcnow() + timedelta(seconds=lease_s)
    return await repository.renew_lease(session, key, expires_at, progress)


async def mark_succeeded(session: AsyncSession, key: ClaimKey, result: dict[str, Any]) -> bool:
    values = {"status": JobStatus.succeeded, "result": result, "progress": 1.0, "finished_at": utcnow()}
    return await repository.finish_claim(session, key, {**values, "message": "done"})


async def mark_failed(session: AsyncSession, key: ClaimKey, error: str) -> bool:
    values = {"status": JobStatus.failed, "error": error, "message": "failed", "finished_at": utcnow()}
    return await repository.finish_claim(session, key, values)


async def mark_cancelled(session: AsyncSession, key: ClaimKey) -> bool:
    values = {"status": JobStatus.cancelled, "message": "cancelled while running", "finished_at": utcnow()}
    return await repository.finish_claim(session, key, values)


async def mark_crashed(session: AsyncSession, key: ClaimKey, max_attempts: int, reason: str) -> bool:
    """The child died without reporting: retry like a lost lease while attempts remain."""
    if key.attempts < max_attempts:
        return await repository.finish_claim(session, key, _requeue_values(f"re-queued: {reason}"))
    error = f"{reason} after {key.attempts} attempts"
    return await mark_failed(session, key, error)


async def release(session: AsyncSession, key: ClaimKey, owner: str) -> bool:
    """Give a claimed job back on a clean shutdown; the attempt is not counted (attempts - 1)."""
    values = _requeue_values(f"re-queued: worker {owner} shut down")
    return await repository.finish_claim(session, key, {**values, "attempts": key.attempts - 1})


def _requeue_values(message: str) -> dict[str, Any]:
    return {
        "status": JobStatus.queued,
        "message": message,
        "lease_owner": None,
        "started_at": None,
        "progress": 0.0,
        "cancel_requested": False,
    }


WORKER_ROW_KEPT = timedelta(days=1)


async def worker_alive(session: AsyncSession, name: str, job_id: int | None) -> None:
    """A worker's heartbeat; rows of workers gone without a clean stop for a day are removed."""
    now = utcnow()
    await repository.touch_worker(session, name, now, job_id)
    await repository.forget_workers_seen_before(session, now - WORKER_ROW_KEPT)


async def worker_stopped(session: AsyncSession, name: str) -> None:
    await repository.forget_worker(session, name)


async def queue_counts(session: AsyncSession) -> list[repository.KindCounts]:
    """Queued and running jobs per kind, with the oldest one's creation time (for /metrics)."""
    return await repository.counts_by_kind(session, (JobStatus.queued, JobStatus.running))


async def worker_heartbeats(session: AsyncSession) -> Sequence[WorkerHeartbeat]:
    return await repository.worker_heartbeats(session)
