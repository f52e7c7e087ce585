"""`concord train run` (foreground, progress bar) and `concord train experiment` (queues the parent job)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any, TypeAlias

from pydantic import ValidationError

from app.config import Settings, get_settings
from app.db import make_engine, make_sessionmaker
from app.errors import Invalid, NotFound
from app.studies import repository as studies_repository
from app.training.schemas import LOSSES, TrainExperimentParams, TrainParams

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
BAR_WIDTH = 30


def register(commands: Subparsers) -> None:
    train = commands.add_parser("train", help="train patch classifiers on experts' labels (BCE or VotesLoss)")
    actions = train.add_subparsers(dest="train_command", required=True, metavar="ACTION")
    run = actions.add_parser("run", help="train in the foreground and record the runs")
    _common(run)
    run.add_argument("--mode", required=True, choices=["unaided", "aided"])
    run.add_argument("--experts", default="all", help="all, first:K (natural name order) or names A,B")
    run.add_argument("--loss", choices=list(LOSSES), help="default: both, one run set each")
    run.add_argument("--json", action="store_true", help="end with one JSON object describing the runs")
    run.set_defaults(handler=cmd_train_run)
    experiment = actions.add_parser("experiment", help="queue the paper's experiment as one job per run")
    _common(experiment)
    experiment.add_argument("--modes", default="unaided,aided", help="comma-separated")
    experiment.add_argument("--losses", default="bce,votes", help="comma-separated")
    experiment.add_argument("--sets", default="paper", choices=["paper", "single", "number"])
    experiment.set_defaults(handler=cmd_train_experiment)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True, help="name or id")
    parser.add_argument("--task", required=True, help="name or id")
    parser.add_argument("--weighting", default="paper", choices=["paper", "published"])
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, help="epochs of each stage (default: 3 frozen + 5 unfrozen)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--weights", help="local ResNet-18 weights file (else random initialisation)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--background-per-image", type=int, default=50)


def _settings_of(args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = {
        "weighting": args.weighting,
        "alpha": args.alpha,
        "repeats": args.repeats,
        "seed": args.seed,
        "device": args.device,
        "weights": args.weights,
        "batch_size": args.batch_size,
        "patch_size": args.patch_size,
        "background_per_image": args.background_per_image,
    }
    if args.epochs is not None:
        values.update(epochs_frozen=args.epochs, epochs_unfrozen=args.epochs)
    return values


async def resolve(settings: Settings, study_ref: str, task_ref: str) -> tuple[int, int]:
    """(study id, task id) from names or ids."""
    from app.evaluation.service import find_study

    engine = make_engine(settings.resolved_database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            study = await find_study(session, study_ref)
            task = await studies_repository.task_by_name(session, study.id, task_ref)
            if task is None and task_ref.isdigit():
                tasks = await studies_repository.tasks_of_study(session, study.id, None)
                task = next((item for item in tasks if item.id == int(task_ref)), None)
            if task is None:
                raise NotFound(f"no task {task_ref!r} in study {study.name!r}")
            return study.id, task.id
    finally:
        await engine.dispose()


def _experts(value: str) -> str | list[str]:
    return (
        value if value == "all" or value.startswith("first:") else [name for name in value.split(",") if name]
    )


def _validated(model: type[TrainParams] | type[TrainExperimentParams], values: dict[str, Any]) -> Any:
    try:
        return model.model_validate(values)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in error.errors())
        raise Invalid(problems) from error


class _StopFlag:
    """First Ctrl-C: stop after the current batch (the last epoch's checkpoint stays); second: at once."""

    def __init__(self) -> None:
        self.set = False

    def __call__(self) -> bool:
        return self.set

    def handle(self, signum: int, frame: object) -> None:
        if self.set:
            raise KeyboardInterrupt
        self.set = True
        print("\nstopping after this batch (Ctrl-C again to stop at once)", file=sys.stderr)


class _Bar:
    def __init__(self, label: str) -> None:
        self.label = label
        self.tty = sys.stderr.isatty()

    def __call__(self, fraction: float, message: str = "") -> None:
        if not self.tty:
            return
        filled = round(BAR_WIDTH * min(max(fraction, 0.0), 1.0))
        line = f"\r{self.label} [{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {fraction:4.0%} {message}"
        sys.stderr.write(line[:160].ljust(160))
        sys.stderr.flush()

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


def cmd_train_run(args: argparse.Namespace) -> int:
    from app.cli import run_async
    from worker.tasks.train import run_training
    from worker.training.engine import TrainingStopped

    settings = get_settings()
    study_id, task_id = run_async(lambda settings: resolve(settings, args.study, args.task))
    losses = [args.loss] if args.loss else list(LOSSES)
    stop = _StopFlag()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, stop.handle) if main_thread else None
    runs: list[dict[str, Any]] = []
    means: dict[str, float] = {}
    try:
        for loss in losses:
            values = {"study_id": study_id, "task_id": task_id, "mode": args.mode, "loss": loss}
            params = _validated(
                TrainParams, {**values, "experts": _experts(args.experts), **_settings_of(args)}
            )
            bar = _Bar(f"{loss:>5}")
            try:
                result = run_training(params, settings, bar, stop)
            finally:
                bar.close()
            runs.extend(result["runs"])
            means[loss] = result["mean_best_val_accuracy"]
            if not args.json:
                print(
                    f"{loss}: mean best validation accuracy {means[loss]:.4f} over {len(result['runs'])} run(s)"
                )
    except TrainingStopped as stopped:
        print(
            f"concord: {stopped}; the last epoch's checkpoint is kept, run the same command to resume",
            file=sys.stderr,
        )
        return 130
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)
    if args.json:
        print(json.dumps({"runs": [_run_json(run) for run in runs], "mean_best_val_accuracy": means}))
    return 0


RUN_KEYS = (
    "loss", "mode", "experts", "best_val_accuracy", "best_epoch", "device", "onnx_path", "samples_per_s", "weights_init",
)  # fmt: skip


def _run_json(run: dict[str, Any]) -> dict[str, Any]:
    return {key: run[key] for key in RUN_KEYS}


def cmd_train_experiment(args: argparse.Namespace) -> int:
    from app.cli import run_async

    study_id, task_id = run_async(lambda settings: resolve(settings, args.study, args.task))
    values = {
        "study_id": study_id,
        "task_id": task_id,
        "modes": [mode for mode in args.modes.split(",") if mode],
        "losses": [loss for loss in args.losses.split(",") if loss],
        "sets": args.sets,
        **_settings_of(args),
    }
    params = _validated(TrainExperimentParams, values)
    job_id = run_async(lambda settings: _queue_experiment(settings, params))
    print(job_id)
    return 0


async def _queue_experiment(settings: Settings, params: TrainExperimentParams) -> int:
    from app.jobs import service as jobs

    engine = make_engine(settings.resolved_database_url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            from app.training.service import load_task

            await load_task(session, params.study_id, params.task_id)
            job = await jobs.enqueue(session, "train_experiment", params.model_dump(mode="json"), None)
            await session.flush()
            return job.id
    finally:
        await engine.dispose()
