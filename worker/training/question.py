"""The training question's runs: one classifier per repeat × mode × number of experts × loss.

Numbers and labels come from `app.simulation.training_question`; each run is `worker.training.train.main`
without checkpoints or ONNX export (short runs, never resumed). The accuracy reported is the validation
accuracy after the last epoch, not the best epoch's (picking the best epoch on the validation set would
flatter every set alike and hide the differences asked about). Two losses that give every sample the same
weights (VotesLoss of one expert is BCE) train the same network: the second reuses the first's run.
"""

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.simulation import training_question as question
from app.simulation.schemas import TrainingQuestionParams
from app.training.service import Samples
from worker.training.train import TrainConfig, main, run_settings
from worker.training.votes_loss import sample_weights

Progress = Callable[[float, str], None]
UNUSED_PATH = Path("unused")


def answer_question(
    params: TrainingQuestionParams, progress: Progress, should_stop: Callable[[], bool] = lambda: False
) -> dict[str, Any]:
    """Train every run of the question and return `question.summarise`'s result."""
    if params.cpu_threads is not None:
        torch.set_num_threads(params.cpu_threads)
    runs: list[dict[str, Any]] = []
    trained: dict[tuple[int, str, int, str], tuple[float, float]] = {}
    for repeat in range(params.repeats):
        progress(
            len(runs) / params.runs,
            f"repeat {repeat + 1}/{params.repeats}: simulating experts on the phantom",
        )
        region = question.region(params, repeat)
        for mode in question.MODES:
            for count in params.experts:
                train, validation = question.region_samples(region, mode, count, params)
                data = (
                    question.patches(region, train, params.patch_size),
                    question.patches(region, validation, params.patch_size),
                )
                precision, recall = question.label_quality(region, train)
                for loss in params.losses:
                    what = f"repeat {repeat + 1}/{params.repeats}: {mode}, {count} expert(s), {loss}"
                    done = len(runs)

                    def step(fraction: float, message: str, done: int = done, what: str = what) -> None:
                        progress((done + fraction) / params.runs, f"{what}: {message}")

                    weights = _weights(loss, train, params, count)
                    key = (repeat, mode, count, hashlib.sha256(weights.tobytes()).hexdigest())
                    if key not in trained:
                        trained[key] = _train(
                            params, repeat, weights, train, validation, data, step, should_stop
                        )
                    accuracy, best = trained[key]
                    runs.append(
                        {
                            "repeat": repeat,
                            "mode": mode,
                            "experts": count,
                            "loss": loss,
                            "accuracy": accuracy,
                            "best_accuracy": best,
                            "train_samples": len(train),
                            "train_positives": int(train.positive.sum()),
                            "val_samples": len(validation),
                            "label_precision": precision,
                            "label_recall": recall,
                        }
                    )
                    progress(len(runs) / params.runs, f"{what}: validation accuracy {accuracy:.3f}")
    return question.summarise(params, runs)


def _weights(loss: str, train: Samples, params: TrainingQuestionParams, count: int) -> np.ndarray:
    if loss == "bce":
        return np.ones(len(train), dtype=np.float32)
    return sample_weights(train.votes, train.positive, params.weighting, count)


def _train(
    params: TrainingQuestionParams,
    repeat: int,
    weights: np.ndarray,
    train: Samples,
    validation: Samples,
    data: tuple[question.Patches, question.Patches],
    progress: Progress,
    should_stop: Callable[[], bool],
) -> tuple[float, float]:
    """(validation accuracy after the last epoch, best epoch's) of one run."""
    result = main(
        TrainConfig(
            train_patches=data[0],
            train_targets=train.positive,
            train_weights=weights,
            val_patches=data[1],
            val_targets=validation.positive,
            checkpoint_path=UNUSED_PATH,
            onnx_path=UNUSED_PATH,
            seed=params.seed + repeat,
            **run_settings(params),
            export=False,
            checkpoints=False,
            progress=progress,
            should_stop=should_stop,
        )
    )
    return float(result.history[-1]["val_accuracy"]), float(result.best_val_accuracy)
