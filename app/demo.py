"""The demo study: three tasks (classify, grade, detect) of phantom images with exact ground truth."""

import importlib.util
import io
import secrets
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts import repository as accounts_repository
from app.accounts import service as accounts
from app.accounts.security import make_password_hasher
from app.config import Settings
from app.db import make_engine, make_sessionmaker
from app.detectors.service import ensure_builtin_detectors, run_detection
from app.images.service import NewImage, add_images
from app.images.tiles import Window
from app.jobs.params import DetectParams
from app.models import (
    Assignment,
    DetectorModel,
    GroundTruthObject,
    Image,
    ImagePurpose,
    Job,
    JobStatus,
    Label,
    Mode,
    Study,
    SuggestionSet,
    Task,
    TaskKind,
    User,
)
from app.models.base import utcnow
from app.phantoms import (
    CLASSIFY_LABELS,
    DETECT_LABELS,
    GRADE_LABELS,
    Phantom,
    classify_patch,
    detect_region,
    grade_patch,
    write_pyramidal_tiff,
)
from app.studies import repository as studies_repository
from app.studies import service as studies
from app.studies.schemas import LabelIn, StudyCreate, TaskCreate
from app.suggestions import service as suggestions
from app.suggestions.schemas import InjectionRequest

DEMO_STUDY = "Demo study"
DEMO_USERS = (("admin", "admin"), ("expert1", "expert"), ("expert2", "expert"))
CLASSIFY_COLOURS = ("#1f77b4", "#d62728", "#9467bd", "#2ca02c", "#ff7f0e")
GRADE_COLOURS = ("#c7e9c0", "#74c476", "#3182bd", "#08519c", "#08306b")
DETECT_REGION = (7000, 5000)
DETECT_GRID = (2, 2)
MODES = (Mode.training, Mode.unaided, Mode.aided)
CANDIDATE_SCORE_THRESHOLD = 0.05
PRACTICE_PATCHES = 3
PRACTICE_SEED_OFFSET = 500  # practice phantoms come from other seeds than the (fewer) study patches


@dataclass(frozen=True)
class DemoTask:
    name: str
    kind: TaskKind
    labels: tuple[str, ...]
    colours: tuple[str, ...]
    box_size: int


DEMO_TASKS = (
    DemoTask("BAL cytology (equine asthma)", TaskKind.classify, CLASSIFY_LABELS, CLASSIFY_COLOURS, 60),
    DemoTask("EIPH hemosiderophages", TaskKind.grade, GRADE_LABELS, GRADE_COLOURS, 50),
    DemoTask("Mitotic figures", TaskKind.detect, DETECT_LABELS, ("#e6194b",), 50),
)


DEMO_SIMULATED_EXPERTS = 4
DEMO_TRAINING_TASK = "Mitotic figures"
DEMO_SPEEDUP = 100.0


@dataclass(frozen=True)
class DemoShape:
    """Which tasks the demo builds and how its errors are injected: the default is the paper's study; tests
    build smaller ones (fewer kinds, fewer patches, injection overrides that fit them)."""

    kinds: tuple[str, ...] = tuple(TaskKind)
    injection_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)


async def create_demo(
    settings: Settings,
    seed: int = 0,
    patches: int = 15,
    simulated_experts: int = 0,
    speedup: float = DEMO_SPEEDUP,
    shape: DemoShape | None = None,
) -> list[tuple[str, str, str]]:
    """Create the demo study once, and run it with simulated experts once (`simulated_experts` > 0) so
    that its dashboard has numbers; expert1 and expert2 stay untouched for trying the workspace by hand.
    Every run sets fresh passwords and returns (name, role, password)."""
    credentials = await _create_study(settings, seed, patches, shape or DemoShape())
    if simulated_experts and not await _is_simulated(settings):
        from app.simulation.cli import run_in_process

        await run_in_process(
            settings, DEMO_STUDY, "admin", experts=simulated_experts, speedup=speedup, seed=seed
        )
        if torch_installed():
            await queue_demo_training(settings, seed)
    return credentials


def torch_installed() -> bool:
    return importlib.util.find_spec("torch") is not None


# Small enough for a CPU in minutes: the dashboard's training panel (Figure 2, right) fills in once the
# worker of `concord serve --with-worker` has run these jobs.
DEMO_TRAINING = {
    "modes": ["unaided", "aided"],
    "losses": ["bce", "votes"],
    "sets": "number",
    "repeats": 1,
    "epochs_frozen": 1,
    "epochs_unfrozen": 2,
    "background_per_image": 20,
}


