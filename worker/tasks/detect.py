"""The `detect` job kind: run a registered detector over every image of a task, store a suggestion set.

Params: task_id (int), detector_id (int), batch_size (int, default 8), name (str, the set's name).
Result: suggestion_set_id, provider, images_per_second, images, detections, model_sha256.
Progress is reported once per image. A detector whose label_map does not fit the task fails the job.
"""

import asyncio
from typing import Any

from app.config import get_settings
from app.db import make_engine, make_sessionmaker
from app.detectors import service
from app.errors import NotFound
from app.images import repository as images_repository
from app.jobs.registry import ProgressReporter
from app.models import Task
from app.suggestions import repository as suggestions_repository


def run(params: dict[str, Any], progress: ProgressReporter) -> dict[str, Any]:
    return asyncio.run(_run(params, progress))


async def _run(params: dict[str, Any], progress: ProgressReporter) -> dict[str, Any]:
    settings = get_settings()
    engine = make_engine(settings.resolved_database_url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            task = await session.get(Task, int(params["task_id"]))
            if task is None:
                raise NotFound(f"no task {params['task_id']}")
            detector = await service.get_detector(session, int(params["detector_id"]))
            progress(0.0, f"running {detector.name} on task {task.name}")
            created = await service.run_detection(
                session,
                settings,
                task,
                detector,
                progress,
                batch_size=int(params.get("batch_size") or service.DEFAULT_BATCH_SIZE),
                name=params.get("name"),
            )
            counts = await suggestions_repository.suggestion_counts(session, [created.id])
            images = len(await images_repository.images_of_task(session, task.id))
        return {
            "suggestion_set_id": created.id,
            "provider": created.provider,
            "images_per_second": created.images_per_second,
            "images": images,
            "detections": counts.get(created.id, 0),
            "detector_id": detector.id,
            "model_sha256": detector.sha256,
        }
    finally:
        await engine.dispose()
