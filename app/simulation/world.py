"""A simulated study without a server: phantom scenes, a synthetic detector, the paper's injected errors,
simulated experts, and Concord's own evaluation (`app.evaluation.service.task_metrics`) of the result.

Used by the calibration table, by the calibration test and by study planning. Images are numbered 1…n in
task order; labels 1…L in schema order (what `TaskInput` and the evaluation expect as ids).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from app.evaluation import metrics as m
from app.evaluation.schemas import TaskMetricsOut
from app.evaluation.service import Boxes, ExpertWork, MetricsParams, TaskData, task_metrics
from app.phantoms import (
    CLASSIFY_LABELS,
    DETECT_LABELS,
    GRADE_LABELS,
    classify_patch,
    detect_region,
    grade_patch,
)
from app.phantoms.model import Phantom, PhantomObject
from app.simulation.model import (
    Box,
    Decision,
    Expert,
    ImageWork,
    Scene,
    SceneObject,
    ShownObject,
    aided,
    unaided,
)
from app.suggestions import protocols

LABELS = {"classify": CLASSIFY_LABELS, "grade": GRADE_LABELS, "detect": DETECT_LABELS}
TASK_KEYS = {"classify": 1, "grade": 2, "detect": 3}


@dataclass(frozen=True)
class SimTask:
    """One task of a simulated study: scenes, the suggestions shown in aided mode and the hidden register."""

    kind: str
    labels: tuple[str, ...]
    scenes: tuple[Scene, ...]
    shown: tuple[tuple[ShownObject, ...], ...]
    register: tuple[protocols.RegisterEntry, ...]

    @property
    def task_key(self) -> int:
        return TASK_KEYS.get(self.kind, 0)


@dataclass
class SimResult:
    """Each expert's work per mode, image by image (the order of `SimTask.scenes`)."""

    task: SimTask
    work: dict[str, dict[str, list[ImageWork]]]  # mode → expert name → per image


def expert_name(index: int) -> str:
    return f"sim{index + 1:02d}"


# ---------------------------------------------------------------- scenes from phantoms


def _inside(obj: PhantomObject, window: tuple[int, int, int, int]) -> Box | None:
    """The object's box in the window's pixels, or None when the window cuts it (the demo leaves those out)."""
    left, top, width, height = window
    box = (float(obj.x1 - left), float(obj.y1 - top), float(obj.x2 - left), float(obj.y2 - top))
    inside = box[0] >= 0 and box[1] >= 0 and box[2] <= width and box[3] <= height
    return box if inside else None


def _scene_objects(phantom: Phantom, labels: Sequence[str], window: tuple[int, int, int, int]) -> Scene:
    truth = [
        SceneObject(box, labels.index(obj.label), obj.difficulty)
        for obj in phantom.objects
        if (box := _inside(obj, window)) is not None
    ]
    looks = [
        SceneObject(box, -1, obj.difficulty)
        for obj in phantom.distractors
        if (box := _inside(obj, window)) is not None
    ]
    return Scene(key=0, width=window[2], height=window[3], truth=tuple(truth), lookalikes=tuple(looks))


@lru_cache(maxsize=8)
def phantom_scenes(kind: str, seed: int, images: int) -> tuple[Scene, ...]:
    """The demo's phantoms as scenes: patches seed·1000 + i, or a detect region cut into 2 × 2 fields
    (`images` then sets the region: 4 fields of 1750 × 1250 px per unit, the demo's 7000 × 5000 at 4)."""
    if kind == "detect":
        return detect_scenes(*detect_fields(seed, images))
    labels = LABELS[kind]
    scenes: list[Scene] = []
    make = classify_patch if kind == "classify" else grade_patch
    for index in range(images):
        phantom = make(seed * 1000 + index)
        h, w = phantom.image.shape[:2]
        scenes.append(_scene_objects(phantom, labels, (0, 0, w, h)))
    return tuple(
        Scene(index, scene.width, scene.height, scene.truth, scene.lookalikes)
        for index, scene in enumerate(scenes)
    )


