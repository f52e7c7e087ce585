"""Prometheus metrics: what each server process counts, and what every scrape reads from the database.

Counted in the process: request latency by route template, annotation edits committed, tile cache
lookups. With `concord serve --workers N` (N > 1) every server process writes its counts to files in
PROMETHEUS_MULTIPROC_DIR (set by `concord serve`), and whichever process answers a scrape adds them up.

Read from the database at each scrape (the same for every process and replica): job queue depth and
the age of the oldest queued job per kind, running jobs, and each worker's last heartbeat.
"""

import os
from collections import Counter as Tally
from collections.abc import Iterable, Sequence
from datetime import datetime

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from app.jobs import service as jobs
from app.jobs.registry import job_kinds
from app.jobs.repository import KindCounts
from app.models import AnnotationEvent, JobStatus, WorkerHeartbeat
from app.models.base import utcnow

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
WORKER_ALIVE_S = 60.0  # a worker beats at least every 10 s while polling or running a job

REQUEST_SECONDS = Histogram(
    "concord_http_request_duration_seconds",
    "Time from the request's arrival to the end of its response, by route template",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
EDITS_WRITTEN = Counter(
    "concord_annotation_edits", "Annotation edits committed (one per annotation event), by kind", ["kind"]
)
TILE_CACHE_LOOKUPS = Counter(
    "concord_tile_cache_lookups",
    "Encoded tile, region and thumbnail cache lookups; hit rate = hit / (hit + miss)",
    ["result"],
)

_PENDING_EDITS = "concord_pending_edits"


def _note_flushed_edits(session: Session, _flush_context: object) -> None:
    new_events = [item for item in session.new if isinstance(item, AnnotationEvent)]
    if new_events:
        pending: Tally[str] = session.info.setdefault(_PENDING_EDITS, Tally())
        pending.update(str(getattr(item.kind, "value", item.kind)) for item in new_events)


def note_inserted_edit(session: Session, kind: str) -> None:
    """An event inserted as a plain row (no ORM flush sees it): counted at the commit as a flushed one is."""
    pending: Tally[str] = session.info.setdefault(_PENDING_EDITS, Tally())
    pending[str(getattr(kind, "value", kind))] += 1


def _count_committed_edits(session: Session) -> None:
    for kind, count in session.info.pop(_PENDING_EDITS, Tally()).items():
        EDITS_WRITTEN.labels(kind=kind).inc(count)


def _drop_pending_edits(session: Session, *_args: object) -> None:
    session.info.pop(_PENDING_EDITS, None)


def count_committed_edits() -> None:
    """Count annotation events when their transaction commits (a rolled-back edit is not written)."""
    if not event.contains(Session, "after_commit", _count_committed_edits):
        event.listen(Session, "after_flush", _note_flushed_edits)
        event.listen(Session, "after_commit", _count_committed_edits)
        event.listen(Session, "after_soft_rollback", _drop_pending_edits)


class TileCacheTally:
    """Carries a tile cache's own hit and miss counts into the Prometheus counters, as increments."""

    def __init__(self) -> None:
        self._cache: object = None
        self._seen = (0, 0)
        self._hits = TILE_CACHE_LOOKUPS.labels(result="hit")
        self._misses = TILE_CACHE_LOOKUPS.labels(result="miss")

    def sync(self, cache: object) -> None:
        """Called after every request: most made no lookup, and then nothing is counted."""
        lookups = getattr(cache, "lookups", None)
        if lookups is None:
            return
        if cache is not self._cache:
            self._cache, self._seen = cache, (0, 0)
        hits, misses = lookups
        if (hits, misses) == self._seen:
            return
        seen_hits, seen_misses = self._seen
        if hits != seen_hits:  # a tile's request changes one of them: the other's inc(0), its lock, spared
            self._hits.inc(hits - seen_hits)
        if misses != seen_misses:
            self._misses.inc(misses - seen_misses)
        self._seen = (hits, misses)


def process_exposition() -> bytes:
    """The counts of this server process, or of all of them in multi-process mode."""
    if os.environ.get(MULTIPROCESS_ENV):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)


class _Snapshot(Collector):
    def __init__(self, families: Sequence[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


async def database_exposition(sessionmaker: async_sessionmaker[AsyncSession]) -> bytes:
    """Job queue and worker gauges, read now; `concord_database_up 0` when the database does not answer."""
    up = GaugeMetricFamily("concord_database_up", "Whether the database answered this scrape's queries")
    try:
        async with sessionmaker() as session:
            counts = await jobs.queue_counts(session)
            beats = await jobs.worker_heartbeats(session)
    except Exception:
        up.add_metric([], 0)
        families: list[Metric] = [up]
    else:
        up.add_metric([], 1)
        families = [up, *_queue_families(counts, utcnow()), *_worker_families(beats, utcnow())]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(families))
    return generate_latest(registry)


def _queue_families(counts: Sequence[KindCounts], now: datetime) -> list[Metric]:
    depth = GaugeMetricFamily("concord_job_queue_depth", "Queued jobs, by kind", labels=["kind"])
    age = GaugeMetricFamily(
        "concord_job_queue_oldest_age_seconds",
        "Age of the oldest queued job (0: none queued)",
        labels=["kind"],
    )
    running = GaugeMetricFamily("concord_jobs_running", "Running jobs, by kind", labels=["kind"])
    kinds = sorted({entry.name for entry in job_kinds()} | {item.kind for item in counts})
    by_key = {(item.kind, item.status): item for item in counts}
    for kind in kinds:
        queued = by_key.get((kind, JobStatus.queued))
        oldest = queued.oldest_created_at if queued else None
        depth.add_metric([kind], queued.count if queued else 0)
        age.add_metric([kind], max(0.0, (now - oldest).total_seconds()) if oldest else 0.0)
        active = by_key.get((kind, JobStatus.running))
        running.add_metric([kind], active.count if active else 0)
    return [depth, age, running]


def _worker_families(beats: Sequence[WorkerHeartbeat], now: datetime) -> list[Metric]:
    age = GaugeMetricFamily(
        "concord_worker_heartbeat_age_seconds",
        "Seconds since each worker's last heartbeat",
        labels=["worker"],
    )
    busy = GaugeMetricFamily("concord_worker_busy", "1 while a worker runs a job", labels=["worker"])
    alive = GaugeMetricFamily(
        "concord_workers_alive", f"Workers whose last heartbeat is under {WORKER_ALIVE_S:g} s old"
    )
    ages = [(beat, max(0.0, (now - beat.seen_at).total_seconds())) for beat in beats]
    for beat, seconds in ages:
        age.add_metric([beat.name], seconds)
        busy.add_metric([beat.name], 1 if beat.job_id is not None else 0)
    alive.add_metric([], sum(1 for _, seconds in ages if seconds < WORKER_ALIVE_S))
    return [age, busy, alive]
