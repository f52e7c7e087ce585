"""Detector registry rules and detection runs.

A detector is stored once by the sha256 of its ONNX bytes, as ``<model_dir>/<sha256>.onnx``, with its
validated sidecar in a ``DetectorModel`` row. A detection run reads every image of a task lazily, tile by
tile, runs the model (CUDA when available, else CPU) and writes an immutable suggestion set (source
``detector``) that records the provider used and the throughput in images per second.

Model loading and inference are blocking; they run in a thread (``anyio.to_thread``) so the event loop
and the database session stay free. ONNX Runtime is imported only inside those functions.
"""

import json
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from anyio import to_thread
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.detectors import repository
from app.detectors.schemas import DetectRequest
from app.errors import Conflict, Invalid, NotFound
from app.images import repository as images_repository
from app.images.service import file_of
from app.images.tiles import Window
from app.jobs import service as jobs_service
from app.jobs.registry import ProgressReporter
from app.models import DetectorModel, Image, Job, SuggestionSet, Task, User
from app.studies import repository as studies_repository
from app.suggestions import service as suggestions_service
from app.suggestions.contract import DetectorRejected, DetectorSidecar, ValidatedDetector, parse_sidecar
from app.suggestions.schemas import SuggestionIn

BUILTIN_DIR = Path(__file__).resolve().parents[1] / "detector_models"
BUILTIN_KINDS = ("classify", "grade", "detect")
DEFAULT_BATCH_SIZE = 8
MIN_BOX_SIDE = 1.0


# --- registry --------------------------------------------------------------------------------------


def model_path(settings: Settings, sha256: str) -> Path:
    """Where the ONNX file of a detector lives: ``<data_dir>/models/<sha256>.onnx``."""
    return settings.model_dir / f"{sha256}.onnx"


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
    from app.suggestions.contract import validate_detector

    if not model_bytes:
        raise Invalid("bad model: the uploaded model file is empty")
    try:
        return validate_detector(model_bytes, sidecar)
    except DetectorRejected as error:
        raise Invalid(error.reason) from error


def _store_model_file(settings: Settings, sha256: str, model_bytes: bytes) -> bool:
    """Write the file atomically unless an intact copy is already there; True when it was written."""
    path = model_path(settings, sha256)
    if path.exists() and path.stat().st_size == len(model_bytes):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".upload-", delete=False) as handle:
        handle.write(model_bytes)
        temporary = Path(handle.name)
    os.replace(temporary, path)
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
        return await repository.add_detector(session, row), True
    except BaseException:
        if written:
            model_path(settings, validated.sha256).unlink(missing_ok=True)
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
    """The detector's ONNX file, or 409 when it is missing from this machine's model directory."""
    path = model_path(settings, detector.sha256)
    if not path.is_file():
        raise Conflict(f"the model file of detector {detector.id} is missing here ({path}); upload it again")
    return path


async def start_detection(
    session: AsyncSession, settings: Settings, task: Task, request: DetectRequest, user: User
) -> Job:
    """Check that the detector fits the task, then queue a ``detect`` job."""
    detector = await get_detector(session, request.detector_id)
    await fitting_sidecar(session, task, detector)
    stored_model(settings, detector)
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
    """One image to run on: its stored file, the window of the file it is (None: whole file), its size."""

    name: str
    path: Path
    window: Window | None
    width: int
    height: int


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
        targets.append(ImageTarget(image.name, path, window, image.width, image.height))
    return targets


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
    """Run the detector over every image of the task and store the result as a suggestion set.

    A lower ``score_threshold`` than the sidecar's keeps weak candidates, which the detect protocol
    draws its false positives from (the paper's easy fakes score p ≤ 0.2).
    """
    sidecar = await fitting_sidecar(session, task, detector)
    if score_threshold is not None:
        sidecar = sidecar.model_copy(update={"score_threshold": score_threshold})
    path = stored_model(settings, detector)
    targets = targets_of(settings, await images_repository.images_of_task(session, task.id))
    if not targets:
        raise Invalid(f"task {task.id} has no images to run a detector on")
    run = await to_thread.run_sync(
        lambda: detect_all(path, sidecar, targets, batch_size, progress, prefer_cuda)
    )
    return await suggestions_service.create_suggestion_set(
        session,
        task,
        (name or f"{detector.name} on {task.name}")[:200],
        "detector",
        run.items,
        detector_model_id=detector.id,
        provider=run.provider,
        images_per_second=run.images_per_second,
        notes=f"model sha256 {detector.sha256}; {len(targets)} images, {run.tiles} tiles, batch {batch_size}",
    )


