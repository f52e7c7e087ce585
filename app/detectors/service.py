"""Detector registry rules and detection runs.

A detector is stored once by the sha256 of its ONNX bytes, as the object ``models/<sha256>.onnx`` of the
store (``app.storage``: ``<data_dir>/models/``, or a bucket every API replica and worker shares), with its
validated sidecar in a ``DetectorModel`` row. A detection run reads every image of a task lazily, tile by
tile, runs the model (CUDA when available, else CPU) and writes an immutable suggestion set (source
``detector``) that records the provider used and the throughput in images per second.

Model loading and inference are blocking; they run in a thread (``anyio.to_thread``) so the event loop
and the database session stay free. ONNX Runtime is imported only inside those functions.
"""

import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from anyio import to_thread
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.detectors import repository
from app.detectors.contract import DetectorRejected, DetectorSidecar, ValidatedDetector, parse_sidecar
from app.detectors.inference import (
    Detection,
    ImageInput,
    Tile,
    detect_images,
    make_session,
    plan_tiles,
)
from app.detectors.schemas import DetectRequest
from app.errors import Conflict, Invalid, NotFound
from app.images import rawcache
from app.images import repository as images_repository
from app.images.service import file_of
from app.images.tiles import ImageSource, RegionView, Window
from app.images.validation import sniff_format
from app.jobs import service as jobs_service
from app.jobs.registry import ProgressReporter
from app.models import DetectorModel, Image, Job, SuggestionSet, Task, TaskKind, User
from app.storage import store_of
from app.studies import repository as studies_repository
from app.suggestions import service as suggestions_service
from app.suggestions.schemas import SuggestionIn

logger = logging.getLogger(__name__)

BUILTIN_DIR = Path(__file__).resolve().parents[1] / "detector_models"
BUILTIN_KINDS = tuple(TaskKind)
DEFAULT_BATCH_SIZE = 8
MIN_BOX_SIDE = 1.0


# --- registry --------------------------------------------------------------------------------------


def model_key(sha256: str) -> str:
    return f"models/{sha256}.onnx"


def model_path(settings: Settings, sha256: str) -> Path:
    """Where this machine keeps the ONNX file of a detector: ``<data_dir>/models/<sha256>.onnx``, or
    with a bucket its local copy (``<data_dir>/cache/models/...``), which may not be there yet."""
    return store_of(settings).local_path(model_key(sha256))


def sidecar_from_text(text: str | bytes) -> dict[str, Any]:
    """The sidecar JSON object, or 422 naming what is wrong with it."""
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise Invalid(f"bad sidecar: not valid JSON ({error})") from error
    if not isinstance(document, dict):
        raise Invalid(f"bad sidecar: expected a JSON object, got {type(document).__name__}")
    return document


def check_model(model_bytes: bytes, sidecar: dict[str, Any]) -> ValidatedDetector:
    """Run the detector contract's checks (ONNX Runtime on CPU, one tile); a broken rule answers 422."""
    from app.detectors.contract import validate_detector

    if not model_bytes:
        raise Invalid("bad model: the uploaded model file is empty")
    try:
        return validate_detector(model_bytes, sidecar)
    except DetectorRejected as error:
        raise Invalid(error.reason) from error


def _store_model_file(settings: Settings, sha256: str, model_bytes: bytes) -> bool:
    """Store the file (atomically) unless an intact copy is already there; True when it was written."""
    store = store_of(settings)
    if store.size(model_key(sha256)) == len(model_bytes):
        return False
    store.put_bytes(model_key(sha256), model_bytes)
    return True


async def register_detector(
    session: AsyncSession,
    settings: Settings,
    model_bytes: bytes,
    sidecar: dict[str, Any],
    name: str | None = None,
) -> tuple[DetectorModel, bool]:
    """Validate and store a detector; returns (row, created). The same model bytes twice give the first row."""
    validated = await to_thread.run_sync(check_model, model_bytes, sidecar)
    written = await to_thread.run_sync(_store_model_file, settings, validated.sha256, model_bytes)
    existing = await repository.detector_by_sha256(session, validated.sha256)
    if existing is not None:
        return existing, False
    row = DetectorModel(
        name=(name or validated.sidecar.name)[:200],
        sha256=validated.sha256,
        sidecar=validated.sidecar.model_dump(mode="json"),
    )
    try:
        async with session.begin_nested():
            return await repository.add_detector(session, row), True
    except IntegrityError:
        # A concurrent upload of the same bytes committed first: its row is the answer, its file is ours.
        winner = await repository.detector_by_sha256(session, validated.sha256)
        if winner is None:
            raise
        return winner, False
    except BaseException:
        if written:
            await to_thread.run_sync(store_of(settings).delete, model_key(validated.sha256))
        raise


