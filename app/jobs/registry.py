"""Job kinds, registered by dotted path so that the API process can name them without importing torch.

A kind's function is imported only in the worker's child process. Its signature is
`run(params: dict[str, Any], progress: ProgressReporter) -> dict[str, Any]`; the returned dict must be
JSON-serialisable and becomes the job's `result`. A kind's parameters are a pydantic model in
`app/jobs/params.py`, checked when the job is queued. Add a kind with that model and one
`register_job_kind` line at the bottom of this module (the API and the worker both import it).
"""

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pydantic import ValidationError

from app.jobs.params import DetectorTrainParams, DetectParams, JobParams, SleepParams
from app.simulation.schemas import TrainingQuestionParams
from app.training.schemas import TrainExperimentParams, TrainParams

DEFAULT_TIMEOUT_S = 3600.0
DEFAULT_MAX_ATTEMPTS = 3


class ProgressReporter(Protocol):
    def __call__(self, fraction: float, message: str = "") -> None:
        """Report progress: fraction in [0, 1] (clamped) and a short human-readable message."""


JobFunction = Callable[[dict[str, Any], ProgressReporter], dict[str, Any]]


@dataclass(frozen=True)
class JobKind:
    name: str
    function: str
    params: type[JobParams]
    default_timeout_s: float
    default_max_attempts: int

    def checked_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """The parameters as the kind's model reads them (what was given, coerced); ValueError says why not."""
        try:
            parsed = self.params.model_validate(params)
        except ValidationError as error:
            raise InvalidParams(self.name, error) from error
        return parsed.model_dump(mode="json", exclude_unset=True)


class InvalidParams(ValueError):
    """Parameters that the kind's model refuses; the message names each field and why."""

    def __init__(self, kind: str, error: ValidationError) -> None:
        problems = "; ".join(_problem(item) for item in error.errors())
        super().__init__(f"invalid params for job kind {kind!r}: {problems}")


def _problem(item: Any) -> str:
    where = ".".join(str(part) for part in item["loc"])
    message = str(item["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


_KINDS: dict[str, JobKind] = {}


def register_job_kind(
    kind: str,
    function: str,
    params: type[JobParams],
    default_timeout_s: float = DEFAULT_TIMEOUT_S,
    default_max_attempts: int = DEFAULT_MAX_ATTEMPTS,
) -> JobKind:
    """Register (or replace) a kind; `function` is "package.module:callable"."""
    if ":" not in function:
        raise ValueError(f"job function must be 'module:callable', got {function!r}")
    if len(kind) > 32:
        raise ValueError(f"job kind {kind!r} is longer than 32 characters")
    entry = JobKind(kind, function, params, default_timeout_s, default_max_attempts)
    _KINDS[kind] = entry
    return entry


def job_kind(kind: str) -> JobKind | None:
    return _KINDS.get(kind)


def job_kinds() -> list[JobKind]:
    return sorted(_KINDS.values(), key=lambda entry: entry.name)


def load_function(dotted: str) -> JobFunction:
    """Import "package.module:callable" (in the worker's child process only)."""
    module_name, _, attribute = dotted.partition(":")
    function: JobFunction = getattr(importlib.import_module(module_name), attribute)
    return function


register_job_kind("sleep", "worker.tasks.demo_sleep:run", SleepParams, default_timeout_s=600.0)
register_job_kind("detect", "worker.tasks.detect:run", DetectParams, 21600.0, default_max_attempts=2)
register_job_kind("detector_train", "worker.tasks.detector_train:run", DetectorTrainParams, 14400.0, 1)
register_job_kind("train", "worker.tasks.train:run", TrainParams, 86400.0, default_max_attempts=3)
register_job_kind(
    "train_experiment", "worker.tasks.train_experiment:run", TrainExperimentParams, 7 * 86400.0, 3
)
register_job_kind(
    "training_question", "worker.tasks.training_question:run", TrainingQuestionParams, 86400.0, 2
)