def detect_all(
    model: Path,
    sidecar: DetectorSidecar,
    targets: Sequence[ImageTarget],
    batch_size: int,
    progress: ProgressReporter | None = None,
    prefer_cuda: bool = True,
) -> DetectionRun:
    """Blocking: open the model once and detect on every image; times the loop, not the model load.

    A reader thread reads each batch's pixels (one read per row of tiles), normalises them into the
    model's input and queues them, while this thread runs the model on the previous batch; batches fill
    across images, so small patches share a batch. Per tile and per image the steps are those of
    ``inference.detect_image`` (same tiles, cores, thresholds and NMS), so the boxes are the same.
    """
    from app.suggestions.inference import make_session

    session, provider = make_session(model, prefer_cuda)
    plans = [_plan(target, sidecar) for target in targets]
    collector = _Collector(targets, plans, sidecar, progress)
    started = time.perf_counter()
    with _BatchReader(targets, plans, sidecar, batch_size) as reader:
        run = _runner(session)
        for batch in reader:
            collector.add(batch, run(batch.pixels))
    elapsed = max(time.perf_counter() - started, 1e-9)
    tiles = sum(len(plan) for plan in plans)
    return DetectionRun(collector.items, provider, len(targets) / elapsed, tiles)


def _plan(target: ImageTarget, sidecar: DetectorSidecar) -> list[Any]:
    from app.suggestions.inference import plan_tiles

    return plan_tiles(target.width, target.height, sidecar.tile_size, sidecar.tile_overlap)


def _runner(session: Any) -> Any:
    from app.suggestions.inference import run_batch, run_batch_per_image

    fixed_batch = session.get_inputs()[0].shape[0] == 1
    return (
        (lambda images: run_batch_per_image(session, images))
        if fixed_batch
        else (lambda images: run_batch(session, images))
    )


def normalisation_table(sidecar: DetectorSidecar) -> np.ndarray:
    """(3, 256) float32: row c maps a uint8 value of the model's channel c to (value / 255 − mean) / std.

    Computed with the same float32 operations as ``inference.preprocess``, so a lookup gives the same bits.
    """
    values = np.arange(256, dtype=np.float32)[None, :] / 255.0
    mean = np.asarray(sidecar.mean, dtype=np.float32)[:, None]
    std = np.asarray(sidecar.std, dtype=np.float32)[:, None]
    table: np.ndarray = ((values - mean) / std).astype(np.float32)
    return table


def fill_input(out: np.ndarray, pixels: np.ndarray, table: np.ndarray, sidecar: DetectorSidecar) -> None:
    """Write one (h, w, 3) uint8 RGB tile into ``out`` (3, S, S) as the model input, padded with pad_value."""
    size = sidecar.input_size
    height, width = min(pixels.shape[0], size), min(pixels.shape[1], size)
    order = (2, 1, 0) if sidecar.channel_order == "BGR" else (0, 1, 2)
    for channel, source in enumerate(order):
        if height < size or width < size:
            out[channel].fill(table[channel, sidecar.pad_value])
        out[channel, :height, :width] = table[channel][pixels[:height, :width, source]]


@dataclass
class _Batch:
    owners: list[int]
    tiles: list[Any]
    pixels: np.ndarray


_DONE = object()