async def ensure_builtin_detectors(session: AsyncSession, settings: Settings) -> dict[str, DetectorModel]:
    """Register the detectors shipped in ``app/detector_models`` (once each); returns them by task kind."""
    registered: dict[str, DetectorModel] = {}
    for kind in BUILTIN_KINDS:
        model_bytes = (BUILTIN_DIR / f"{kind}.onnx").read_bytes()
        sidecar = sidecar_from_text((BUILTIN_DIR / f"{kind}.json").read_text(encoding="utf-8"))
        registered[kind], _ = await register_detector(session, settings, model_bytes, sidecar)
    return registered


async def get_detector(session: AsyncSession, detector_id: int) -> DetectorModel:
    detector = await repository.detector_by_id(session, detector_id)
    if detector is None:
        raise NotFound(f"no detector {detector_id}")
    return detector


async def list_detectors(session: AsyncSession) -> Sequence[DetectorModel]:
    return await repository.all_detectors(session)


# --- fitting a detector to a task ------------------------------------------------------------------


async def fitting_sidecar(session: AsyncSession, task: Task, detector: DetectorModel) -> DetectorSidecar:
    """The detector's sidecar, if its label_map maps onto labels of the task; else 422 saying which don't."""
    labels = [label.name for label in await studies_repository.labels_of_task(session, task.id)]
    try:
        return parse_sidecar(detector.sidecar, labels)
    except DetectorRejected as error:
        raise Invalid(
            f"detector {detector.id} ({detector.name}) does not fit task {task.id} ({task.name}): "
            f"{error.reason}; task labels: {', '.join(labels)}"
        ) from error


def stored_model(settings: Settings, detector: DetectorModel) -> Path:
    """Blocking: the detector's ONNX file here (copied from the bucket on first use), or 409 when the
    store lacks it."""
    try:
        return store_of(settings).local_file(model_key(detector.sha256))
    except FileNotFoundError as error:
        raise _model_missing(settings, detector) from error


def check_model_stored(settings: Settings, detector: DetectorModel) -> None:
    """Blocking: 409 unless the store holds the detector's ONNX file (nothing is downloaded)."""
    if not store_of(settings).exists(model_key(detector.sha256)):
        raise _model_missing(settings, detector)


def _model_missing(settings: Settings, detector: DetectorModel) -> Conflict:
    where = store_of(settings).url
    return Conflict(
        f"the model file of detector {detector.id} is missing from the store ({where}); upload it again"
    )


async def start_detection(
    session: AsyncSession, settings: Settings, task: Task, request: DetectRequest, user: User
) -> Job:
    """Check that the detector fits the task, then queue a ``detect`` job."""
    detector = await get_detector(session, request.detector_id)
    await fitting_sidecar(session, task, detector)
    await to_thread.run_sync(check_model_stored, settings, detector)
    if not await images_repository.images_of_task(session, task.id):
        raise Invalid(f"task {task.id} has no images to run a detector on")
    params: dict[str, Any] = {"task_id": task.id, "detector_id": detector.id}
    if request.batch_size is not None:
        params["batch_size"] = request.batch_size
    if request.name is not None:
        params["name"] = request.name
    return await jobs_service.enqueue(session, "detect", params, user.id)


# --- detection runs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageTarget:
    """One image to run on: its stored file, the window of the file it is (None: whole file), its size,
    and the file's raw level-0 cache when it has one (see ``app.images.rawcache``)."""

    name: str
    path: Path
    window: Window | None
    width: int
    height: int
    raw: Path | None = None
    file_format: str | None = None


@dataclass(frozen=True)
class DetectionRun:
    """What a run found and how: suggestions in task labels, provider, throughput over inference."""

    items: list[SuggestionIn]
    provider: str
    images_per_second: float
    tiles: int


