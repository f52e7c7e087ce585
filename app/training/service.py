"""Business rules of training: which experts a set names, which patches train and validate, run records.

Positives are the chosen experts' cells (non-maximum suppression over their boxes, `nms_votes`) on the
training images, with their votes. Negatives are detector candidates (every suggestion of the task) that
no chosen expert annotated, and background points away from every known object. Validation uses the
held-out images (the last `validation_images` share by position): ground-truth objects are positives,
candidates that match no ground truth and background points are negatives. Background points are drawn
from a generator seeded by the task alone, so every repeat and loss of a set reads the same patches.
Services flush, never commit.
"""

import csv
import hashlib
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.errors import Invalid, NotFound
from app.evaluation.metrics import iou_matrix, nms_votes
from app.images import repository as images_repository
from app.images.service import file_of
from app.models import Image, Task, TaskKind, TrainingRun
from app.storage import store_of
from app.training import repository
from app.training.schemas import FIRST_K, TrainExperimentParams, TrainParams, TrainSettings

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
BACKGROUND_TRIES = 50


@dataclass(frozen=True)
class ImageFile:
    """Where an image's pixels are: the stored file and the image's window inside it (level-0 px)."""

    path: str
    offset_x: int
    offset_y: int
    width: int
    height: int
    sha256: str


@dataclass(frozen=True)
class Samples:
    """Patch centres (N, 2) in image px, image index (N,) into TrainingSet.images, label (N,), votes (N,)."""

    centres: FloatArray
    image_index: IntArray
    positive: BoolArray
    votes: IntArray

    def __len__(self) -> int:
        return len(self.positive)


@dataclass(frozen=True)
class TrainingSet:
    images: list[ImageFile]
    experts: list[str]
    set_name: str
    train: Samples
    validation: Samples
    patch_size: int

    @property
    def cache_key(self) -> str:
        """SHA-256 of everything the patches depend on: files, windows, centres and the patch size."""
        digest = hashlib.sha256(str(self.patch_size).encode())
        for image in self.images:
            digest.update(f"{image.sha256}:{image.offset_x}:{image.offset_y}".encode())
        for samples in (self.train, self.validation):
            digest.update(np.ascontiguousarray(samples.centres).tobytes())
            digest.update(np.ascontiguousarray(samples.image_index).tobytes())
        return digest.hexdigest()


