"""The `train` job kind: train one set's classifier `repeats` times, record each run, export the best models.

Params: `TrainParams` (app/training/schemas.py). Result: {"runs": [...], "mean_best_val_accuracy": x, ...}.
Checkpoints live in a folder keyed by the params (`checkpoint_dir`), one sub-folder per repeat: a job that
is re-queued after its worker died resumes the unfinished repeat after its last epoch, and a repeat that
finished (`done.json`) is not trained or recorded again. `run_training` is what `concord train run` calls
in the foreground too.
"""

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from app.config import Settings, get_settings
from app.db import make_engine, make_sessionmaker
from app.jobs.registry import ProgressReporter
from app.storage import store_of
from app.training import service
from app.training.schemas import TrainParams
from app.training.service import TrainingSet
from worker.training.dataset import cached_patches
from worker.training.train import TrainConfig, TrainResult, main, run_settings
from worker.training.votes_loss import sample_weights

DONE_FILE = "done.json"


def run(params: dict[str, Any], progress: ProgressReporter) -> dict[str, Any]:
    return run_training(TrainParams.model_validate(params), get_settings(), progress)


def run_training(
    params: TrainParams,
    settings: Settings,
    progress: Callable[[float, str], None],
    should_stop: Callable[[], bool] = lambda: False,
    job_id: int | None = None,
) -> dict[str, Any]:
    progress(0.0, "reading the training set")
    training = asyncio.run(_load(settings, params))
    train_patches, val_patches, cache_hit = cached_patches(
        training, service.patch_cache_path(settings, training)
    )
    weights = _weights(params, training)
    base = service.checkpoint_dir(settings, params)
    store = store_of(settings)
    runs = []
    for repeat in range(params.repeats):
        folder = base / f"repeat-{repeat}"
        done = f"{service.checkpoint_key(params)}/repeat-{repeat}/{DONE_FILE}"
        if store.exists(done):  # in the store: a repeat finished on another machine is not trained again
            runs.append(json.loads(store.read_bytes(done)))
            continue

        def repeat_progress(fraction: float, message: str, repeat: int = repeat) -> None:
            progress((repeat + fraction) / params.repeats, f"run {repeat + 1}/{params.repeats}: {message}")

        config = TrainConfig(
            train_patches=train_patches,
            train_targets=training.train.positive,
            train_weights=weights,
            val_patches=val_patches,
            val_targets=training.validation.positive,
            checkpoint_path=folder / "checkpoint.pt",
            onnx_path=folder / "best.onnx",
            seed=params.seed + repeat,
            **run_settings(params),
            progress=repeat_progress,
            should_stop=should_stop,
        )
        result = main(config)
        service.store_exported_model(settings, Path(result.onnx_path), result.onnx_sha256)
        run_id = asyncio.run(_record(settings, params, training, repeat, result, job_id))
        summary = _summary(params, training, repeat, result, run_id)
        store.put_bytes(done, json.dumps(summary).encode())
        runs.append(summary)
    progress(1.0, f"{len(runs)} run(s) done")
    accuracies = [run["best_val_accuracy"] for run in runs]
    return {
        "runs": runs,
        "mean_best_val_accuracy": service.mean_or_nan(accuracies),
        "train_samples": len(training.train),
        "train_positives": int(training.train.positive.sum()),
        "val_samples": len(training.validation),
        "patch_cache": str(service.patch_cache_path(settings, training)),
        "patch_cache_hit": cache_hit,
    }


def _weights(params: TrainParams, training: TrainingSet) -> np.ndarray:
    if params.loss == "bce":
        return np.ones(len(training.train), dtype=np.float32)
    votes, positive = training.train.votes, training.train.positive
    return sample_weights(votes, positive, params.weighting, len(training.experts))


async def _load(settings: Settings, params: TrainParams) -> TrainingSet:
    engine = make_engine(settings.resolved_database_url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            return await service.training_set(session, settings, params)
    finally:
        await engine.dispose()


def _summary(
    params: TrainParams, training: TrainingSet, repeat: int, result: TrainResult, run_id: int
) -> dict[str, Any]:
    return {
        "training_run_id": run_id,
        "loss": params.loss,
        "mode": params.mode,
        "experts": training.experts,
        "set_name": training.set_name,
        "repeat": repeat,
        "best_val_accuracy": result.best_val_accuracy,
        "best_epoch": result.best_epoch,
        "device": result.device,
        "device_reason": result.device_reason,
        "onnx_path": str(Path(result.onnx_path).resolve()),
        "onnx_sha256": result.onnx_sha256,
        "onnx_max_difference": result.onnx_max_difference,
        "samples_per_s": result.samples_per_s,
        "weights_init": result.weights_init,
        "seconds": result.seconds,
        "resumed_after_epoch": result.resumed_after_epoch,
        "history": result.history,
    }


async def _record(
    settings: Settings,
    params: TrainParams,
    training: TrainingSet,
    repeat: int,
    result: TrainResult,
    job_id: int | None,
) -> int:
    engine = make_engine(settings.resolved_database_url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            run = service.record_run(
                session,
                {
                    "study_id": params.study_id,
                    "task_id": params.task_id,
                    "job_id": job_id,
                    "mode": params.mode,
                    "loss": params.loss,
                    "weighting": params.weighting,
                    "experts": training.experts,
                    "set_name": training.set_name,
                    "repeat": repeat,
                    "params": params.model_dump(mode="json"),
                    "history": result.history,
                    "best_val_accuracy": result.best_val_accuracy,
                    "best_epoch": result.best_epoch,
                    "device": result.device,
                    "device_reason": result.device_reason,
                    "weights_init": result.weights_init,
                    "seconds": result.seconds,
                    "samples_per_s": result.samples_per_s,
                    "train_samples": len(training.train),
                    "val_samples": len(training.validation),
                    "checkpoint_path": result.checkpoint_path,
                    "onnx_path": result.onnx_path,
                    "onnx_sha256": result.onnx_sha256,
                    "status": "succeeded",
                },
            )
            await session.flush()
            return run.id
    finally:
        await engine.dispose()