def targets_of(settings: Settings, images: Sequence[Image]) -> list[ImageTarget]:
    targets = []
    for image in images:
        path, window = file_of(settings, image)
        raw = rawcache.existing_raw_cache(settings, image.sha256)
        targets.append(
            ImageTarget(image.name, path, window, image.width, image.height, raw, image.file_format)
        )
    return targets


def ensure_raw_caches(settings: Settings, images: Sequence[Image]) -> None:
    """Blocking: build the raw caches that files stored before they existed lack; a failure is logged
    and the file is read as it is."""
    for image in images:
        try:
            rawcache.ensure_raw_cache(settings, image)
        except (OSError, ValueError, RuntimeError) as error:
            logger.warning("no raw cache for image %s (%s): %s", image.id, image.name, error)


@dataclass(frozen=True)
class DetectionInputs:
    """What a detection run reads from the database, in one short transaction, before it infers with
    none open: the detector (a detached row), its sidecar fitted to the task, its stored model file and
    the task's images (detached rows). The model file is fetched from the store when the run infers."""

    task_id: int
    task_name: str
    detector: DetectorModel
    sidecar: DetectorSidecar
    images: Sequence[Image]


async def read_detection_inputs(
    session: AsyncSession,
    settings: Settings,
    task: Task,
    detector: DetectorModel,
    score_threshold: float | None = None,
) -> DetectionInputs:
    """Everything a run needs from the database; a task without images answers 422.

    A lower ``score_threshold`` than the sidecar's keeps weak candidates, which the detect protocol
    draws its false positives from (the paper's easy fakes score p ≤ 0.2).
    """
    sidecar = await fitting_sidecar(session, task, detector)
    if score_threshold is not None:
        sidecar = sidecar.model_copy(update={"score_threshold": score_threshold})
    await to_thread.run_sync(check_model_stored, settings, detector)
    images = await images_repository.images_of_task(session, task.id)
    if not images:
        raise Invalid(f"task {task.id} has no images to run a detector on")
    return DetectionInputs(task.id, task.name, detector, sidecar, images)


def infer(
    settings: Settings,
    inputs: DetectionInputs,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: ProgressReporter | None = None,
    prefer_cuda: bool = True,
) -> DetectionRun:
    """Blocking, without the database: fetch the model, build missing raw caches, detect on every image."""
    model = stored_model(settings, inputs.detector)
    ensure_raw_caches(settings, inputs.images)
    targets = targets_of(settings, inputs.images)
    return detect_all(model, inputs.sidecar, targets, batch_size, progress, prefer_cuda)


async def store_detection(
    session: AsyncSession,
    inputs: DetectionInputs,
    run: DetectionRun,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    name: str | None = None,
) -> SuggestionSet:
    """Write a run's suggestions as a new set of its task (404 when the task went away meanwhile)."""
    task = await studies_repository.task_by_id(session, inputs.task_id)
    if task is None:
        raise NotFound(f"no task {inputs.task_id}")
    detector = inputs.detector
    return await suggestions_service.create_suggestion_set(
        session,
        task,
        (name or f"{detector.name} on {task.name}")[:200],
        "detector",
        run.items,
        detector_model_id=detector.id,
        provider=run.provider,
        images_per_second=run.images_per_second,
        notes=(
            f"model sha256 {detector.sha256}; {len(inputs.images)} images, {run.tiles} tiles, batch {batch_size}"
        ),
    )


async def run_detection(
    session: AsyncSession,
    settings: Settings,
    task: Task,
    detector: DetectorModel,
    progress: ProgressReporter | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    name: str | None = None,
    prefer_cuda: bool = True,
    score_threshold: float | None = None,
) -> SuggestionSet:
    """Read, infer and store in the caller's session: for in-process runs (the demo, benchmarks).

    The `detect` job calls the three steps itself, so that no transaction stays open while it infers.
    """
    inputs = await read_detection_inputs(session, settings, task, detector, score_threshold)
    run = await to_thread.run_sync(lambda: infer(settings, inputs, batch_size, progress, prefer_cuda))
    return await store_detection(session, inputs, run, batch_size=batch_size, name=name)


