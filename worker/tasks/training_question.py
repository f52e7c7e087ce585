"""The `training_question` job kind: validation accuracy vs. simulated experts per mode, on phantoms.

Params: `TrainingQuestionParams` (app/simulation/schemas.py). Progress = fraction of the training runs
finished. Result: `app.simulation.training_question.summarise` (rows, answers per loss, every run); the
"Plan a study" page renders its table and plot. Nothing is written to the database but the job itself.
"""

from typing import Any

from app.jobs.registry import ProgressReporter
from app.simulation.schemas import TrainingQuestionParams
from worker.training.question import answer_question


def run(params: dict[str, Any], progress: ProgressReporter) -> dict[str, Any]:
    return answer_question(TrainingQuestionParams.model_validate(params), progress)
