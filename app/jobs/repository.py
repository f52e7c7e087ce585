"""Every query of the job queue: enqueue, list, cancel, and the worker's claim, heartbeat and finish.

A claim is identified by (job id, lease owner, attempts): every claim increments `attempts`, so a
worker whose lease was taken over can never overwrite the newer claim's row.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, String, and_, cast, delete, func, literal, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Job, JobStatus, WorkerHeartbeat

FINISHED = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


@dataclass(frozen=True)
class ClaimKey:
    job_id: int
    owner: str
    attempts: int


def _owned(key: ClaimKey) -> ColumnElement[bool]:
    return and_(
        Job.id == key.job_id,
        Job.status == JobStatus.running,
        Job.lease_owner == key.owner,
        Job.attempts == key.attempts,
    )


async def add_job(session: AsyncSession, job: Job) -> Job:
    session.add(job)
    await session.flush()
    return job


async def job_by_id(session: AsyncSession, job_id: int) -> Job | None:
    return await session.get(Job, job_id, populate_existing=True)


async def list_jobs(
    session: AsyncSession, status: str | None, kind: str | None, limit: int, before_id: int | None
) -> Sequence[Job]:
    query = select(Job).order_by(Job.id.desc()).limit(limit)
    if status is not None:
        query = query.where(Job.status == status)
    if kind is not None:
        query = query.where(Job.kind == kind)
    if before_id is not None:
        query = query.where(Job.id < before_id)
    return (await session.scalars(query)).all()


async def cancel_if_queued(session: AsyncSession, job_id: int, now: datetime) -> bool:
    statement = (
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.queued)
        .values(status=JobStatus.cancelled, message="cancelled before it started", finished_at=now)
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    )
    return (await session.scalar(statement)) is not None


async def request_cancel_if_running(session: AsyncSession, job_id: int) -> bool:
    statement = (
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.running)
        .values(cancel_requested=True)
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    )
    return (await session.scalar(statement)) is not None


async def fail_exhausted_leases(session: AsyncSession, now: datetime) -> int:
    """Running jobs whose lease expired and that have no attempts left become failed."""
    reason = literal("lease expired after ", String) + cast(Job.attempts, String) + literal(" attempts")
    statement = (
        update(Job)
        .where(Job.status == JobStatus.running, Job.lease_expires_at < now, Job.attempts >= Job.max_attempts)
        .values(status=JobStatus.failed, error=reason, lease_expires_at=None, finished_at=now)
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    )
    return len((await session.scalars(statement)).all())


async def requeue_expired_leases(session: AsyncSession, now: datetime) -> int:
    """Running jobs whose lease expired and that have attempts left go back to the queue."""
    statement = (
        update(Job)
        .where(Job.status == JobStatus.running, Job.lease_expires_at < now, Job.attempts < Job.max_attempts)
        .values(
            status=JobStatus.queued,
            message="re-queued: the previous worker's lease expired",
            lease_owner=None,
            lease_expires_at=None,
            cancel_requested=False,
        )
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    )
    return len((await session.scalars(statement)).all())


def _next_queued(kinds: Sequence[str] | None) -> Select[int]:
    query = select(Job.id).where(Job.status == JobStatus.queued).order_by(Job.id).limit(1)
    if kinds:
        query = query.where(Job.kind.in_(kinds))
    return query


def _claim_values(owner: str, now: datetime, lease_s: float) -> dict[str, Any]:
    return {
        "status": JobStatus.running,
        "lease_owner": owner,
        "lease_expires_at": now + timedelta(seconds=lease_s),
        "attempts": Job.attempts + 1,
        "started_at": now,
        "cancel_requested": False,
    }


async def claim_skip_locked(
    session: AsyncSession, owner: str, now: datetime, lease_s: float, kinds: Sequence[str] | None
) -> Job | None:
    """PostgreSQL: lock the oldest queued row that no other worker holds, then mark it running."""
    job_id = await session.scalar(_next_queued(kinds).with_for_update(skip_locked=True))
    if job_id is None:
        return None
    statement = (
        update(Job)
        .where(Job.id == job_id)
        .values(**_claim_values(owner, now, lease_s))
        .returning(Job)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    return await session.scalar(statement)


async def claim_compare_and_set(
    session: AsyncSession, owner: str, now: datetime, lease_s: float, kinds: Sequence[str] | None
) -> Job | None:
    """SQLite: one atomic UPDATE of the oldest queued row, guarded by status = 'queued'."""
    statement = (
        update(Job)
        .where(Job.id == _next_queued(kinds).scalar_subquery(), Job.status == JobStatus.queued)
        .values(**_claim_values(owner, now, lease_s))
        .returning(Job)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    return await session.scalar(statement)


async def renew_lease(
    session: AsyncSession,
    key: ClaimKey,
    expires_at: datetime,
    progress: tuple[float, str] | None,
) -> bool | None:
    """Extend the lease (and store progress); returns cancel_requested, or None when the lease is lost."""
    values: dict[str, Any] = {"lease_expires_at": expires_at}
    if progress is not None:
        values["progress"], values["message"] = progress
    statement = (
        update(Job)
        .where(_owned(key))
        .values(**values)
        .returning(Job.cancel_requested)
        .execution_options(synchronize_session=False)
    )
    return (await session.execute(statement)).scalar_one_or_none()


async def finish_claim(session: AsyncSession, key: ClaimKey, values: dict[str, Any]) -> bool:
    """Write the outcome of a claim; False when the lease had already been lost."""
    statement = (
        update(Job)
        .where(_owned(key))
        .values(lease_expires_at=None, **values)
        .returning(Job.id)
        .execution_options(synchronize_session=False)
    )
    return (await session.scalar(statement)) is not None


@dataclass(frozen=True)
class KindCounts:
    kind: str
    status: str
    count: int
    oldest_created_at: datetime | None


async def counts_by_kind(session: AsyncSession, statuses: Sequence[str]) -> list[KindCounts]:
    """How many jobs of each kind are in each of `statuses`, with the oldest one's creation time."""
    query = (
        select(Job.kind, Job.status, func.count(), func.min(Job.created_at))
        .where(Job.status.in_(statuses))
        .group_by(Job.kind, Job.status)
    )
    rows = (await session.execute(query)).all()
    return [KindCounts(kind, status, count, oldest) for kind, status, count, oldest in rows]


async def touch_worker(session: AsyncSession, name: str, now: datetime, job_id: int | None) -> None:
    """Renew a worker's heartbeat row, creating it on the first beat (a name belongs to one worker)."""
    statement = (
        update(WorkerHeartbeat)
        .where(WorkerHeartbeat.name == name)
        .values(seen_at=now, job_id=job_id)
        .returning(WorkerHeartbeat.name)
        .execution_options(synchronize_session=False)
    )
    if (await session.scalar(statement)) is None:
        session.add(WorkerHeartbeat(name=name, started_at=now, seen_at=now, job_id=job_id))
        await session.flush()


async def forget_worker(session: AsyncSession, name: str) -> None:
    await session.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.name == name))


async def forget_workers_seen_before(session: AsyncSession, moment: datetime) -> int:
    statement = (
        delete(WorkerHeartbeat).where(WorkerHeartbeat.seen_at < moment).returning(WorkerHeartbeat.name)
    )
    return len((await session.scalars(statement)).all())


async def worker_heartbeats(session: AsyncSession) -> Sequence[WorkerHeartbeat]:
    return (await session.scalars(select(WorkerHeartbeat).order_by(WorkerHeartbeat.name))).all()
