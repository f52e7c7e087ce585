"""Requests and answers of the simulation and planning routes."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from app.schemas_common import FiniteFloat

MAX_EXPERTS = 40


class SimulationStart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    experts: Annotated[int, Field(ge=1, le=MAX_EXPERTS)] = 10
    preset: Annotated[str, Field(min_length=1, max_length=40)] = "paper"
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    speedup: Annotated[FiniteFloat, Field(ge=1.0, le=10_000.0)] = 50.0


class SimulatedExpertOut(BaseModel):
    name: str
    token: str


class SimulatedTaskOut(BaseModel):
    id: int
    name: str
    kind: str


class SimulationSetupOut(BaseModel):
    study_id: int
    time_scale: float
    experts: list[SimulatedExpertOut]
    tasks: list[SimulatedTaskOut]


class SceneObjectOut(BaseModel):
    x1: float
    y1: float
    x2: float
    y2: float
    label: str | None
    difficulty: float


class SceneImageOut(BaseModel):
    id: int
    position: int
    width: int
    height: int
    truth: list[SceneObjectOut]
    lookalikes: list[SceneObjectOut]


class SceneOut(BaseModel):
    task_id: int
    kind: str
    labels: list[str]
    images: list[SceneImageOut]
