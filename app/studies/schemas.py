"""Request and response models of studies, tasks, label schemas and assignments."""

import re
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.models import Mode, TaskKind
from app.schemas_common import DbId

COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")
PALETTE = (
    "#e6194b",
    "#3cb44b",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#42d4f4",
    "#f032e6",
    "#bfef45",
    "#9a6324",
)


class StudyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(min_length=1, max_length=200)]
    description: str = ""
    washout_days: Annotated[int, Field(ge=0, le=365)] = 14


class StudyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    description: str
    washout_days: int
    created_at: datetime
    simulated: bool = Field(False, description="run by simulated experts (concord simulate), not by people")
    simulation_time_scale: float | None = None


class LabelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(min_length=1, max_length=100)]
    colour: str | None = None
    key: Annotated[str | None, Field(min_length=1, max_length=1)] = None

    @field_validator("colour")
    @classmethod
    def colour_is_hex(cls, value: str | None) -> str | None:
        if value is not None and not COLOUR.match(value):
            raise ValueError("colour must look like #1f77b4")
        return value


class LabelOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    name: str
    colour: str
    key: str
    position: int


class TaskCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(min_length=1, max_length=200)]
    kind: TaskKind
    default_box_size: Annotated[int, Field(ge=4, le=2000)] = 50
    labels: Annotated[list[LabelIn], Field(min_length=1, max_length=9)]

    @model_validator(mode="after")
    def labels_are_unique(self) -> "TaskCreate":
        names = [label.name for label in self.labels]
        if len(set(names)) != len(names):
            raise ValueError("label names must be unique")
        keys = [label.key for label in self.labels if label.key]
        if len(set(keys)) != len(keys):
            raise ValueError("label keys must be unique")
        return self


class TaskOut(BaseModel):
    id: int
    study_id: int
    name: str
    kind: str
    default_box_size: int
    labels: list[LabelOut]


class AssignmentCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    task_id: DbId
    expert: str
    mode: Mode
    suggestion_set_id: DbId | None = None


class AssignmentOut(BaseModel):
    id: int
    task_id: int
    task_name: str
    study_id: int
    expert: str
    mode: str
    status: str
    is_open: bool
    opens_at: datetime | None
    images_done: int
    images_total: int
    suggestion_set_id: int | None
    finished_at: datetime | None
    washout_override_reason: str | None


class WashoutOverride(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, Field(min_length=3, max_length=500)]