Window = tuple[int, int, int, int]  # left, top, width, height in the region's pixels


def detect_windows(images: int) -> tuple[int, int, list[Window]]:
    """The detect region's size and its 2 × 2 fields: 1750 × 1250 px per field and unit of images // 4."""
    scale = max(images // 4, 1)
    width, height = 1750 * scale, 1250 * scale
    windows = [(col * width, row * height, width, height) for row in range(2) for col in range(2)]
    return 2 * width, 2 * height, windows


def detect_fields(seed: int, images: int) -> tuple[Phantom, list[Window]]:
    """The demo's detect region (pixels and truth) and the windows of its fields."""
    width, height, windows = detect_windows(images)
    return detect_region(seed, width, height), windows


def detect_scenes(phantom: Phantom, windows: Sequence[Window]) -> tuple[Scene, ...]:
    """One scene per field window of a detect region, keyed by its position."""
    scenes = [_scene_objects(phantom, LABELS["detect"], window) for window in windows]
    return tuple(
        Scene(index, scene.width, scene.height, scene.truth, scene.lookalikes)
        for index, scene in enumerate(scenes)
    )


def detector_candidates(scenes: Sequence[Scene], seed: int) -> list[protocols.TaskObject]:
    """A synthetic detector: every true object and look-alike with a score that follows its difficulty
    (an easy figure scores high, a look-alike that resembles a figure scores high too)."""
    rng = np.random.default_rng([seed, 7])
    found = []
    for image, scene in enumerate(scenes, start=1):
        for obj in scene.truth:
            score = 1 / (1 + np.exp(-(2.0 - 4.0 * obj.difficulty + rng.normal(0, 0.7))))
            found.append(protocols.TaskObject(image, obj.label + 1, protocols.Box(*obj.box), float(score)))
        for obj in scene.lookalikes:
            score = 1 / (1 + np.exp(-(-2.0 + 4.0 * obj.difficulty + rng.normal(0, 0.7))))
            found.append(protocols.TaskObject(image, 1, protocols.Box(*obj.box), float(score)))
    return found


def sim_task(kind: str, seed: int, images: int, scenes: tuple[Scene, ...] | None = None) -> SimTask:
    """Phantom scenes (the demo's, or `scenes`) with the paper's error-injection preset applied to their
    ground truth."""
    scenes = phantom_scenes(kind, seed, images) if scenes is None else scenes
    labels = LABELS[kind]
    truth = [
        protocols.TaskObject(image, obj.label + 1, protocols.Box(*obj.box))
        for image, scene in enumerate(scenes, start=1)
        for obj in scene.truth
    ]
    task_input = protocols.TaskInput(
        kind=kind,
        images=tuple(
            protocols.ImageInfo(i, f"image-{i}", s.width, s.height) for i, s in enumerate(scenes, start=1)
        ),
        label_ids=tuple(range(1, len(labels) + 1)),
        ground_truth=tuple(truth),
        suggestions=tuple(detector_candidates(scenes, seed)),
        default_box_size=50,
    )
    protocol = protocols.resolve_protocol(f"paper-{kind}", None, {"seed": seed})
    injected = protocols.apply_protocol(task_input, protocol)
    shown: list[list[ShownObject]] = [[] for _ in scenes]
    for item in injected.shown:
        box = (item.box.x1, item.box.y1, item.box.x2, item.box.y2)
        shown[item.image_id - 1].append(ShownObject(box, item.label_id - 1))
    return SimTask(kind, labels, scenes, tuple(tuple(s) for s in shown), injected.register)


# ---------------------------------------------------------------- running and evaluating


def run(task: SimTask, experts: Sequence[Expert], modes: Sequence[str] = ("unaided", "aided")) -> SimResult:
    labels = len(task.labels)
    work: dict[str, dict[str, list[ImageWork]]] = {}
    for mode in modes:
        work[mode] = {}
        for expert in experts:
            if mode == "unaided":
                done = [unaided(expert, scene, labels, task.task_key) for scene in task.scenes]
            else:
                done = [
                    aided(expert, scene, list(shown), labels, task.task_key)
                    for scene, shown in zip(task.scenes, task.shown, strict=True)
                ]
            work[mode][expert_name(expert.index)] = done
    return SimResult(task, work)


def final_objects(
    work: ImageWork, shown: Sequence[ShownObject]
) -> list[tuple[tuple[float, float, float, float], int]]:
    """The expert's objects after the image: kept and edited suggestions in shown order, then created ones."""
    objects = []
    for item, (decision, label, box) in zip(shown, work.decisions, strict=True):
        if decision != Decision.delete:
            objects.append((box if decision == Decision.move else item.box, label))
    objects.extend((created.box, created.label) for created in work.created)
    return objects


def _boxes(rows: list[tuple[int, tuple[float, float, float, float], int]]) -> Boxes:
    return Boxes(
        np.array([box for _, box, _ in rows], dtype=np.float64).reshape(-1, 4),
        np.array([label + 1 for _, _, label in rows], dtype=np.int64),
        np.array([image for image, _, _ in rows], dtype=np.int64),
    )


def _counted(boxes: Boxes, scenes: Sequence[Scene]) -> Boxes:
    widths = np.array([s.width for s in scenes], dtype=np.float64)
    heights = np.array([s.height for s in scenes], dtype=np.float64)
    index = boxes.images - 1
    keep = m.counted_mask(boxes.boxes, widths[index], heights[index], np.zeros(len(boxes), dtype=np.bool_))
    return boxes.take(keep)


def task_data(result: SimResult) -> TaskData:
    """The simulated study in the evaluation's own arrays, as `app.evaluation.service.build_tasks` makes them."""
    task = result.task
    scenes = task.scenes
    reference = _boxes(
        [(image, obj.box, obj.label) for image, scene in enumerate(scenes, start=1) for obj in scene.truth]
    )
    work: dict[str, dict[str, ExpertWork]] = {}
    for mode, experts in result.work.items():
        work[mode] = {}
        for name, images in experts.items():
            shown = task.shown if mode == "aided" else tuple(() for _ in scenes)
            rows = [
                (image, box, label)
                for image, (done, items) in enumerate(zip(images, shown, strict=True), start=1)
                for box, label in final_objects(done, items)
            ]
            objects = _counted(_boxes(rows), scenes)
            work[mode][name] = ExpertWork(
                objects=objects,
                edited_seconds=np.zeros(len(objects)),
                images_seen=list(range(1, len(scenes) + 1)),
                visit_seconds={image: done.seconds for image, done in enumerate(images, start=1)},
            )
    suggestions = _counted(
        _boxes(
            [
                (image, item.box, item.label)
                for image, items in enumerate(task.shown, start=1)
                for item in items
            ]
        ),
        scenes,
    )
    return TaskData(
        name=task.kind,
        labels={index + 1: name for index, name in enumerate(task.labels)},
        reference=_counted(reference, scenes),
        work=work,
        suggestions=suggestions,
        suggestion_set_id=None,
        register=_register(task),
        span=len(scenes) + 1,
    )


def _register(task: SimTask) -> dict[str, list[tuple[int | None, Boxes]]]:
    grouped: dict[tuple[str, int | None], list[tuple[int, tuple[float, float, float, float], int]]] = {}
    for entry in task.register:
        if entry.ref_label_id is None or entry.ref_box is None:
            continue
        box = (entry.ref_box.x1, entry.ref_box.y1, entry.ref_box.x2, entry.ref_box.y2)
        grouped.setdefault((entry.kind.value, entry.group), []).append(
            (entry.image_id, box, entry.ref_label_id - 1)
        )
    register: dict[str, list[tuple[int | None, Boxes]]] = {}
    for (kind, group), rows in grouped.items():
        boxes = _counted(_boxes(rows), task.scenes)
        if len(boxes):
            register.setdefault(kind, []).append((group, boxes))
    return register


def evaluate(result: SimResult, params: MetricsParams | None = None) -> TaskMetricsOut:
    return task_metrics(task_data(result), params or MetricsParams())
