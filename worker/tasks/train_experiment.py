"""The `train_experiment` job kind: the paper's training experiment as one `train` job per set × loss × mode × repeat.

Params: `TrainExperimentParams`. The parent queues its children once (their ids are kept in a file keyed by
the params, so a re-queued parent does not queue them again), then works as one more worker for `train`
jobs until all of its children have finished: with one worker the experiment still completes, and other
workers (other GPU machines on the same PostgreSQL) take children in parallel. Progress = fraction of the
children finished. Result: the child job ids and how many succeeded, failed or were cancelled.
"""

import asyncio
import hashlib
import json
from typing import Any

from sqlalchemy import select

from app.config import Settings, get_settings
from app.db import make_engine, make_sessionmaker
from app.jobs import service as jobs
from app.jobs.registry import ProgressReporter
from app.models import Job, JobStatus
from app.storage import store_of
from app.training import repository, service
from app.training.schemas import TrainExperimentParams

FINISHED = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)
POLL_S = 1.0


def run(params: dict[str, Any], progress: ProgressReporter) -> dict[str, Any]:
    return asyncio.run(_run(TrainExperimentParams.model_validate(params), get_settings(), progress))


async def _run(
    params: TrainExperimentParams, settings: Settings, progress: ProgressReporter
) -> dict[str, Any]:
    children = await _queue_children(params, settings)
    progress(0.0, f"queued {len(children)} train jobs")
    while True:
        statuses = await _statuses(settings, children)
        finished = sum(status in FINISHED for status in statuses.values())
        progress(finished / max(len(children), 1), f"{finished} of {len(children)} train jobs finished")
        if finished == len(children):
            break
        if not await _run_one_train_job(settings):
            await asyncio.sleep(POLL_S)
    counts = {status.value: sum(value == status for value in statuses.values()) for status in FINISHED}
    return {"children": children, **counts}


async def _queue_children(params: TrainExperimentParams, settings: Settings) -> list[int]:
    store, marker = store_of(settings), _marker(params)
    if store.exists(marker):  # in the store: a re-queued experiment on another machine finds its children
        children: list[int] = json.loads(store.read_bytes(marker))
        return children
    engine = make_engine(settings.resolved_database_url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            await service.load_task(session, params.study_id, params.task_id)
            experts_by_mode: dict[str, list[str]] = {
                mode: list(await repository.annotating_experts(session, params.task_id, mode))
                for mode in params.modes
            }
            planned = service.experiment_jobs(params, experts_by_mode)
            queued = [await jobs.enqueue(session, "train", child, None) for child in planned]
            await session.flush()
            ids = [job.id for job in queued]
    finally:
        await engine.dispose()
    store.put_bytes(marker, json.dumps(ids).encode())
    return ids


def _marker(params: TrainExperimentParams) -> str:
    key = hashlib.sha256(params.model_dump_json().encode()).hexdigest()[:24]
    return f"training/experiments/{key}.json"


async def _statuses(settings: Settings, ids: list[int]) -> dict[int, str]:
    engine = make_engine(settings.resolved_database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            rows = await session.execute(select(Job.id, Job.status).where(Job.id.in_(ids)))
            return dict(rows.all())
    finally:
        await engine.dispose()


async def _run_one_train_job(settings: Settings) -> bool:
    """Claim and run one queued `train` job under full supervision (lease, timeout, cancel), like a worker."""
    from worker.runner import Worker, WorkerOptions, default_worker_name

    options = WorkerOptions(name=f"{default_worker_name()}:experiment", once=True, kinds=("train",))
    return await Worker(settings, options).run_one_now()