async def queue_demo_training(
    settings: Settings, seed: int, task_name: str = DEMO_TRAINING_TASK
) -> int | None:
    """Queue the paper's training experiment on the demo's mitotic figures (BCE vs VotesLoss, training sets
    of the first 2, 3, … simulated experts per mode), unless one is queued already; its job id or None."""
    from app.jobs import service as jobs
    from app.jobs.repository import list_jobs
    from app.training.schemas import TrainExperimentParams

    engine = make_engine(settings.resolved_database_url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            study = await studies_repository.study_by_name(session, DEMO_STUDY)
            task = await studies_repository.task_by_name(session, study.id, task_name) if study else None
            if study is None or task is None or await list_jobs(session, None, "train_experiment", 1, None):
                return None
            values = {"study_id": study.id, "task_id": task.id, "seed": seed, **DEMO_TRAINING}
            params = TrainExperimentParams.model_validate(values).model_dump(mode="json")
            job = await jobs.enqueue(session, "train_experiment", params, None)
            await session.flush()
            return job.id
    finally:
        await engine.dispose()


async def _is_simulated(settings: Settings) -> bool:
    engine = make_engine(settings.resolved_database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            study = await studies_repository.study_by_name(session, DEMO_STUDY)
            return study is not None and study.simulated
    finally:
        await engine.dispose()


async def _create_study(
    settings: Settings, seed: int, patches: int, shape: DemoShape
) -> list[tuple[str, str, str]]:
    engine = make_engine(settings.resolved_database_url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            credentials = await _reset_users(session, settings)
            if await studies_repository.study_by_name(session, DEMO_STUDY) is None:
                await _build_study(session, settings, seed, patches, shape)
        return credentials
    finally:
        await engine.dispose()


async def _reset_users(session: AsyncSession, settings: Settings) -> list[tuple[str, str, str]]:
    hasher = make_password_hasher(settings.argon2_time_cost, settings.argon2_memory_kib)
    credentials = []
    for name, role in DEMO_USERS:
        password = secrets.token_urlsafe(9)
        user = await accounts_repository.user_by_name(session, name)
        if user is None:
            await accounts.create_user(session, hasher, name, role, password)
        else:
            await accounts.set_password(session, hasher, user, password)
        credentials.append((name, role, password))
    return credentials


async def _build_study(
    session: AsyncSession, settings: Settings, seed: int, patches: int, shape: DemoShape
) -> None:
    study = await studies.create_study(
        session,
        StudyCreate(
            name=DEMO_STUDY,
            description="Phantom images with exact ground truth: practise, annotate unaided, then aided.",
        ),
    )
    experts = await _demo_experts(session)
    detectors = await ensure_builtin_detectors(session, settings)
    for spec in (spec for spec in DEMO_TASKS if spec.kind in shape.kinds):
        task, labels = await studies.create_task(session, study, _task_data(spec))
        images_and_truth = await _add_phantoms(session, settings, task, spec, seed, patches)
        images_and_truth += await _add_practice(session, settings, task, spec, seed)
        _add_ground_truth(session, labels, images_and_truth)
        await session.flush()
        overrides = shape.injection_overrides.get(spec.kind, {})
        shown = await _suggestions_with_errors(session, settings, task, detectors[spec.kind], seed, overrides)
        _assign(session, task, experts, shown.id)
    await session.flush()


async def _demo_experts(session: AsyncSession) -> list[User]:
    found = [
        await accounts_repository.user_by_name(session, name) for name, role in DEMO_USERS if role == "expert"
    ]
    return [user for user in found if user is not None]


async def _suggestions_with_errors(
    session: AsyncSession,
    settings: Settings,
    task: Task,
    detector: DetectorModel,
    seed: int,
    overrides: dict[str, Any],
) -> SuggestionSet:
    """Run the project's detector, then inject errors by the paper's preset for this task kind."""
    threshold = CANDIDATE_SCORE_THRESHOLD if task.kind == TaskKind.detect else None
    name = f"{detector.name} on {task.name}"
    started = utcnow()
    detected = await run_detection(session, settings, task, detector, name=name, score_threshold=threshold)
    session.add(_detect_job_record(task, detector, detected, name, started))
    request = InjectionRequest(preset=f"paper-{task.kind}", overrides={"seed": seed, **overrides})
    injected = await suggestions.inject(session, detected, request)
    shown = await session.get(SuggestionSet, injected.suggestion_set.id)
    assert shown is not None
    return shown


def _detect_job_record(
    task: Task, detector: DetectorModel, detected: SuggestionSet, name: str, started: datetime
) -> Job:
    """The demo runs its detectors in-process; a finished `detect` job records each run on the jobs page."""
    params = DetectParams(task_id=task.id, detector_id=detector.id, name=name)
    return Job(
        kind="detect",
        params=params.model_dump(exclude_none=True),
        status=JobStatus.succeeded,
        progress=1.0,
        message=f"ran {detector.name} on task {task.name} (concord demo)",
        result={
            "suggestion_set_id": detected.id,
            "provider": detected.provider,
            "images_per_second": detected.images_per_second,
            "detector_id": detector.id,
            "model_sha256": detector.sha256,
        },
        attempts=1,
        max_attempts=1,
        created_at=started,
        started_at=started,
        finished_at=utcnow(),
    )


def _task_data(spec: DemoTask) -> TaskCreate:
    return TaskCreate(
        name=spec.name,
        kind=spec.kind,
        default_box_size=spec.box_size,
        labels=[
            LabelIn(name=name, colour=colour) for name, colour in zip(spec.labels, spec.colours, strict=True)
        ],
    )


ImageTruth = list[tuple[Image, Phantom, int, int]]


async def _add_phantoms(
    session: AsyncSession, settings: Settings, task: Task, spec: DemoTask, seed: int, patches: int
) -> ImageTruth:
    """The study images (unaided and aided mode)."""
    if spec.kind == TaskKind.detect:
        phantom = detect_region(seed, *DETECT_REGION)
        return await _add_detect_regions(session, settings, task, phantom, "hpf", ImagePurpose.study)
    seeds = [seed * 1000 + index for index in range(patches)]
    return await _add_patches(session, settings, task, spec, seeds, spec.kind, ImagePurpose.study)


async def _add_practice(
    session: AsyncSession, settings: Settings, task: Task, spec: DemoTask, seed: int
) -> ImageTruth:
    """Practice images of their own (training mode shows their reference), never the study's images."""
    practice_seed = seed * 1000 + PRACTICE_SEED_OFFSET
    if spec.kind == TaskKind.detect:
        columns, rows = DETECT_GRID
        phantom = detect_region(practice_seed, DETECT_REGION[0] // columns, DETECT_REGION[1] // rows)
        name = "practice-hpf"
        return await _add_detect_regions(session, settings, task, phantom, name, ImagePurpose.practice)
    seeds = [practice_seed + index for index in range(PRACTICE_PATCHES)]
    name = f"practice-{spec.kind}"
    return await _add_patches(session, settings, task, spec, seeds, name, ImagePurpose.practice)


async def _add_patches(
    session: AsyncSession,
    settings: Settings,
    task: Task,
    spec: DemoTask,
    seeds: list[int],
    name: str,
    purpose: ImagePurpose,
) -> ImageTruth:
    make: Callable[[int], Phantom] = classify_patch if spec.kind == TaskKind.classify else grade_patch
    phantoms = [make(phantom_seed) for phantom_seed in seeds]
    items = [
        NewImage(name=f"{name}-{index + 1:02d}.png", stream=io.BytesIO(_png(phantom.image)), purpose=purpose)
        for index, phantom in enumerate(phantoms)
    ]
    images = await add_images(session, settings, task, items)
    return [(image, phantom, 0, 0) for image, phantom in zip(images, phantoms, strict=True)]


async def _add_detect_regions(
    session: AsyncSession, settings: Settings, task: Task, phantom: Phantom, name: str, purpose: ImagePurpose
) -> ImageTruth:
    """The phantom region as one pyramidal TIFF, added as a grid of high-power fields of the demo's size."""
    height, width = phantom.image.shape[:2]
    part_w, part_h = DETECT_REGION[0] // DETECT_GRID[0], DETECT_REGION[1] // DETECT_GRID[1]
    windows = [
        Window(col * part_w, row * part_h, part_w, part_h)
        for row in range(height // part_h)
        for col in range(width // part_w)
    ]
    with tempfile.TemporaryDirectory() as folder, ExitStack() as streams:
        path = Path(folder) / "region.tif"
        write_pyramidal_tiff(path, phantom.image, mpp=0.25)
        items = [
            NewImage(
                name=f"{name}-{index + 1:02d}",
                stream=streams.enter_context(path.open("rb")),
                window=window,
                microns_per_pixel=0.25,
                purpose=purpose,
            )
            for index, window in enumerate(windows)
        ]
        images = await add_images(session, settings, task, items)
    return [(image, phantom, window.x, window.y) for image, window in zip(images, windows, strict=True)]


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def _add_ground_truth(session: AsyncSession, labels: list[Label], images_and_truth: ImageTruth) -> None:
    by_name = {label.name: label for label in labels}
    for image, phantom, offset_x, offset_y in images_and_truth:
        position = 0
        for obj in phantom.objects:
            x1, y1 = obj.x1 - offset_x, obj.y1 - offset_y
            x2, y2 = obj.x2 - offset_x, obj.y2 - offset_y
            if x1 < 0 or y1 < 0 or x2 > image.width or y2 > image.height:
                continue
            session.add(
                GroundTruthObject(
                    image_id=image.id,
                    label_id=by_name[obj.label].id,
                    x1=x1,
                    y1=y1,
                    x2=x2,
                    y2=y2,
                    difficulty=obj.difficulty,
                    position=position,
                )
            )
            position += 1


def _assign(session: AsyncSession, task: Task, experts: list[User], suggestion_set_id: int) -> None:
    for expert in experts:
        for mode in MODES:
            shown = suggestion_set_id if mode == Mode.aided else None
            session.add(Assignment(task_id=task.id, expert_id=expert.id, mode=mode, suggestion_set_id=shown))


__all__ = ["DEMO_STUDY", "Study", "create_demo"]
