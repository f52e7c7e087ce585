"""Claims, leases and cancel rules of the job queue, against the real test database."""

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import make_engine, make_sessionmaker
from app.errors import Conflict, Invalid, NotFound
from app.jobs import service
from app.jobs.repository import ClaimKey
from app.models import Job, JobStatus
from app.models.base import utcnow

Maker = async_sessionmaker[AsyncSession]


async def _enqueue(maker: Maker, count: int, kind: str = "sleep") -> list[int]:
    async with maker() as session, session.begin():
        return [
            (await service.enqueue(session, kind, {"steps": index + 1}, None)).id for index in range(count)
        ]


async def _claim(maker: Maker, owner: str, lease_s: float = 30.0) -> Job | None:
    async with maker() as session, session.begin():
        return await service.claim_next(session, owner, lease_s)


async def _add_running(maker: Maker, attempts: int, max_attempts: int, expires_in_s: float) -> int:
    job = Job(
        kind="sleep",
        params={},
        status=JobStatus.running,
        attempts=attempts,
        max_attempts=max_attempts,
        lease_owner="ghost",
        lease_expires_at=utcnow() + timedelta(seconds=expires_in_s),
        started_at=utcnow(),
    )
    async with maker() as session, session.begin():
        session.add(job)
    return job.id


async def _get(maker: Maker, job_id: int) -> Job:
    async with maker() as session:
        return await service.get_job(session, job_id)


async def test_enqueue_takes_the_kinds_defaults_and_rejects_unknown_kinds(sessionmaker: Maker) -> None:
    async with sessionmaker() as session, session.begin():
        job = await service.enqueue(session, "sleep", {"seconds": 1}, None)
        custom = await service.enqueue(session, "sleep", {}, None, timeout_s=5, max_attempts=1)
        with pytest.raises(Invalid, match="unknown job kind 'nope'"):
            await service.enqueue(session, "nope", {}, None)
    assert (job.status, job.attempts, job.max_attempts, job.timeout_s) == (JobStatus.queued, 0, 3, 600.0)
    assert (custom.max_attempts, custom.timeout_s) == (1, 5.0)


async def test_claims_are_fifo_and_mark_the_job_running(sessionmaker: Maker) -> None:
    ids = await _enqueue(sessionmaker, 2)
    first = await _claim(sessionmaker, "w")
    assert first is not None
    assert first.id == ids[0]
    assert (first.status, first.attempts, first.lease_owner) == (JobStatus.running, 1, "w")
    assert first.started_at is not None
    assert first.lease_expires_at is not None
    assert first.lease_expires_at > utcnow() + timedelta(seconds=25)
    second = await _claim(sessionmaker, "w")
    assert second is not None
    assert second.id == ids[1]
    assert await _claim(sessionmaker, "w") is None


@pytest.mark.commits  # claimers on engines of their own
async def test_concurrent_claimers_on_separate_connections_never_share_a_job(
    sessionmaker: Maker, settings: Settings
) -> None:
    ids = await _enqueue(sessionmaker, 40)
    engines = [make_engine(settings.resolved_database_url) for _ in range(4)]

    async def drain(maker: Maker, owner: str) -> list[int]:
        claimed = []
        while (job := await _claim(maker, owner)) is not None:
            claimed.append(job.id)
        return claimed

    try:
        results = await asyncio.gather(
            *(drain(make_sessionmaker(engine), f"c{index}") for index, engine in enumerate(engines))
        )
    finally:
        for engine in engines:
            await engine.dispose()
    claimed = [job_id for result in results for job_id in result]
    assert sorted(claimed) == ids
    assert all(job.attempts == 1 for job in [await _get(sessionmaker, job_id) for job_id in ids])


@pytest.mark.commits  # a row lock only holds off another transaction, not a savepoint of the same one
async def test_skip_locked_passes_over_a_row_another_transaction_holds(
    sessionmaker: Maker, settings: Settings
) -> None:
    if not settings.resolved_database_url.startswith("postgresql"):
        pytest.skip("SQLite has one writer at a time and no row locks; its claim is a compare-and-set UPDATE")
    ids = await _enqueue(sessionmaker, 2)
    async with sessionmaker() as holder, holder.begin():
        held = await service.claim_next(holder, "holder", 30.0)
        other = await asyncio.wait_for(_claim(sessionmaker, "other"), timeout=10)
        assert held is not None
        assert other is not None
        assert (held.id, other.id) == (ids[0], ids[1])