def detect_all(
    model: Path,
    sidecar: DetectorSidecar,
    targets: Sequence[ImageTarget],
    batch_size: int,
    progress: ProgressReporter | None = None,
    prefer_cuda: bool = True,
) -> DetectionRun:
    """Blocking: open the model once and detect on every image; times the loop, not the model load.

    The loop is ``inference.detect_images``: reader threads read and normalise the next batches while
    the model runs on cores left to it, and the boxes are those ``inference.detect_image`` finds.
    """
    session, provider = make_session(model, prefer_cuda)
    collected = _Suggestions(targets, progress)
    with _ThreadSources() as sources:
        images = [sources.input_of(target) for target in targets]
        started = time.perf_counter()
        detect_images(session, sidecar, images, batch_size, collected.add)
        elapsed = max(time.perf_counter() - started, 1e-9)
    tiles = sum(len(_plan(target, sidecar)) for target in targets)
    return DetectionRun(collected.items, provider, len(targets) / elapsed, tiles)


def _plan(target: ImageTarget, sidecar: DetectorSidecar) -> list[Tile]:
    return plan_tiles(target.width, target.height, sidecar.tile_size, sidecar.tile_overlap)


class _Suggestions:
    """Turns each image's detections into suggestions as the image finishes, and reports progress."""

    def __init__(self, targets: Sequence[ImageTarget], progress: ProgressReporter | None) -> None:
        self._targets, self._progress = targets, progress
        self._done = 0
        self.items: list[SuggestionIn] = []

    def add(self, index: int, found: list[Detection]) -> None:
        target = self._targets[index]
        kept = [item for item in (_suggestion(target, one) for one in found) if item is not None]
        self.items.extend(kept)
        self._done += 1
        if self._progress is not None:
            total = len(self._targets)
            self._progress(
                self._done / total, f"image {self._done} of {total} ({target.name}): {len(kept)} detections"
            )


class _ThreadSources:
    """Region readers for the pipeline's reader threads, all closed on exit.

    Level 0 comes from the file's raw cache when it has one (a memory copy), so each thread opens its own
    ``ImageSource`` on it; so does a TIFF, which is decoded tile by tile on each read, and threads never
    queue on one source's lock. A PNG or JPEG without a cache is decoded whole on its first read, so all
    threads share one source and it is decoded once.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._shared: dict[Path, ImageSource] = {}
        self._opened: list[ImageSource] = []

    def __enter__(self) -> "_ThreadSources":
        return self

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            for source in self._opened:
                source.close()
            self._opened.clear()

    def input_of(self, target: ImageTarget) -> ImageInput:
        per_thread = target.raw is not None or (target.file_format or sniff_format(target.path)) == "tiff"

        def read_region(x: int, y: int, width: int, height: int) -> np.ndarray:
            source = self._own(target) if per_thread else self._common(target)
            view = source if target.window is None else RegionView(source, target.window)
            return view.read_region(0, x, y, width, height)

        return ImageInput(target.width, target.height, read_region)

    def _own(self, target: ImageTarget) -> ImageSource:
        sources: dict[Path, ImageSource] = self._local.__dict__.setdefault("sources", {})
        if target.path not in sources:
            sources[target.path] = self._open(target)
        return sources[target.path]

    def _common(self, target: ImageTarget) -> ImageSource:
        with self._lock:
            if target.path not in self._shared:
                self._shared[target.path] = ImageSource(target.path, target.raw)
                self._opened.append(self._shared[target.path])
            return self._shared[target.path]

    def _open(self, target: ImageTarget) -> ImageSource:
        source = ImageSource(target.path, target.raw)
        with self._lock:
            self._opened.append(source)
        return source


def _suggestion(target: ImageTarget, found: Detection) -> SuggestionIn | None:
    """A detection as a suggestion inside its image; boxes thinner than a pixel after clipping are dropped."""
    x1, y1 = max(0.0, found.x1), max(0.0, found.y1)
    x2, y2 = min(float(target.width), found.x2), min(float(target.height), found.y2)
    if x2 - x1 < MIN_BOX_SIDE or y2 - y1 < MIN_BOX_SIDE:
        return None
    score = min(max(float(found.score), 0.0), 1.0)
    return SuggestionIn(image=target.name, label=found.label, x1=x1, y1=y1, x2=x2, y2=y2, score=score)