def natural_key(name: str) -> list[Any]:
    """Sort key: digit runs compare as numbers ("P2" before "P10")."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def choose_experts(available: Sequence[str], selection: str | list[str]) -> list[str]:
    """Resolve "all", "first:K" or a list of names against the experts who annotated (natural name order)."""
    ordered = sorted(available, key=natural_key)
    if isinstance(selection, list):
        unknown = [name for name in selection if name not in available]
        if unknown:
            raise Invalid(f"no objects of expert(s) {', '.join(unknown)} in this task and mode")
        return list(selection)
    if selection == "all":
        chosen = ordered
    else:
        match = FIRST_K.match(selection)
        assert match is not None, "TrainParams validated the selection"
        count = int(match.group(1))
        if count > len(ordered):
            raise Invalid(f"{selection} asks for {count} experts; only {len(ordered)} annotated in this mode")
        chosen = ordered[:count]
    if not chosen:
        raise Invalid("no expert annotated this task in this mode")
    return chosen


def set_name(selection: str | list[str]) -> str:
    return selection if isinstance(selection, str) else ",".join(selection)


async def load_task(session: AsyncSession, study_id: int, task_id: int) -> Task:
    task = await session.get(Task, task_id)
    if task is None or task.study_id != study_id:
        raise NotFound(f"no task {task_id} in study {study_id}")
    if task.kind != TaskKind.detect:
        raise Invalid(
            f"training needs a detect task (patch classification); task {task.name!r} is {task.kind}"
        )
    return task


async def training_set(session: AsyncSession, settings: Settings, params: TrainParams) -> TrainingSet:
    """Read the task and build the samples of one training set (see the module text)."""
    task = await load_task(session, params.study_id, params.task_id)
    images = list(await images_repository.images_of_task(session, task.id))
    if len(images) < 2:
        raise Invalid("training needs at least two images: one to train on, one held out for validation")
    experts_by_name = await repository.annotating_experts(session, task.id, params.mode)
    chosen = choose_experts(list(experts_by_name), params.experts)
    expert_rows = await repository.expert_boxes(
        session, task.id, params.mode, [experts_by_name[n] for n in chosen]
    )
    candidate_rows = await repository.candidate_boxes(session, task.id)
    truth_rows = await repository.ground_truth_boxes(session, task.id)
    split = split_images(len(images), params.validation_images)
    arrays = (
        _BoxArrays.of(images, expert_rows),
        _BoxArrays.of(images, candidate_rows),
        _BoxArrays.of(images, truth_rows),
    )
    train, validation = build_samples(*arrays, images_sizes(images), split, params)
    if not validation.positive.any():
        raise Invalid("no ground truth on the held-out images: validation needs it")
    if not train.positive.any():
        raise Invalid("the chosen experts have no objects on the training images")
    return TrainingSet(
        [_image_file(settings, image) for image in images],
        chosen,
        set_name(params.experts),
        train,
        validation,
        params.patch_size,
    )


def split_images(count: int, validation_share: float) -> BoolArray:
    """True for the held-out images: the last max(1, round(share · count)) by position (at least one trains)."""
    held_out = min(max(1, round(validation_share * count)), count - 1)
    mask = np.zeros(count, dtype=bool)
    mask[count - held_out :] = True
    return mask


def images_sizes(images: Sequence[Image]) -> IntArray:
    return np.array([[image.width, image.height] for image in images], dtype=np.int64).reshape(-1, 2)


@dataclass(frozen=True)
class _BoxArrays:
    """Boxes (N, 4), image index (N,) into the task's ordered images, and a group id (N,) (expert, set, label)."""

    boxes: FloatArray
    image_index: IntArray
    group: IntArray

    @classmethod
    def of(cls, images: Sequence[Image], rows: Sequence[Sequence[Any]]) -> "_BoxArrays":
        index_of = {image.id: index for index, image in enumerate(images)}
        table = np.array([tuple(row) for row in rows], dtype=np.float64).reshape(-1, 6)
        image_index = np.array([index_of[int(image_id)] for image_id in table[:, 0]], dtype=np.int64)
        return cls(table[:, 2:6], image_index, table[:, 1].astype(np.int64))

    def on(self, images: BoolArray) -> "_BoxArrays":
        keep = images[self.image_index]
        return _BoxArrays(self.boxes[keep], self.image_index[keep], self.group[keep])


def build_samples(
    experts: _BoxArrays,
    candidates: _BoxArrays,
    truth: _BoxArrays,
    sizes: IntArray,
    held_out: BoolArray,
    params: TrainSettings,
) -> tuple[Samples, Samples]:
    """Training samples from the experts' cells and negatives; validation samples from the ground truth."""
    rng = np.random.default_rng([len(sizes), int(sizes.sum()), 7])
    known = _concat_boxes([experts, candidates, truth])
    train_images = ~held_out
    cells = nms_votes(
        experts.on(train_images).boxes,
        experts.on(train_images).group,
        experts.on(train_images).image_index,
        params.iou,
    )
    positives = _Found(cells.boxes, cells.images, cells.votes)
    train_negatives = _unmatched_candidates(candidates.on(train_images), experts.on(train_images), params.iou)
    truth_held = truth.on(held_out)
    val_positives = _Found(truth_held.boxes, truth_held.image_index, np.ones(len(truth_held.boxes), np.int64))
    val_negatives = _unmatched_candidates(candidates.on(held_out), truth_held, params.iou)
    background = _background(rng, known, sizes, params.background_per_image, params.patch_size)
    train = _samples(positives, train_negatives, background.on(train_images))
    validation = _samples(val_positives, val_negatives, background.on(held_out))
    return train, validation


def samples_of_arrays(
    experts: tuple[FloatArray, IntArray, IntArray],
    candidates: tuple[FloatArray, IntArray],
    truth: tuple[FloatArray, IntArray],
    sizes: IntArray,
    held_out: BoolArray,
    params: TrainSettings,
) -> tuple[Samples, Samples]:
    """`build_samples` for boxes held in arrays rather than read from a task (the simulated training
    question): experts' (boxes (N, 4), image index (N,), expert id (N,)), candidates' and truth's
    (boxes, image index); image indices refer to `sizes` (M, 2) and `held_out` (M,)."""

    def arrays(boxes: FloatArray, images: IntArray, group: IntArray | None = None) -> _BoxArrays:
        count = len(images)
        groups = np.zeros(count, np.int64) if group is None else np.asarray(group, np.int64)
        return _BoxArrays(np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(images, np.int64), groups)

    return build_samples(arrays(*experts), arrays(*candidates), arrays(*truth), sizes, held_out, params)


