"""Rules of simulated studies: who the simulated experts are, what they may see, how time is scaled.

Simulated experts are ordinary expert accounts (`sim<study>-NN`) with ordinary tokens and assignments;
they see exactly what a person would. The omniscient part (ground truth and look-alikes, `scene`) is read
by the admin who runs the simulation and handed to the expert model on the client side.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

import numpy as np
from argon2 import PasswordHasher
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import service as accounts
from app.errors import Conflict, Invalid, NotFound
from app.evaluation import metrics as m
from app.images import repository as images_repository
from app.models import (
    Assignment,
    GroundTruthObject,
    InjectedError,
    Mode,
    Study,
    Suggestion,
    SuggestionSet,
    Task,
)
from app.offload import Compute
from app.simulation import repository
from app.simulation.model import ExpertParams
from app.simulation.presets import PRESETS
from app.simulation.schemas import (
    PlanOut,
    PlanQuery,
    PlanRowOut,
    RateOut,
    SceneImageOut,
    SceneObjectOut,
    SceneOut,
    SimulatedExpertOut,
    SimulatedTaskOut,
    SimulationSetupOut,
    SimulationStart,
)
from app.studies import repository as studies_repository

LOOKALIKE_IOU = 0.25
TOKEN_DAYS = 7


def expert_names(study: Study, count: int) -> list[str]:
    return [f"sim{study.id}-{index + 1:02d}" for index in range(count)]


async def start(
    session: AsyncSession, hasher: PasswordHasher, study: Study, data: SimulationStart
) -> SimulationSetupOut:
    """Mark the study simulated, create its simulated experts with tokens and their unaided and aided
    assignments on every task (aided shows the task's injected suggestion set). Once per study, and only
    before anyone worked on it (else 409): the time scale then applies to the simulated experts' visits."""
    if study.simulated:
        raise Conflict(f"study {study.name!r} is already simulated")
    if data.preset not in PRESETS:
        raise Invalid(f"unknown preset {data.preset!r}; known: {', '.join(sorted(PRESETS))}")
    if await repository.study_has_visits(session, study.id):
        raise Conflict(f"study {study.name!r} already has work of real experts; simulate a study of its own")
    tasks = list(await studies_repository.tasks_of_study(session, study.id, None))
    if not tasks:
        raise Invalid("the study has no tasks to simulate")
    shown_sets = {task.id: await _shown_set(session, task) for task in tasks}
    experts, expert_ids = [], []
    for name in expert_names(study, data.experts):
        user = await accounts.create_user(session, hasher, name, "expert", None)
        expert_ids.append(user.id)
        for task in tasks:
            for mode in (Mode.unaided, Mode.aided):
                shown = shown_sets[task.id] if mode == Mode.aided else None
                session.add(
                    Assignment(task_id=task.id, expert_id=user.id, mode=mode, suggestion_set_id=shown)
                )
        experts.append(
            SimulatedExpertOut(name=name, token=await accounts.issue_token(session, name, TOKEN_DAYS))
        )
    study.simulation_time_scale = float(data.speedup)
    study.simulation = {**data.model_dump(), "expert_ids": expert_ids}
    await session.flush()
    return SimulationSetupOut(
        study_id=study.id,
        time_scale=study.simulation_time_scale,
        experts=experts,
        tasks=[SimulatedTaskOut(id=task.id, name=task.name, kind=task.kind) for task in tasks],
    )


async def _shown_set(session: AsyncSession, task: Task) -> int | None:
    """The set aided experts start from: the one the task's aided assignments show, else its newest set
    with injected errors, else its newest set."""
    used = await session.scalar(
        select(Assignment.suggestion_set_id)
        .where(
            Assignment.task_id == task.id,
            Assignment.mode == Mode.aided,
            Assignment.suggestion_set_id.is_not(None),
        )
        .limit(1)
    )
    if used is not None:
        return used
    injected = await session.scalar(
        select(SuggestionSet.id)
        .join(InjectedError, InjectedError.suggestion_set_id == SuggestionSet.id)
        .where(SuggestionSet.task_id == task.id)
        .order_by(SuggestionSet.id.desc())
        .limit(1)
    )
    if injected is not None:
        return injected
    return await session.scalar(
        select(SuggestionSet.id)
        .where(SuggestionSet.task_id == task.id)
        .order_by(SuggestionSet.id.desc())
        .limit(1)
    )


async def scene(session: AsyncSession, task_id: int) -> SceneOut:
    """The task's study images as the simulator sees them: ground truth with difficulty, and look-alikes
    (objects of detector-run sets that overlap no ground-truth object, difficulty = detector score)."""
    task = await session.get(Task, task_id)
    if task is None:
        raise NotFound(f"no task {task_id}")
    labels = list(await studies_repository.labels_of_task(session, task.id))
    names = {label.id: label.name for label in labels}
    images = list(await images_repository.images_of_task(session, task.id))
    image_ids = [image.id for image in images]
    truth = _grouped(
        await session.scalars(
            select(GroundTruthObject)
            .where(GroundTruthObject.image_id.in_(image_ids))
            .order_by(GroundTruthObject.image_id, GroundTruthObject.position, GroundTruthObject.id)
        )
    )
    detected = _grouped(
        await session.scalars(
            select(Suggestion)
            .join(SuggestionSet, SuggestionSet.id == Suggestion.suggestion_set_id)
            .where(
                SuggestionSet.task_id == task.id,
                SuggestionSet.parent_id.is_(None),
                SuggestionSet.detector_model_id.is_not(None),
            )
            .order_by(Suggestion.image_id, Suggestion.position, Suggestion.id)
        )
    )
    out = []
    for position, image in enumerate(images):
        true_objects = [
            SceneObjectOut(
                x1=o.x1, y1=o.y1, x2=o.x2, y2=o.y2, label=names[o.label_id], difficulty=o.difficulty or 0.0
            )
            for o in truth.get(image.id, [])
        ]
        out.append(
            SceneImageOut(
                id=image.id,
                position=position,
                width=image.width,
                height=image.height,
                truth=true_objects,
                lookalikes=_lookalikes(true_objects, detected.get(image.id, [])),
            )
        )
    return SceneOut(task_id=task.id, kind=task.kind, labels=[label.name for label in labels], images=out)


Row = TypeVar("Row", GroundTruthObject, Suggestion)


def _grouped(rows: Iterable[Row]) -> dict[int, list[Row]]:
    found: dict[int, list[Row]] = {}
    for row in rows:
        found.setdefault(row.image_id, []).append(row)
    return found


def _lookalikes(truth: list[SceneObjectOut], candidates: list[Suggestion]) -> list[SceneObjectOut]:
    if not candidates:
        return []
    boxes = np.array([[c.x1, c.y1, c.x2, c.y2] for c in candidates], dtype=np.float64)
    true_boxes = np.array([[t.x1, t.y1, t.x2, t.y2] for t in truth], dtype=np.float64).reshape(-1, 4)
    overlap = m.iou_matrix(boxes, true_boxes) if len(true_boxes) else np.zeros((len(boxes), 1))
    alone = overlap.max(axis=1) < LOOKALIKE_IOU
    return [
        SceneObjectOut(x1=c.x1, y1=c.y1, x2=c.x2, y2=c.y2, label=None, difficulty=float(c.score))
        for c, keep in zip(candidates, alone, strict=True)
        if keep
    ]


def plan(query: PlanQuery) -> PlanOut:
    """Power and caught rates by repeated simulation (CPU work: run it off the event loop). The last few
    answers are kept, so a page and its plot compute once."""
    if query.preset not in PRESETS:
        raise Invalid(f"unknown preset {query.preset!r}; known: {', '.join(sorted(PRESETS))}")
    return _plan(query.model_dump_json())


@lru_cache(maxsize=16)
def _plan(query_json: str) -> PlanOut:
    return plan_with(PlanQuery.model_validate_json(query_json), None)


def plan_with(query: PlanQuery, params: ExpertParams | None, population_name: str | None = None) -> PlanOut:
    """The plan for a preset's population, or for `params` (e.g. fitted to a finished study)."""
    from app.simulation import planning

    rows = planning.plan(
        query.kind,
        query.experts,
        query.images,
        params=params,
        preset_name=query.preset,
        reps=query.repetitions,
        seed=query.seed,
    )
    return PlanOut(
        kind=query.kind,
        preset=population_name or query.preset,
        repetitions=query.repetitions,
        alpha=planning.ALPHA,
        rows=[
            PlanRowOut(
                experts=row.experts,
                images=row.images,
                concordance_power=row.concordance_power,
                seconds_power=row.seconds_power,
                concordance_gain=row.concordance_gain,
                seconds_saved=row.seconds_saved,
                caught={
                    kind: {mode: RateOut(mean=mean, sd=sd) for mode, (mean, sd) in modes.items()}
                    for kind, modes in row.caught.items()
                },
            )
            for row in rows
        ],
    )


def plan_figure(result: PlanOut, fmt: str = "svg") -> bytes:
    """Power vs. experts, one line per number of images, for the concordance gain and the time saving."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8.0, 3.4), layout="constrained")
    for column, (field, title) in enumerate(
        (("concordance_power", "concordance gain"), ("seconds_power", "time saving"))
    ):
        axes = figure.add_subplot(1, 2, column + 1)
        for images in sorted({row.images for row in result.rows}):
            rows = sorted((row for row in result.rows if row.images == images), key=lambda row: row.experts)
            axes.plot(
                [r.experts for r in rows],
                [getattr(r, field) for r in rows],
                marker="o",
                label=f"{images} images",
            )
        axes.axhline(0.8, color="#888888", linestyle=":", linewidth=1)
        axes.set_ylim(0, 1.02)
        axes.set_xlabel("experts per mode")
        axes.set_ylabel("power (α 0.05, paired t)")
        axes.set_title(f"{result.kind}: {title}")
        axes.legend(fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, dpi=110)
    return buffer.getvalue()


@dataclass(frozen=True)
class FittedPlan:
    study: str
    task: str
    fit: Any  # fitting.Fit
    plan: PlanOut


async def fitted_plan(session: AsyncSession, compute: Compute, query: PlanQuery, study_id: int) -> FittedPlan:
    """Fit the query's preset population to the study's task of the query's kind, then plan with it. The
    fit is kept per study, task revision, kind, preset and seed, so a page and its plot fit once."""
    from app.evaluation.service import MetricsParams, study_metrics

    study = await session.get(Study, study_id)
    if study is None:
        raise NotFound(f"no study {study_id}")
    tasks = [
        t for t in await studies_repository.tasks_of_study(session, study.id, None) if t.kind == query.kind
    ]
    if len(tasks) != 1:
        raise Invalid(f"study {study.name!r} has {len(tasks)} tasks of kind {query.kind}; fitting needs one")
    task = tasks[0]
    revision = await studies_repository.objects_revision(session, task.id)
    key = (study.id, task.id, revision, query.kind, query.preset, query.seed)
    metrics = await study_metrics(session, study, MetricsParams(), compute)
    if task.name not in metrics.tasks:
        raise Invalid(f"task {task.name!r} has no results to fit to")
    fitted = await compute(_fit_cached, key, metrics.tasks[task.name].model_dump_json())
    plan = await compute(plan_with, query, fitted.params, f"fitted to {study.name} / {task.name}")
    return FittedPlan(study.name, task.name, fitted, plan)


@lru_cache(maxsize=8)
def _fit_cached(key: tuple[Any, ...], metrics_json: str) -> Any:
    from app.evaluation.schemas import TaskMetricsOut
    from app.simulation import fitting

    _, _, _, kind, preset_name, seed = key
    observed = fitting.Observed.of(TaskMetricsOut.model_validate_json(metrics_json))
    return fitting.fit(kind, PRESETS[preset_name][kind], observed, seed)
