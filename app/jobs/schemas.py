"""Request and response models of the job queue."""

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from app.models import JobStatus
from app.schemas_common import FiniteFloat


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Annotated[str, Field(min_length=1, max_length=32)]
    params: dict[str, Any] = Field(default_factory=dict)
    timeout_s: Annotated[FiniteFloat | None, Field(gt=0, le=7 * 24 * 3600)] = None
    max_attempts: Annotated[int | None, Field(ge=1, le=20)] = None


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    kind: str
    params: dict[str, Any]
    status: JobStatus
    progress: float
    message: str
    result: dict[str, Any] | None
    error: str | None
    attempts: int
    max_attempts: int
    timeout_s: float
    cancel_requested: bool
    lease_owner: str | None
    lease_expires_at: datetime | None
    created_by: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class JobKindOut(BaseModel):
    name: str
    default_timeout_s: float
    default_max_attempts: int
    params_schema: dict[str, Any] = Field(description="JSON Schema of the kind's params")