@dataclass(frozen=True)
class _Found:
    boxes: FloatArray
    images: IntArray
    votes: IntArray

    def on(self, images: BoolArray) -> "_Found":
        keep = images[self.images]
        return _Found(self.boxes[keep], self.images[keep], self.votes[keep])


def _concat_boxes(parts: Sequence[_BoxArrays]) -> _BoxArrays:
    return _BoxArrays(
        np.concatenate([part.boxes for part in parts]).reshape(-1, 4),
        np.concatenate([part.image_index for part in parts]).astype(np.int64),
        np.concatenate([part.group for part in parts]).astype(np.int64),
    )


def _unmatched_candidates(candidates: _BoxArrays, annotated: _BoxArrays, iou: float) -> _Found:
    """Candidate cells (candidates merged by NMS) that overlap no annotated box of the same image by ≥ iou."""
    cells = nms_votes(
        candidates.boxes, np.zeros(len(candidates.boxes), np.int64), candidates.image_index, iou
    )
    keep = np.ones(len(cells.votes), dtype=bool)
    for image in np.unique(cells.images):
        here = np.flatnonzero(cells.images == image)
        others = annotated.boxes[annotated.image_index == image]
        if len(others):
            keep[here] = iou_matrix(cells.boxes[here], others).max(axis=1) < iou
    return _Found(cells.boxes[keep], cells.images[keep], np.zeros(int(keep.sum()), np.int64))


def _background(
    rng: np.random.Generator, known: _BoxArrays, sizes: IntArray, per_image: int, patch: int
) -> _Found:
    """Up to `per_image` points per image whose patch overlaps no known object (experts, candidates, truth)."""
    half = patch / 2
    centres, images = [], []
    for image, (width, height) in enumerate(sizes):
        if width < patch or height < patch:
            continue
        boxes = known.boxes[known.image_index == image]
        points = rng.uniform(
            [half, half],
            [width - half, height - half],
            size=(per_image * BACKGROUND_TRIES // 10 + per_image, 2),
        )
        clear = _clear_of(points, boxes, half)
        chosen = points[clear][:per_image]
        centres.append(chosen)
        images.extend([image] * len(chosen))
    stacked = np.concatenate(centres).reshape(-1, 2) if centres else np.zeros((0, 2))
    boxes = np.concatenate([stacked - half, stacked + half], axis=1)
    return _Found(boxes, np.array(images, dtype=np.int64), np.zeros(len(images), np.int64))


def _clear_of(points: FloatArray, boxes: FloatArray, half: float) -> BoolArray:
    if not len(boxes):
        return np.ones(len(points), dtype=bool)
    dx = np.maximum(
        np.maximum(boxes[None, :, 0] - points[:, None, 0], points[:, None, 0] - boxes[None, :, 2]), 0
    )
    dy = np.maximum(
        np.maximum(boxes[None, :, 1] - points[:, None, 1], points[:, None, 1] - boxes[None, :, 3]), 0
    )
    clear = np.asarray((np.maximum(dx, dy) > half).all(axis=1), dtype=bool)
    return clear


def _samples(positives: _Found, *negatives: _Found) -> Samples:
    parts = [positives, *negatives]
    boxes = np.concatenate([part.boxes for part in parts]).reshape(-1, 4)
    return Samples(
        centres=np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], axis=1),
        image_index=np.concatenate([part.images for part in parts]).astype(np.int64),
        positive=np.concatenate(
            [np.ones(len(positives.votes), bool)] + [np.zeros(len(n.votes), bool) for n in negatives]
        ),
        votes=np.concatenate([part.votes for part in parts]).astype(np.int64),
    )


def _image_file(settings: Settings, image: Image) -> ImageFile:
    path, window = file_of(settings, image)
    offset_x, offset_y = (window.x, window.y) if window is not None else (0, 0)
    return ImageFile(str(path), offset_x, offset_y, image.width, image.height, image.sha256)


