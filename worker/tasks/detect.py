"""The `detect` job kind: run a registered detector over every image of a task, store a suggestion set.

Params: task_id (int), detector_id (int), batch_size (int, default 8), name (str, the set's name).
Result: suggestion_set_id, provider, images_per_second, images, detections, model_sha256.
Progress is reported once per image. A detector whose label_map does not fit the task fails the job.

Three steps: read the inputs in one transaction, infer with none open (a run may take hours), write the
suggestion set in a second transaction; a failure while inferring writes nothing.
"""

import asyncio
from typing import Any

from anyio import to_thread
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings, get_settings
from app.db import make_engine, make_sessionmaker
from app.detectors import service
from app.detectors.service import DetectionInputs, DetectionRun
from app.errors import NotFound
from app.jobs.registry import ProgressReporter
from app.studies import repository as studies_repository
from app.suggestions import repository as suggestions_repository


def run(params: dict[str, Any], progress: ProgressReporter) -> dict[str, Any]:
    return asyncio.run(_run(params, progress))


async def _run(params: dict[str, Any], progress: ProgressReporter) -> dict[str, Any]:
    settings = get_settings()
    batch_size = int(params.get("batch_size") or service.DEFAULT_BATCH_SIZE)
    engine = make_engine(settings.resolved_database_url)
    try:
        maker = make_sessionmaker(engine)
        inputs = await _read_inputs(maker, settings, params)
        progress(0.0, f"running {inputs.detector.name} on task {inputs.task_name}")
        detection = await to_thread.run_sync(lambda: service.infer(settings, inputs, batch_size, progress))
        return await _store(maker, inputs, detection, batch_size, params.get("name"))
    finally:
        await engine.dispose()


async def _read_inputs(
    maker: async_sessionmaker[AsyncSession], settings: Settings, params: dict[str, Any]
) -> DetectionInputs:
    async with maker() as session, session.begin():
        task = await studies_repository.task_by_id(session, int(params["task_id"]))
        if task is None:
            raise NotFound(f"no task {params['task_id']}")
        detector = await service.get_detector(session, int(params["detector_id"]))
        return await service.read_detection_inputs(session, settings, task, detector)


async def _store(
    maker: async_sessionmaker[AsyncSession],
    inputs: DetectionInputs,
    detection: DetectionRun,
    batch_size: int,
    name: str | None,
) -> dict[str, Any]:
    async with maker() as session, session.begin():
        created = await service.store_detection(session, inputs, detection, batch_size=batch_size, name=name)
        counts = await suggestions_repository.suggestion_counts(session, [created.id])
    return {
        "suggestion_set_id": created.id,
        "provider": created.provider,
        "images_per_second": created.images_per_second,
        "images": len(inputs.images),
        "detections": counts.get(created.id, 0),
        "detector_id": inputs.detector.id,
        "model_sha256": inputs.detector.sha256,
    }
