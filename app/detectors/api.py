"""JSON routes of the detector registry and of detection runs (admin only)."""

from typing import Annotated

from fastapi import APIRouter, File, Form, Response, UploadFile

from app.deps import AdminUser, SessionDep, SettingsDep, TaskDep
from app.detectors import service
from app.detectors.schemas import DetectorOut, DetectRequest, DetectStarted
from app.errors import PayloadTooLarge
from app.schemas_common import PathId

router = APIRouter(tags=["detectors"])


async def _read_limited(upload: UploadFile, limit: int, what: str) -> bytes:
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"the {what} is larger than the upload limit of {limit} bytes")
    return data


@router.post("/detectors", status_code=201)
async def upload_detector(
    model: Annotated[UploadFile, File(description="the ONNX model")],
    sidecar: Annotated[UploadFile | str, Form(description="the JSON sidecar, as a file or a form field")],
    session: SessionDep,
    settings: SettingsDep,
    _admin: AdminUser,
    response: Response,
    name: Annotated[str | None, Form(min_length=1, max_length=200)] = None,
) -> DetectorOut:
    """Validate and register a detector (admin); the same model twice answers 200 with the first one."""
    model_bytes = await _read_limited(model, settings.max_upload_bytes, "model")
    sidecar_text = sidecar if isinstance(sidecar, str) else await _read_limited(sidecar, 1_000_000, "sidecar")
    detector, created = await service.register_detector(
        session, settings, model_bytes, service.sidecar_from_text(sidecar_text), name
    )
    if not created:
        response.status_code = 200
    return DetectorOut.model_validate(detector)


@router.get("/detectors")
async def list_detectors(session: SessionDep, _admin: AdminUser) -> list[DetectorOut]:
    """Registered detectors, oldest first (admin)."""
    return [DetectorOut.model_validate(row) for row in await service.list_detectors(session)]


@router.get("/detectors/{detector_id}")
async def get_detector(detector_id: PathId, session: SessionDep, _admin: AdminUser) -> DetectorOut:
    """One registered detector with its sidecar (admin)."""
    return DetectorOut.model_validate(await service.get_detector(session, detector_id))


@router.post("/tasks/{task_id}/detect", status_code=202)
async def start_detection(
    data: DetectRequest, session: SessionDep, settings: SettingsDep, admin: AdminUser, task: TaskDep
) -> DetectStarted:
    """Queue a detect job over all images of the task (admin); 422 when the detector's labels don't fit."""
    job = await service.start_detection(session, settings, task, data, admin)
    return DetectStarted(job_id=job.id, task_id=task.id, detector_id=data.detector_id)