# ---------------------------------------------------------------- runs


def record_run(session: AsyncSession, values: dict[str, Any]) -> TrainingRun:
    return repository.add_run(session, values)


async def runs_of_study(session: AsyncSession, study_id: int) -> Sequence[TrainingRun]:
    return await repository.runs_of_study(session, study_id)


CSV_COLUMNS = (
    "id", "job_id", "task_id", "mode", "loss", "weighting", "set_name", "experts", "repeat",
    "best_val_accuracy", "best_epoch", "device", "weights_init", "seconds", "samples_per_s",
    "train_samples", "val_samples", "onnx_sha256", "status",
)  # fmt: skip


def runs_csv(runs: Sequence[TrainingRun]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for run in runs:
        row = [getattr(run, column) for column in CSV_COLUMNS]
        row[CSV_COLUMNS.index("experts")] = ";".join(run.experts)
        writer.writerow(row)
    return buffer.getvalue()


# ---------------------------------------------------------------- the experiment


def experiment_sets(experts: Sequence[str], sets: str) -> list[str | list[str]]:
    """The paper's training sets: each expert alone, then the first 2, 3, … N experts (natural order)."""
    ordered = sorted(experts, key=natural_key)
    single: list[str | list[str]] = [[name] for name in ordered]
    number: list[str | list[str]] = [f"first:{count}" for count in range(2, len(ordered) + 1)]
    return {"single": single, "number": number}.get(sets, single + number)


def experiment_jobs(
    params: TrainExperimentParams, experts_by_mode: Mapping[str, list[str]]
) -> list[dict[str, Any]]:
    """One `train` job's params per set × loss × mode × repeat (repeat r uses seed + r, repeats = 1)."""
    shared = params.model_dump(include=set(TrainSettings.model_fields))
    jobs = []
    for mode in params.modes:
        for selection in experiment_sets(experts_by_mode.get(mode, []), params.sets):
            for loss in params.losses:
                for repeat in range(params.repeats):
                    job = {**shared, "study_id": params.study_id, "task_id": params.task_id, "mode": mode}
                    job.update(experts=selection, loss=loss, repeats=1, seed=params.seed + repeat)
                    jobs.append(TrainParams.model_validate(job).model_dump(mode="json"))
    return jobs


def checkpoint_dir(settings: Settings, params: TrainParams) -> Path:
    """Where a job's epoch checkpoints live: keyed by its params, so a re-queued job finds and resumes them."""
    return settings.data_dir / checkpoint_key(params)


def checkpoint_key(params: TrainParams) -> str:
    """The params' key under the data dir or in the store (``training/checkpoints/<hash>``)."""
    return "training/checkpoints/" + hashlib.sha256(params.model_dump_json().encode()).hexdigest()[:24]


def patch_cache_path(settings: Settings, training: TrainingSet) -> Path:
    return settings.data_dir / "training" / "patches" / f"{training.cache_key}.npy"


def exported_model_key(onnx_sha256: str) -> str:
    """The store's key of a training run's exported ONNX model: any API replica serves it from there."""
    return f"training/models/{onnx_sha256}.onnx"


def store_exported_model(settings: Settings, onnx_path: Path, onnx_sha256: str) -> None:
    """Blocking: copy a finished run's ONNX model into the store (the data dir, or the shared bucket)."""
    store_of(settings).put_file(exported_model_key(onnx_sha256), onnx_path)


def exported_model(settings: Settings, onnx_path: str | None, onnx_sha256: str | None) -> Path | None:
    """Blocking: a local file of a run's exported model (the worker's own file when this is its machine,
    else the store's copy), or None when neither exists."""
    if onnx_path is not None and Path(onnx_path).is_file():
        return Path(onnx_path)
    if onnx_sha256 is None:
        return None
    try:
        return store_of(settings).local_file(exported_model_key(onnx_sha256))
    except FileNotFoundError:
        return None


def run_dir(settings: Settings, run_key: str) -> Path:
    return settings.data_dir / "training" / "runs" / run_key


def mean_or_nan(values: Sequence[float | None]) -> float:
    present = [value for value in values if value is not None]
    return sum(present) / len(present) if present else math.nan
