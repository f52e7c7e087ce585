"""Parameters of the `train` and `train_experiment` jobs and the training-run records the API returns."""

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.jobs.params import JobParams

Loss = Literal["bce", "votes"]
TrainMode = Literal["unaided", "aided"]
MODES: tuple[TrainMode, ...] = ("unaided", "aided")
LOSSES: tuple[Loss, ...] = ("bce", "votes")
DatabaseId = Annotated[int, Field(ge=1, le=2**31 - 1)]
FIRST_K = re.compile(r"^first:([1-9][0-9]{0,3})$")


def _check_experts(value: str | list[str]) -> str | list[str]:
    if isinstance(value, list):
        if not value or any(not name.strip() for name in value):
            raise ValueError("experts must name at least one expert, without empty names")
        if len(set(value)) != len(value):
            raise ValueError("experts names an expert twice")
        return value
    if value == "all" or FIRST_K.match(value):
        return value
    raise ValueError('experts must be "all", "first:K" (K ≥ 1) or a list of names')


class TrainSettings(JobParams):
    """Everything of a training run but the data selection; shared by `train` and `train_experiment`."""

    weighting: Literal["paper", "published"] = "paper"
    alpha: Annotated[float, Field(gt=0, le=100)] = 1.0
    epochs_frozen: Annotated[int, Field(ge=0, le=1000)] = 3
    epochs_unfrozen: Annotated[int, Field(ge=0, le=1000)] = 5
    lr_frozen: Annotated[float, Field(gt=0, le=10)] = 0.05
    lr_unfrozen: Annotated[float, Field(gt=0, le=10)] = 1e-3
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 64
    patch_size: Annotated[int, Field(ge=16, le=512)] = 64
    repeats: Annotated[int, Field(ge=1, le=100)] = 5
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    weights: Annotated[str | None, Field(max_length=1000)] = None
    iou: Annotated[float, Field(gt=0, le=1)] = 0.5
    background_per_image: Annotated[int, Field(ge=0, le=10000)] = 50
    validation_images: Annotated[float, Field(gt=0, lt=1)] = 0.25

    @field_validator("epochs_unfrozen")
    @classmethod
    def _some_epochs(cls, value: int, info: Any) -> int:
        if value + int(info.data.get("epochs_frozen", 0)) < 1:
            raise ValueError("at least one epoch (frozen or unfrozen) is needed")
        return value


class TrainParams(TrainSettings):
    """Params of one `train` job: one training set (experts × mode), one loss, `repeats` runs."""

    study_id: DatabaseId
    task_id: DatabaseId
    mode: TrainMode
    experts: str | list[str] = "all"
    loss: Loss = "votes"

    _experts_ok = field_validator("experts")(_check_experts)


class TrainExperimentParams(TrainSettings):
    """Params of a `train_experiment` job: the paper's sets × losses × modes × repeats, one job each."""

    study_id: DatabaseId
    task_id: DatabaseId
    modes: list[TrainMode] = Field(default_factory=lambda: list(MODES), min_length=1)
    losses: list[Loss] = Field(default_factory=lambda: list(LOSSES), min_length=1)
    sets: Literal["paper", "single", "number"] = "paper"


class EpochRecord(BaseModel):
    epoch: int
    stage: Literal["frozen", "unfrozen"]
    train_loss: float
    val_loss: float
    val_accuracy: float


class TrainingRunOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    study_id: DatabaseId
    task_id: DatabaseId
    job_id: int | None
    mode: str
    loss: str
    weighting: str
    experts: list[str]
    set_name: str
    repeat: int
    params: dict[str, Any]
    history: list[dict[str, Any]]
    best_val_accuracy: float | None
    best_epoch: int | None
    device: str
    device_reason: str
    weights_init: str
    seconds: float
    samples_per_s: float
    train_samples: int
    val_samples: int
    checkpoint_path: str | None
    onnx_path: str | None
    onnx_sha256: str | None
    status: str
    created_at: datetime
