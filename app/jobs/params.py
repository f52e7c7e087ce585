"""The parameters of each job kind, checked when a job is queued so that a bad one never reaches a worker.

One pydantic model per kind; `registry.py` names it beside the kind's function. Unknown fields are
refused, numbers are bounded, and anything a worker turns into a path or a file name is restricted.
"""

from pathlib import PurePosixPath
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

DatabaseId = Annotated[StrictInt, Field(ge=1, le=2**31 - 1)]
FileNamePart = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class JobParams(BaseModel):
    """Base of every kind's parameters: nothing beyond the declared fields."""

    model_config = ConfigDict(extra="forbid")


class SleepParams(JobParams):
    """`sleep`: a smoke job that counts to `steps` over `seconds` (tests use its failure switches)."""

    seconds: Annotated[float, Field(ge=0, le=24 * 3600, allow_inf_nan=False)] = 1.0
    steps: Annotated[StrictInt, Field(ge=1, le=100_000)] = 10
    fail: Annotated[str | None, Field(max_length=1000)] = None
    exit_code: Annotated[StrictInt | None, Field(ge=0, le=255)] = None
    record_dir: Annotated[str | None, Field(max_length=1000)] = None
    marker: FileNamePart = "job"

    @field_validator("record_dir")
    @classmethod
    def _absolute_without_parent_steps(cls, value: str | None) -> str | None:
        if value is None:
            return value
        path = PurePosixPath(value)
        if not path.is_absolute() or ".." in path.parts:
            raise ValueError("record_dir must be an absolute path without '..'")
        return value


class DetectParams(JobParams):
    """`detect`: run a registered detector over every image of a task."""

    task_id: DatabaseId
    detector_id: DatabaseId
    batch_size: Annotated[StrictInt | None, Field(ge=1, le=256)] = None
    name: Annotated[str | None, Field(min_length=1, max_length=200)] = None


class DetectorTrainParams(JobParams):
    """`detector_train`: retrain Concord's own detector(s) on phantoms."""

    kind: Literal["classify", "grade", "detect", "all"] = "all"
    seed: Annotated[StrictInt, Field(ge=0, le=2**32 - 1)] = 0
