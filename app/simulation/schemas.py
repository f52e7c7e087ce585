"""Requests and answers of the simulation and planning routes."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

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


MAX_PLAN_VALUES = 6
MAX_PLAN_DRAWS = 40_000  # repetitions × Σ over pairs of experts × images: a few seconds of work


class PlanQuery(BaseModel):
    """What to plan: a task kind, the numbers of experts and of images per mode to compare, a population."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["classify", "grade", "detect"] = "detect"
    experts: Annotated[
        list[Annotated[int, Field(ge=2, le=MAX_EXPERTS)]], Field(min_length=1, max_length=MAX_PLAN_VALUES)
    ] = [3, 5, 10]
    images: Annotated[
        list[Annotated[int, Field(ge=1, le=200)]], Field(min_length=1, max_length=MAX_PLAN_VALUES)
    ] = [5, 15]
    preset: Annotated[str, Field(min_length=1, max_length=40)] = "paper"
    repetitions: Annotated[int, Field(ge=20, le=2000)] = 100
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0

    @model_validator(mode="after")
    def _bounded(self) -> PlanQuery:
        draws = self.repetitions * sum(self.experts) * sum(self.images)
        if draws > MAX_PLAN_DRAWS:
            raise ValueError(
                f"repetitions × experts × images = {draws} is more than {MAX_PLAN_DRAWS}; ask for fewer"
            )
        return self


class RateOut(BaseModel):
    mean: float
    sd: float


class PlanRowOut(BaseModel):
    experts: int
    images: int
    concordance_power: float = Field(
        description="share of repetitions where the paired t-test (α 0.05) finds aided > unaided"
    )
    seconds_power: float = Field(
        description="share of repetitions where the paired t-test finds aided faster"
    )
    concordance_gain: float
    seconds_saved: float
    caught: dict[str, dict[str, RateOut]] = Field(
        description="error kind → mode → share caught over repetitions"
    )


class PlanOut(BaseModel):
    kind: str
    preset: str
    repetitions: int
    alpha: float
    rows: list[PlanRowOut]


def describe(error: ValidationError) -> str:
    """A validation error as one readable line: `field: problem; …`."""
    return "; ".join(
        f"{'.'.join(str(part) for part in problem['loc']) or 'query'}: "
        f"{str(problem['msg']).removeprefix('Value error, ')}"
        for problem in error.errors()
    )