class _BatchReader:
    """Iterates over model-ready batches, produced by a background thread a few batches ahead."""

    def __init__(
        self,
        targets: Sequence[ImageTarget],
        plans: Sequence[Sequence[Any]],
        sidecar: DetectorSidecar,
        batch_size: int,
        ahead: int = 2,
    ) -> None:
        import queue
        import threading

        self._targets, self._plans, self._sidecar = targets, plans, sidecar
        self._batch_size = max(1, batch_size)
        self._table = normalisation_table(sidecar)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=ahead)
        self._stop = threading.Event()
        self._sources: dict[Path, Any] = {}
        self._thread = threading.Thread(target=self._produce, name="detect-reader", daemon=True)

    def __enter__(self) -> "_BatchReader":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        while self._thread.is_alive():
            self._drain()
            self._thread.join(timeout=0.05)
        for source in self._sources.values():
            source.close()

    def _drain(self) -> None:
        import queue

        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            return

    def __iter__(self) -> Any:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _put(self, item: object) -> bool:
        import queue

        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            for owners, tiles in self._groups():
                if not self._put(self._read(owners, tiles)):
                    return
            self._put(_DONE)
        except BaseException as error:  # handed to the consuming thread, which raises it
            self._put(error)

    def _groups(self) -> Any:
        owners: list[int] = []
        tiles: list[Any] = []
        for index, plan in enumerate(self._plans):
            for tile in plan:
                owners.append(index)
                tiles.append(tile)
                if len(tiles) == self._batch_size:
                    yield owners, tiles
                    owners, tiles = [], []
        if tiles:
            yield owners, tiles

    def _read(self, owners: list[int], tiles: list[Any]) -> _Batch:
        size = self._sidecar.input_size
        pixels = np.empty((len(tiles), 3, size, size), dtype=np.float32)
        start = 0
        while start < len(tiles):
            stop = start + 1
            while stop < len(tiles) and owners[stop] == owners[start] and tiles[stop].y == tiles[start].y:
                stop += 1
            self._read_row(owners[start], tiles[start:stop], pixels[start:stop])
            start = stop
        return _Batch(owners, tiles, pixels)

    def _read_row(self, owner: int, tiles: Sequence[Any], out: np.ndarray) -> None:
        """One read for tiles side by side in one row of one image, then a slice per tile."""
        left = tiles[0].x
        right = max(tile.x + tile.width for tile in tiles)
        top, height = tiles[0].y, max(tile.height for tile in tiles)
        block = self._view(owner).read_region(0, left, top, right - left, height)
        for slot, tile in enumerate(tiles):
            piece = block[: tile.height, tile.x - left : tile.x - left + tile.width]
            fill_input(out[slot], piece, self._table, self._sidecar)

    def _view(self, owner: int) -> Any:
        from app.images.tiles import ImageSource, RegionView

        target = self._targets[owner]
        source = self._sources.get(target.path)
        if source is None:
            source = self._sources[target.path] = ImageSource(target.path)
        return source if target.window is None else RegionView(source, target.window)


class _Collector:
    """Per-tile decoding as tiles come back; an image's boxes are merged when its last tile is in."""

    def __init__(
        self,
        targets: Sequence[ImageTarget],
        plans: Sequence[Sequence[Any]],
        sidecar: DetectorSidecar,
        progress: ProgressReporter | None,
    ) -> None:
        self._targets, self._sidecar, self._progress = targets, sidecar, progress
        self._left = [len(plan) for plan in plans]
        self._found: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in targets]
        self._done = 0
        self.items: list[SuggestionIn] = []

    def add(self, batch: _Batch, outputs: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        from app.suggestions.inference import tile_detections

        boxes, scores, labels = outputs
        for slot, (owner, tile) in enumerate(zip(batch.owners, batch.tiles, strict=True)):
            threshold = self._sidecar.score_threshold
            self._found[owner].append(
                tile_detections(boxes[slot], scores[slot], labels[slot], tile, threshold)
            )
            self._left[owner] -= 1
            if self._left[owner] == 0:
                self._finish(owner)

    def _finish(self, owner: int) -> None:
        from app.suggestions.inference import merge_detections

        target = self._targets[owner]
        found = merge_detections(self._found[owner], self._sidecar, target.width, target.height)
        self._found[owner] = []
        kept = [item for item in (_suggestion(target, one) for one in found) if item is not None]
        self.items.extend(kept)
        self._done += 1
        if self._progress is not None:
            total = len(self._targets)
            self._progress(
                self._done / total, f"image {self._done} of {total} ({target.name}): {len(kept)} detections"
            )


def _suggestion(target: ImageTarget, found: Any) -> SuggestionIn | None:
    """A detection as a suggestion inside its image; boxes thinner than a pixel after clipping are dropped."""
    x1, y1 = max(0.0, found.x1), max(0.0, found.y1)
    x2, y2 = min(float(target.width), found.x2), min(float(target.height), found.y2)
    if x2 - x1 < MIN_BOX_SIDE or y2 - y1 < MIN_BOX_SIDE:
        return None
    score = min(max(float(found.score), 0.0), 1.0)
    return SuggestionIn(image=target.name, label=found.label, x1=x1, y1=y1, x2=x2, y2=y2, score=score)
