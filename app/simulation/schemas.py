"""Requests and answers of the simulation and planning routes."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.schemas_common import FiniteFloat
from app.training.schemas import Loss, TrainSettings

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


MAX_QUESTION_RUNS = 1000


def _votes_loss_only() -> list[Loss]:
    return ["votes"]


class TrainingQuestionParams(TrainSettings):
    """The `training_question` job and `concord plan --training-question`: the paper's training experiment
    asked in advance on phantoms. Simulated experts (a preset population) annotate a phantom detect region
    unaided and aided; the first k experts' votes of each mode label a training set; the existing
    classifier training (ResNet-18, VotesLoss and/or BCE) learns it; the validation accuracy against the
    phantom's ground truth is compared across modes and k. Repeat r uses seed + r for the phantom, the
    population, the injected errors and the training. Small defaults: a CPU answers in minutes."""

    experts: list[Annotated[int, Field(ge=1, le=MAX_EXPERTS)]] = Field(
        default_factory=lambda: [1, 2, 3], min_length=1, max_length=10
    )
    losses: list[Loss] = Field(default_factory=_votes_loss_only, min_length=1, max_length=2)
    preset: Annotated[str, Field(min_length=1, max_length=40)] = "paper"
    region_scale: Annotated[int, Field(ge=1, le=4)] = 1
    repeats: Annotated[int, Field(ge=1, le=50)] = 2
    epochs_frozen: Annotated[int, Field(ge=0, le=1000)] = 0
    epochs_unfrozen: Annotated[int, Field(ge=0, le=1000)] = 10
    batch_size: Annotated[int, Field(ge=2, le=4096)] = 16
    patch_size: Annotated[int, Field(ge=16, le=512)] = 32
    background_per_image: Annotated[int, Field(ge=0, le=10000)] = 10
    cpu_threads: Annotated[int | None, Field(ge=1, le=256)] = None

    @field_validator("experts")
    @classmethod
    def _one_expert_is_the_yardstick(cls, value: list[int]) -> list[int]:
        ordered = sorted(set(value))
        if ordered[0] != 1:
            raise ValueError(
                "experts must include 1: one aided expert is what the unaided ones are compared with"
            )
        return ordered

    @field_validator("losses")
    @classmethod
    def _distinct_losses(cls, value: list[Loss]) -> list[Loss]:
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _bounded_runs(self) -> TrainingQuestionParams:
        if self.runs > MAX_QUESTION_RUNS:
            raise ValueError(
                f"repeats × experts × 2 modes × losses = {self.runs} runs; at most {MAX_QUESTION_RUNS}"
            )
        return self

    @property
    def runs(self) -> int:
        """Training runs the question takes: one per repeat, mode, number of experts and loss."""
        return self.repeats * len(self.experts) * 2 * len(self.losses)
