"""Request and response models of the detector registry and of detection runs."""

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from app.schemas_common import DbId


class DetectorOut(BaseModel):
    """A registered detector; its ONNX file lies in the model directory as ``<sha256>.onnx``."""

    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    sha256: str
    sidecar: dict[str, Any]
    created_at: datetime


class DetectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    detector_id: DbId
    batch_size: Annotated[int | None, Field(ge=1, le=256)] = None
    name: Annotated[str | None, Field(min_length=1, max_length=200)] = None


class DetectStarted(BaseModel):
    """A queued ``detect`` job; follow it at ``GET /api/v1/jobs/{job_id}``."""

    job_id: int
    task_id: int
    detector_id: int