async def test_expired_leases_are_requeued_or_failed_when_out_of_attempts(sessionmaker: Maker) -> None:
    retry = await _add_running(sessionmaker, attempts=1, max_attempts=3, expires_in_s=-1)
    exhausted = await _add_running(sessionmaker, attempts=3, max_attempts=3, expires_in_s=-1)
    alive = await _add_running(sessionmaker, attempts=1, max_attempts=3, expires_in_s=30)
    async with sessionmaker() as session, session.begin():
        assert await service.recover_expired_leases(session) == (1, 1)

    requeued = await _get(sessionmaker, retry)
    assert (requeued.status, requeued.attempts, requeued.lease_owner) == (JobStatus.queued, 1, None)
    failed = await _get(sessionmaker, exhausted)
    assert (failed.status, failed.error) == (JobStatus.failed, "lease expired after 3 attempts")
    assert failed.finished_at is not None
    assert (await _get(sessionmaker, alive)).status == JobStatus.running

    job = await _claim(sessionmaker, "next")
    assert job is not None
    assert (job.id, job.attempts) == (retry, 2)


async def test_a_stale_claim_can_neither_heartbeat_nor_finish(sessionmaker: Maker) -> None:
    [job_id] = await _enqueue(sessionmaker, 1)
    first = await _claim(sessionmaker, "slow", lease_s=0.0)
    assert first is not None
    async with sessionmaker() as session, session.begin():
        await service.recover_expired_leases(session, utcnow() + timedelta(seconds=1))
    second = await _claim(sessionmaker, "fast")
    assert second is not None
    assert second.attempts == 2

    stale = ClaimKey(job_id, "slow", 1)
    async with sessionmaker() as session, session.begin():
        assert await service.heartbeat(session, stale, 30.0, (0.5, "half")) is None
        assert not await service.mark_succeeded(session, stale, {"from": "slow"})
    fresh = ClaimKey(job_id, "fast", 2)
    async with sessionmaker() as session, session.begin():
        assert await service.heartbeat(session, fresh, 30.0, (0.5, "half")) is False
        assert await service.mark_succeeded(session, fresh, {"from": "fast"})
    job = await _get(sessionmaker, job_id)
    assert (job.status, job.result, job.lease_owner) == (JobStatus.succeeded, {"from": "fast"}, "fast")


async def test_release_requeues_without_counting_the_attempt(sessionmaker: Maker) -> None:
    [job_id] = await _enqueue(sessionmaker, 1)
    job = await _claim(sessionmaker, "leaving")
    assert job is not None
    async with sessionmaker() as session, session.begin():
        assert await service.release(session, ClaimKey(job_id, "leaving", 1), "leaving")
    released = await _get(sessionmaker, job_id)
    assert (released.status, released.attempts, released.lease_owner, released.started_at) == (
        JobStatus.queued,
        0,
        None,
        None,
    )


async def test_cancel_rules(sessionmaker: Maker) -> None:
    finished, running, queued = await _enqueue(sessionmaker, 3)
    assert (await _claim(sessionmaker, "w")) is not None
    async with sessionmaker() as session, session.begin():
        assert await service.mark_succeeded(session, ClaimKey(finished, "w", 1), {})
    assert (await _claim(sessionmaker, "w")) is not None

    async with sessionmaker() as session, session.begin():
        cancelled = await service.cancel(session, queued)
        asked = await service.cancel(session, running)
        with pytest.raises(Conflict, match="already finished"):
            await service.cancel(session, finished)
        with pytest.raises(NotFound):
            await service.cancel(session, 999_999)
    assert (cancelled.status, cancelled.finished_at is not None) == (JobStatus.cancelled, True)
    assert (asked.status, asked.cancel_requested) == (JobStatus.running, True)
    async with sessionmaker() as session, session.begin():
        assert await service.heartbeat(session, ClaimKey(running, "w", 1), 30.0, None) is True
    assert await _claim(sessionmaker, "w") is None
