"""Error-injection protocols: their JSON schema, the paper's presets, and a deterministic application.

Pure: no database. The caller describes the task (images, ordered labels, ground truth) and the source
suggestion set as plain dataclasses; :func:`apply_protocol` returns the boxes to show and one hidden
register entry per injected error. The same protocol (seed included) and the same input give the same
output, entry for entry, on every run and machine: only ``random.Random(seed)`` draws, and everything it
draws from is in a fixed order.

Boxes are in level-0 pixels of their image (x1, y1, x2, y2). A suggestion "matches" a ground-truth object
when their IoU (+1-pixel convention, as the evaluation uses) is at least ``match_iou``; matching is greedy
one-to-one, highest IoU first.

A protocol is a list of steps, applied in order; each step injects one kind of error:

- ``class_changed``: a correctly labelled true object is shown with another label (drawn at random);
- ``removed``: a true object is not shown;
- ``grade_shifted``: a correctly graded true object is shown one grade higher; objects already at the
  highest grade (grade 4 of 0–4) stay as they are and are not registered;
- ``duplicate``: an NMS artefact, a second box over a shown object, shifted by 10–20 % of its size;
- ``false_positive``: a box where no true object is: a detector candidate that matches no ground-truth
  object at ``match_iou`` (``source: candidates``), or a box placed at random where it overlaps no
  ground-truth or shown box and stays more than 2 px inside the image (``source: random``).

An object touched by one step is left alone by later steps, so errors never stack. A step's size is
exactly one of ``count`` (spread over its images, at least one on each), ``per_image``, ``fraction`` (of
the eligible objects on its images, rounded half up), ``all`` (every eligible object on its images) or
``same_count_as`` (as many as an earlier step of that kind made). Its images are ``images`` distinct ones
drawn at random (never an image that an earlier step with ``images`` drew), optionally among
``target_images``, or the images of an earlier step (``images_of_step``), or else every image.

Difficulty groups come from the model score p of an error: group = number of ``thresholds`` below p, so
thresholds (0.2, 0.4) give group 0 for p ≤ 0.2, 1 for 0.2 < p ≤ 0.4 and 2 for p > 0.4. The score of a
true object is that of the source suggestion matching it, 0 when the detector missed it.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from app.geometry import INCLUSIVE, box_iou, greedy_one_to_one, iou_matrix
from app.models import TaskKind

BORDER_PX = 2
RANDOM_PLACEMENT_TRIES = 500
DUPLICATE_SHIFT = (0.1, 0.2)
# Far above any study's size (the largest seen holds 25 000 objects); checked before any work starts.
MAX_ERRORS_PER_STEP = 100_000
MAX_IMAGES_PER_STEP = 100_000


class ErrorKind(StrEnum):
    class_changed = "class_changed"
    removed = "removed"
    duplicate = "duplicate"
    false_positive = "false_positive"
    grade_shifted = "grade_shifted"


class ProtocolError(ValueError):
    """The protocol cannot be applied to this task and suggestion set; the message says why."""


# --- the JSON schema -------------------------------------------------------------------------------


class Step(BaseModel):
    """One kind of error, how many, and on which images."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: ErrorKind
    count: Annotated[int | None, Field(ge=0, le=MAX_ERRORS_PER_STEP)] = None
    per_image: Annotated[int | None, Field(ge=1, le=MAX_ERRORS_PER_STEP)] = None
    fraction: Annotated[float | None, Field(ge=0.0, le=1.0)] = None
    all: bool = False
    same_count_as: ErrorKind | None = None
    images: Annotated[int | None, Field(ge=1, le=MAX_IMAGES_PER_STEP)] = None
    target_images: Annotated[list[str] | None, Field(max_length=MAX_IMAGES_PER_STEP)] = None
    images_of_step: Annotated[int | None, Field(ge=0)] = None
    source: Literal["candidates", "random"] = "random"
    thresholds: Annotated[list[Annotated[float, Field(ge=0.0, le=1.0)]] | None, Field(max_length=20)] = None
    group_names: Annotated[list[str] | None, Field(max_length=21)] = None
    balance_groups: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> Step:
        sizes = [self.count is not None, self.per_image is not None, self.fraction is not None, self.all]
        sizes.append(self.same_count_as is not None)
        if sum(sizes) != 1:
            raise ValueError(
                f"{self.kind} step: give exactly one of count, per_image, fraction, all, same_count_as"
            )
        if self.images_of_step is not None and (self.images is not None or self.target_images is not None):
            raise ValueError(f"{self.kind} step: images_of_step excludes images and target_images")
        where = (self.images, self.target_images, self.images_of_step)
        if self.per_image is not None and all(value is None for value in where):
            raise ValueError(f"{self.kind} step: per_image needs images, target_images or images_of_step")
        self._check_thresholds()
        if self.source == "candidates" and self.kind != ErrorKind.false_positive:
            raise ValueError(f"{self.kind} step: source 'candidates' is only for false_positive")
        if self.balance_groups and not self.thresholds:
            raise ValueError(f"{self.kind} step: balance_groups needs thresholds")
        if self.per_image is not None and self.per_image * (self.images or 1) > MAX_ERRORS_PER_STEP:
            raise ValueError(f"{self.kind} step: at most {MAX_ERRORS_PER_STEP} errors per step")
        return self

    def _check_thresholds(self) -> None:
        thresholds = self.thresholds or []
        if any(later <= earlier for earlier, later in itertools.pairwise(thresholds)):
            raise ValueError(f"{self.kind} step: thresholds must increase strictly, got {thresholds}")
        if self.group_names is not None and len(self.group_names) != len(thresholds) + 1:
            raise ValueError(
                f"{self.kind} step: {len(thresholds)} thresholds make {len(thresholds) + 1} groups, "
                f"but {len(self.group_names)} group names were given"
            )


class Protocol(BaseModel):
    """A seeded error-injection protocol: steps applied in order to a base set of objects."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = 0
    base: Literal["ground_truth", "source"] = "ground_truth"
    match_iou: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    steps: Annotated[list[Step], Field(min_length=1, max_length=50)]

    @model_validator(mode="after")
    def _references_point_back(self) -> Protocol:
        for index, step in enumerate(self.steps):
            if step.images_of_step is not None and step.images_of_step >= index:
                raise ValueError(f"step {index}: images_of_step must name an earlier step")
            if step.same_count_as is not None:
                earlier = {previous.kind for previous in self.steps[:index]}
                if step.same_count_as not in earlier:
                    raise ValueError(
                        f"step {index}: same_count_as {step.same_count_as} names no earlier step"
                    )
        return self


# --- presets ---------------------------------------------------------------------------------------

FAKE_GROUPS = {"thresholds": [0.2, 0.4], "group_names": ["easy", "medium", "hard"]}
REMOVED_GROUPS = {"thresholds": [0.33, 0.66], "group_names": ["hard", "medium", "easy"]}

PRESETS: dict[str, dict[str, Any]] = {
    # Equine asthma: 15 relabelled cells on 5 images, one missing cell on each of 5 other images, and
    # NMS-style artefacts (the published Asthma data holds 8 such cells).
    "paper-classify": {
        "seed": 0,
        "base": "ground_truth",
        "steps": [
            {"kind": "class_changed", "count": 15, "images": 5},
            {"kind": "removed", "per_image": 1, "images": 5},
            {"kind": "duplicate", "count": 4},
            {"kind": "false_positive", "count": 4, "source": "random"},
        ],
    },
    # EIPH: missing cells on 5 images, every cell one grade higher on 5 other images (grade 4 stays 4),
    # 10 artefacts (duplicates and boxes where no cell is) on 5 further images.
    "paper-grade": {
        "seed": 0,
        "base": "ground_truth",
        "steps": [
            {"kind": "removed", "per_image": 1, "images": 5},
            {"kind": "grade_shifted", "all": True, "images": 5},
            {"kind": "duplicate", "count": 5, "images": 5},
            {"kind": "false_positive", "count": 5, "images_of_step": 2, "source": "random"},
        ],
    },
    # Mitotic figures: 20 % of the true objects removed, as many fakes from detector candidates added,
    # both in difficulty groups by model score, drawn evenly from the groups as the paper did.
    "paper-detect": {
        "seed": 0,
        "base": "ground_truth",
        "steps": [
            {"kind": "removed", "fraction": 0.2, "balance_groups": True, **REMOVED_GROUPS},
            {
                "kind": "false_positive",
                "same_count_as": "removed",
                "source": "candidates",
                "balance_groups": True,
                **FAKE_GROUPS,
            },
        ],
    },
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def presets_for(task_kind: str) -> list[str]:
    """The presets that fit a task kind: a `paper-<kind>` preset fits only tasks of that kind."""
    return [name for name in preset_names() if name.removeprefix("paper-") in (name, task_kind)]


def resolve_protocol(
    preset: str | None, protocol: Mapping[str, Any] | None, overrides: Mapping[str, Any] | None
) -> Protocol:
    """A preset with overrides, or a protocol document; raises ProtocolError with a readable message.

    Overrides replace top-level fields; ``steps`` may be a list (replaces all steps) or an object mapping
    step indexes to partial steps, e.g. ``{"seed": 7, "steps": {"0": {"count": 10}}}``.
    """
    if (preset is None) == (protocol is None):
        raise ProtocolError("give either a preset name or a protocol document")
    if preset is not None:
        if preset not in PRESETS:
            raise ProtocolError(f"unknown preset {preset!r}; known presets: {', '.join(preset_names())}")
        document = _merge(PRESETS[preset], overrides or {})
    else:
        assert protocol is not None
        document = _merge(dict(protocol), overrides or {})
    try:
        return Protocol.model_validate(document)
    except ValidationError as error:
        raise ProtocolError(_describe(error)) from error


def _merge(document: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(document)
    for key, value in overrides.items():
        if key == "steps" and isinstance(value, Mapping):
            merged["steps"] = _merge_steps(list(merged.get("steps", [])), value)
        else:
            merged[key] = value
    return merged


def _merge_steps(steps: list[Any], overrides: Mapping[str, Any]) -> list[Any]:
    for key, partial in overrides.items():
        if not str(key).isdigit() or int(key) >= len(steps):
            raise ProtocolError(f"override of step {key!r}: the protocol has steps 0 to {len(steps) - 1}")
        if not isinstance(partial, Mapping):
            raise ProtocolError(f"override of step {key}: give an object of fields")
        steps[int(key)] = {**steps[int(key)], **partial}
    return steps


def _describe(error: ValidationError) -> str:
    parts = []
    for problem in error.errors():
        where = ".".join(str(item) for item in problem["loc"])
        message = str(problem["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}" if where else message)
    return "invalid protocol: " + "; ".join(parts)


# --- the plain input and output --------------------------------------------------------------------


@dataclass(frozen=True)
class Box:
    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        return self.y2 - self.y1


@dataclass(frozen=True)
class ImageInfo:
    id: int
    name: str
    width: int
    height: int


@dataclass(frozen=True)
class TaskObject:
    """A ground-truth object or a source suggestion."""

    image_id: int
    label_id: int
    box: Box
    score: float = 1.0


@dataclass(frozen=True)
class TaskInput:
    """Images and labels in their task order (labels ordered as grades), ground truth, source set."""

    kind: str
    images: tuple[ImageInfo, ...]
    label_ids: tuple[int, ...]
    ground_truth: tuple[TaskObject, ...]
    suggestions: tuple[TaskObject, ...]
    default_box_size: int = 50


@dataclass(frozen=True)
class ShownObject:
    image_id: int
    label_id: int
    box: Box
    score: float


@dataclass(frozen=True)
class RegisterEntry:
    """A hidden register entry; ``shown_index`` points into the shown objects (None when removed)."""

    kind: ErrorKind
    image_id: int
    group: int | None
    score: float | None
    ref_label_id: int | None
    ref_box: Box | None
    shown_label_id: int | None
    shown_box: Box | None
    shown_index: int | None


@dataclass(frozen=True)
class InjectionResult:
    shown: tuple[ShownObject, ...]
    register: tuple[RegisterEntry, ...]

    def counts(self) -> dict[str, dict[str, int]]:
        """Entries per kind and difficulty group ("none" for entries without a group)."""
        counts: dict[str, dict[str, int]] = {}
        for entry in self.register:
            groups = counts.setdefault(entry.kind.value, {})
            key = "none" if entry.group is None else str(entry.group)
            groups[key] = groups.get(key, 0) + 1
        return {kind: dict(sorted(groups.items())) for kind, groups in sorted(counts.items())}

    def canonical(self) -> dict[str, Any]:
        """A plain, ordered rendering for byte-wise comparison of two runs."""
        return {
            "shown": [
                _object_json(item.image_id, item.label_id, item.box, item.score) for item in self.shown
            ],
            "register": [_entry_json(entry) for entry in self.register],
        }


def _box_json(box: Box | None) -> list[float] | None:
    return None if box is None else [box.x1, box.y1, box.x2, box.y2]


def _object_json(image_id: int, label_id: int, box: Box, score: float) -> dict[str, Any]:
    return {"image": image_id, "label": label_id, "box": _box_json(box), "score": score}


def _entry_json(entry: RegisterEntry) -> dict[str, Any]:
    return {
        "kind": entry.kind.value,
        "image": entry.image_id,
        "group": entry.group,
        "score": entry.score,
        "ref_label": entry.ref_label_id,
        "ref_box": _box_json(entry.ref_box),
        "shown_label": entry.shown_label_id,
        "shown_box": _box_json(entry.shown_box),
        "shown_index": entry.shown_index,
    }


# --- geometry and matching -------------------------------------------------------------------------


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two pixel boxes (+1-pixel convention, as the evaluation uses)."""
    return box_iou((a.x1, a.y1, a.x2, a.y2), (b.x1, b.y1, b.x2, b.y2), INCLUSIVE)


def _iou_matrix(boxes: Sequence[Box], others: Sequence[Box]) -> np.ndarray:
    """IoU (N, M) of pixel boxes, +1-pixel convention."""
    return iou_matrix(_box_array(boxes), _box_array(others), INCLUSIVE)


def _box_array(boxes: Sequence[Box]) -> np.ndarray:
    return np.array([(box.x1, box.y1, box.x2, box.y2) for box in boxes], dtype=np.float64).reshape(-1, 4)


def _by_image(objects: Sequence[TaskObject]) -> dict[int, list[int]]:
    indices: dict[int, list[int]] = {}
    for index, item in enumerate(objects):
        indices.setdefault(item.image_id, []).append(index)
    return indices


def match(suggestions: Sequence[TaskObject], truth: Sequence[TaskObject], threshold: float) -> dict[int, int]:
    """Greedy one-to-one matching on the same image, highest IoU first: suggestion index → truth index."""
    truth_on = _by_image(truth)
    matched: dict[int, int] = {}
    for image_id, s_indices in _by_image(suggestions).items():
        t_indices = truth_on.get(image_id, [])
        overlap = _iou_matrix([suggestions[i].box for i in s_indices], [truth[i].box for i in t_indices])
        for row, col in greedy_one_to_one(overlap, threshold):
            matched[s_indices[row]] = t_indices[col]
    return matched


def group_of(score: float, thresholds: Sequence[float]) -> int:
    """Number of thresholds strictly below the score: (0.2, 0.4) → 0 for p ≤ 0.2, 1 to 0.4, else 2."""
    return sum(1 for threshold in thresholds if score > threshold)


# --- application -----------------------------------------------------------------------------------


@dataclass
class _Item:
    """A working object: what is shown now, and the true object behind it (None for artefacts)."""

    image_id: int
    label_id: int
    box: Box
    score: float
    ref: TaskObject | None
    touched: bool = False
    removed: bool = False
    entry: int | None = None


@dataclass
class _State:
    task: TaskInput
    protocol: Protocol
    rng: random.Random
    items: list[_Item]
    candidates: list[TaskObject]
    entries: list[RegisterEntry] = field(default_factory=list)
    drawn_images: set[int] = field(default_factory=set)
    images_by_step: list[list[int]] = field(default_factory=list)
    made_by_kind: dict[ErrorKind, int] = field(default_factory=dict)

    def image(self, image_id: int) -> ImageInfo:
        return next(image for image in self.task.images if image.id == image_id)


def check_limits(task: TaskInput, protocol: Protocol) -> None:
    """Refuse a step that the task cannot serve (no ground truth, wrong kind) or that asks for more errors
    than the task could ever hold, from the request's numbers and the task's sizes alone (one pass over
    the objects), so that it is refused before any work.

    Upper bounds: an object error changes each true (or shown) object at most once; a candidate fake
    uses a source suggestion once; random fakes of at least the smallest true box, (w + 1)(h + 1) px
    with the +1-pixel convention, never overlap, so an image holds at most its usable area over that.
    """
    for index, step in enumerate(protocol.steps):
        try:
            _check_needs(task, protocol, step)
        except ProtocolError as error:
            raise ProtocolError(f"step {index} ({step.kind}): {error}") from error
    for index, step in enumerate(protocol.steps):
        images = _known_image_count(protocol, step)
        wanted = step.count if step.count is not None else (step.per_image or 0) * images
        most = _most_errors(task, protocol, step)
        if wanted > most:
            raise ProtocolError(
                f"step {index} ({step.kind}): asks for {wanted} errors, but this task can hold only {most}"
            )


def _known_image_count(protocol: Protocol, step: Step) -> int:
    """How many images the step works on, where the request says so (else 0, which asks for nothing)."""
    if step.images is not None:
        return step.images
    if step.target_images is not None:
        return len(set(step.target_images))
    if step.images_of_step is not None:
        return _known_image_count(protocol, protocol.steps[step.images_of_step])
    return 0


def _most_errors(task: TaskInput, protocol: Protocol, step: Step) -> int:
    if step.kind != ErrorKind.false_positive:
        return len(task.ground_truth) if protocol.base == "ground_truth" else len(task.suggestions)
    if step.source == "candidates":
        return len(task.suggestions)
    width, height = _smallest_box(task)
    usable = [
        max(0, image.width - 2 * BORDER_PX - 1) * max(0, image.height - 2 * BORDER_PX - 1)
        for image in task.images
    ]
    return sum(area // ((width + 1) * (height + 1)) for area in usable)


def _smallest_box(task: TaskInput) -> tuple[int, int]:
    if not task.ground_truth:
        return task.default_box_size, task.default_box_size
    width = min(round(item.box.width) for item in task.ground_truth)
    height = min(round(item.box.height) for item in task.ground_truth)
    return max(0, width), max(0, height)


def apply_protocol(task: TaskInput, protocol: Protocol) -> InjectionResult:
    """Apply the steps in order; raises ProtocolError (nothing half-done) when a step is impossible."""
    check_limits(task, protocol)
    state = _State(
        task=task,
        protocol=protocol,
        rng=random.Random(protocol.seed),
        items=_base_items(task, protocol),
        candidates=_candidates(task, protocol.match_iou),
    )
    for index, step in enumerate(protocol.steps):
        try:
            made = _apply_step(state, step)
        except ProtocolError as error:
            raise ProtocolError(f"step {index} ({step.kind}): {error}") from error
        state.made_by_kind.setdefault(step.kind, made)
    return _result(state)


def _base_items(task: TaskInput, protocol: Protocol) -> list[_Item]:
    matched = match(task.suggestions, task.ground_truth, protocol.match_iou)
    if protocol.base == "source":
        return [
            _Item(
                s.image_id,
                s.label_id,
                s.box,
                s.score,
                task.ground_truth[matched[i]] if i in matched else None,
            )
            for i, s in enumerate(task.suggestions)
        ]
    score_of_truth = {t_index: task.suggestions[s_index].score for s_index, t_index in matched.items()}
    return [
        _Item(t.image_id, t.label_id, t.box, score_of_truth.get(index, 0.0), t)
        for index, t in enumerate(task.ground_truth)
    ]


def _candidates(task: TaskInput, threshold: float) -> list[TaskObject]:
    """Source suggestions that match no ground-truth object of their image at the threshold."""
    truth_on = _by_image(task.ground_truth)
    unmatched: set[int] = set()
    for image_id, s_indices in _by_image(task.suggestions).items():
        truth_boxes = [task.ground_truth[i].box for i in truth_on.get(image_id, [])]
        overlap = _iou_matrix([task.suggestions[i].box for i in s_indices], truth_boxes)
        best = overlap.max(axis=1, initial=0.0)
        unmatched.update(index for index, value in zip(s_indices, best, strict=True) if value < threshold)
    return [suggestion for index, suggestion in enumerate(task.suggestions) if index in unmatched]


def _apply_step(state: _State, step: Step) -> int:
    images = _step_images(state, step)
    if step.kind == ErrorKind.false_positive:
        made = _false_positives(state, step, images)
    else:
        made = _object_errors(state, step, images)
    state.images_by_step.append(images)
    return made


def _check_needs(task: TaskInput, protocol: Protocol, step: Step) -> None:
    needs_truth = step.kind in (ErrorKind.class_changed, ErrorKind.removed, ErrorKind.grade_shifted)
    if (needs_truth or protocol.base == "ground_truth") and not task.ground_truth:
        raise ProtocolError(
            "this task has no ground truth; upload it first (it tells which objects are true)"
        )
    if step.kind == ErrorKind.grade_shifted and task.kind != TaskKind.grade:
        raise ProtocolError(f"grade_shifted needs a grade task, this one is {task.kind!r}")
    if step.kind == ErrorKind.class_changed and len(task.label_ids) < 2:
        raise ProtocolError("class_changed needs a task with at least two labels")
    if step.kind == ErrorKind.false_positive and step.source == "candidates" and protocol.base == "source":
        raise ProtocolError(
            "with base 'source' the detector candidates are shown already; use source 'random'"
        )


def _step_images(state: _State, step: Step) -> list[int]:
    """The images a step works on, in task order."""
    order = [image.id for image in state.task.images]
    if step.images_of_step is not None:
        return list(state.images_by_step[step.images_of_step])
    pool = order
    if step.target_images is not None:
        by_name = {image.name: image.id for image in state.task.images}
        unknown = [name for name in step.target_images if name not in by_name]
        if unknown:
            raise ProtocolError(f"no images named {', '.join(map(repr, unknown))} in this task")
        wanted = {by_name[name] for name in step.target_images}
        pool = [image_id for image_id in order if image_id in wanted]
    if step.images is None:
        return pool
    return _draw_images(state, step, [image_id for image_id in pool if image_id not in state.drawn_images])


def _draw_images(state: _State, step: Step, pool: list[int]) -> list[int]:
    assert step.images is not None
    need = max(1, step.per_image or 1)
    usable = [image_id for image_id in pool if _capacity(state, step, image_id) >= need]
    if len(usable) < step.images:
        raise ProtocolError(
            f"needs {step.images} images with at least {need} eligible object(s) not used by earlier "
            f"steps; only {len(usable)} qualify"
        )
    state.rng.shuffle(usable)
    chosen = usable[: step.images]
    if step.count is not None and sum(_capacity(state, step, i) for i in chosen) < step.count:
        # the random draw cannot hold the count: take the images with the most eligible objects instead
        chosen = sorted(usable, key=lambda image_id: -_capacity(state, step, image_id))[: step.images]
    state.drawn_images.update(chosen)
    order = [image.id for image in state.task.images]
    return sorted(chosen, key=order.index)


def _capacity(state: _State, step: Step, image_id: int) -> int:
    if step.kind == ErrorKind.false_positive:
        if step.source == "random":
            return 1_000_000
        return sum(1 for candidate in state.candidates if candidate.image_id == image_id)
    return sum(1 for item in _eligible(state, step.kind) if item.image_id == image_id)


def _eligible(state: _State, kind: ErrorKind) -> list[_Item]:
    untouched = [item for item in state.items if not item.touched and not item.removed]
    if kind == ErrorKind.duplicate:
        return untouched
    truthful = [item for item in untouched if item.ref is not None]
    if kind == ErrorKind.removed:
        return truthful
    correct = [item for item in truthful if item.ref is not None and item.label_id == item.ref.label_id]
    if kind == ErrorKind.grade_shifted:
        return [item for item in correct if item.label_id != state.task.label_ids[-1]]
    return correct


def _target_count(state: _State, step: Step, images: list[int], available: int) -> int:
    if step.count is not None:
        return step.count
    if step.per_image is not None:
        return step.per_image * len(images)
    if step.fraction is not None:
        return math.floor(step.fraction * available + 0.5)
    if step.same_count_as is not None:
        return state.made_by_kind[step.same_count_as]
    return available


def _object_errors(state: _State, step: Step, images: list[int]) -> int:
    wanted_images = set(images)
    eligible = [item for item in _eligible(state, step.kind) if item.image_id in wanted_images]
    wanted = _target_count(state, step, images, len(eligible))
    if wanted > len(eligible):
        raise ProtocolError(
            f"needs {wanted} eligible objects but the {len(images)} image(s) hold only {len(eligible)}"
        )
    pool = [(item.image_id, item.score) for item in eligible]
    for index in _choose(state, step, images, pool, wanted):
        _inject(state, step, eligible[index])
    return wanted


def _choose(
    state: _State, step: Step, images: list[int], pool: list[tuple[int, float]], wanted: int
) -> list[int]:
    """Indexes into the pool (image, score) of the objects to change, in pool order."""
    if step.all:
        return list(range(len(pool)))
    by_image = {
        image_id: [i for i, (image, _) in enumerate(pool) if image == image_id] for image_id in images
    }
    if step.per_image is not None:
        return sorted(_per_image(state, step.per_image, by_image))
    if _spreads(step) and wanted > 0:
        return sorted(_spread(state, by_image, wanted))
    if step.balance_groups and step.thresholds:
        return sorted(_balanced(state, pool, wanted, step.thresholds))
    return sorted(state.rng.sample(range(len(pool)), wanted))


def _spreads(step: Step) -> bool:
    return step.images is not None or step.images_of_step is not None


def _per_image(state: _State, per_image: int, by_image: dict[int, list[int]]) -> list[int]:
    chosen = []
    for image_id, indexes in by_image.items():
        if len(indexes) < per_image:
            name = next(image.name for image in state.task.images if image.id == image_id)
            raise ProtocolError(
                f"image {name!r} holds {len(indexes)} eligible objects, fewer than {per_image}"
            )
        chosen.extend(state.rng.sample(indexes, per_image))
    return chosen


def _spread(state: _State, by_image: dict[int, list[int]], wanted: int) -> list[int]:
    """At least one on each image, the rest anywhere on these images."""
    if wanted < len(by_image):
        raise ProtocolError(f"{wanted} errors cannot put one on each of the {len(by_image)} images")
    first = [state.rng.choice(indexes) for indexes in by_image.values()]
    taken = set(first)
    rest = [index for indexes in by_image.values() for index in indexes if index not in taken]
    return first + state.rng.sample(rest, wanted - len(first))


def _balanced(
    state: _State, pool: list[tuple[int, float]], wanted: int, thresholds: list[float]
) -> list[int]:
    """As even a number from each difficulty group as the groups allow, drawn at random within each."""
    groups: list[list[int]] = [[] for _ in range(len(thresholds) + 1)]
    for index, (_, score) in enumerate(pool):
        groups[group_of(score, thresholds)].append(index)
    quota = [0] * len(groups)
    remaining = wanted
    while remaining > 0:
        open_groups = [g for g in range(len(groups)) if quota[g] < len(groups[g])]
        for g in open_groups[:remaining]:
            quota[g] += 1
        remaining -= min(remaining, len(open_groups))
    return [index for g, members in enumerate(groups) for index in state.rng.sample(members, quota[g])]


def _group(step: Step, score: float | None) -> int | None:
    if not step.thresholds or score is None:
        return None
    return group_of(score, step.thresholds)


def _register(
    state: _State,
    step: Step,
    item: _Item | None,
    image_id: int,
    ref: tuple[int, Box] | None,
    score: float | None,
) -> None:
    """Append an entry; ``item`` is the shown object (its index is known once all steps ran)."""
    entry = RegisterEntry(
        kind=step.kind,
        image_id=image_id,
        group=_group(step, score),
        score=score,
        ref_label_id=None if ref is None else ref[0],
        ref_box=None if ref is None else ref[1],
        shown_label_id=None if item is None else item.label_id,
        shown_box=None if item is None else item.box,
        shown_index=None,
    )
    if item is not None:
        item.entry = len(state.entries)
    state.entries.append(entry)


def _inject(state: _State, step: Step, item: _Item) -> None:
    item.touched = True
    if step.kind == ErrorKind.duplicate:
        _duplicate(state, step, item)
        return
    assert item.ref is not None
    ref = (item.ref.label_id, item.ref.box)
    if step.kind == ErrorKind.removed:
        item.removed = True
        _register(state, step, None, item.image_id, ref, item.score)
        return
    if step.kind == ErrorKind.class_changed:
        others = [label for label in state.task.label_ids if label != item.label_id]
        item.label_id = state.rng.choice(others)
    else:
        labels = state.task.label_ids
        item.label_id = labels[labels.index(item.label_id) + 1]
    _register(state, step, item, item.image_id, ref, item.score)


def _duplicate(state: _State, step: Step, item: _Item) -> None:
    image = state.image(item.image_id)
    shift_x = _shift(state.rng, item.box.width)
    shift_y = _shift(state.rng, item.box.height)
    box = _clamp(
        Box(item.box.x1 + shift_x, item.box.y1 + shift_y, item.box.x2 + shift_x, item.box.y2 + shift_y), image
    )
    copy = _Item(item.image_id, item.label_id, box, item.score, None, touched=True)
    state.items.insert(state.items.index(item) + 1, copy)
    _register(state, step, copy, item.image_id, (item.label_id, box), None)


def _shift(rng: random.Random, size: float) -> float:
    low, high = DUPLICATE_SHIFT
    return float(round(rng.choice((-1, 1)) * rng.uniform(low, high) * size))


def _clamp(box: Box, image: ImageInfo) -> Box:
    """Move the box back inside the image (more than BORDER_PX from the edge where it fits)."""
    dx = max(0.0, BORDER_PX + 1 - box.x1) - max(0.0, box.x2 - (image.width - BORDER_PX - 1))
    dy = max(0.0, BORDER_PX + 1 - box.y1) - max(0.0, box.y2 - (image.height - BORDER_PX - 1))
    moved = Box(box.x1 + dx, box.y1 + dy, box.x2 + dx, box.y2 + dy)
    return Box(
        max(0.0, moved.x1),
        max(0.0, moved.y1),
        min(float(image.width), moved.x2),
        min(float(image.height), moved.y2),
    )


def _false_positives(state: _State, step: Step, images: list[int]) -> int:
    if step.source == "random":
        if step.thresholds:
            raise ProtocolError(
                "random fakes have no model score; difficulty groups need source 'candidates'"
            )
        return _random_fakes(state, step, images)
    return _candidate_fakes(state, step, images)


def _candidate_fakes(state: _State, step: Step, images: list[int]) -> int:
    wanted_images = set(images)
    pool = [candidate for candidate in state.candidates if candidate.image_id in wanted_images]
    wanted = _target_count(state, step, images, len(pool))
    if wanted > len(pool):
        raise ProtocolError(
            f"{wanted} fakes needed, but the source set holds only {len(pool)} detector candidates that "
            f"match no ground-truth object (IoU < {state.protocol.match_iou:g}) on these images, and the "
            "task has no look-alike ground truth to draw from; run the detector with a lower score "
            "threshold or ask for fewer"
        )
    chosen = _choose(state, step, images, [(c.image_id, c.score) for c in pool], wanted)
    for index in chosen:
        candidate = pool[index]
        state.candidates.remove(candidate)
        fake = _Item(
            candidate.image_id, candidate.label_id, candidate.box, candidate.score, None, touched=True
        )
        state.items.append(fake)
        _register(state, step, fake, fake.image_id, (fake.label_id, fake.box), candidate.score)
    return wanted


def _random_fakes(state: _State, step: Step, images: list[int]) -> int:
    if not images:
        raise ProtocolError("no images to place fakes on")
    wanted = _target_count(state, step, images, 0)
    if step.fraction is not None or step.all:
        raise ProtocolError("random fakes need count, per_image or same_count_as")
    if step.per_image is not None:
        places = [image_id for image_id in images for _ in range(step.per_image)]
    elif _spreads(step):
        if wanted < len(images):
            raise ProtocolError(f"{wanted} fakes cannot put one on each of the {len(images)} images")
        places = list(images) + [state.rng.choice(images) for _ in range(wanted - len(images))]
    else:
        places = [state.rng.choice(images) for _ in range(wanted)]
    for image_id in places:
        label = state.rng.choice(state.task.label_ids)
        fake = _Item(image_id, label, _free_box(state, image_id), 1.0, None, touched=True)
        state.items.append(fake)
        _register(state, step, fake, image_id, (label, fake.box), None)
    return len(places)


def _free_box(state: _State, image_id: int) -> Box:
    """A box of a typical object size, more than 2 px inside the image, overlapping no true or shown box."""
    image = state.image(image_id)
    width, height = _typical_size(state, image_id)
    occupied = [truth.box for truth in state.task.ground_truth if truth.image_id == image_id]
    occupied += [item.box for item in state.items if item.image_id == image_id and not item.removed]
    low = BORDER_PX + 1
    if image.width - low - width < low or image.height - low - height < low:
        raise ProtocolError(f"image {image.name!r} is too small for a {width:g}×{height:g} px fake")
    for _ in range(RANDOM_PLACEMENT_TRIES):
        x1 = float(state.rng.randint(low, int(image.width - low - width)))
        y1 = float(state.rng.randint(low, int(image.height - low - height)))
        box = Box(x1, y1, x1 + width, y1 + height)
        if not occupied or _iou_matrix([box], occupied).max() == 0.0:
            return box
    raise ProtocolError(f"found no free place for a fake on image {image.name!r} (it is too crowded)")


def _typical_size(state: _State, image_id: int) -> tuple[float, float]:
    same_image = [truth for truth in state.task.ground_truth if truth.image_id == image_id]
    sizes = same_image or list(state.task.ground_truth)
    if not sizes:
        size = float(state.task.default_box_size)
        return size, size
    model = state.rng.choice(sizes).box
    return float(round(model.width)), float(round(model.height))


def _result(state: _State) -> InjectionResult:
    order = {image.id: position for position, image in enumerate(state.task.images)}
    kept = [item for item in state.items if not item.removed]
    kept.sort(key=lambda item: order[item.image_id])
    shown_index = {id(item): index for index, item in enumerate(kept)}
    entries = list(state.entries)
    for item in kept:
        if item.entry is not None:
            entries[item.entry] = replace(entries[item.entry], shown_index=shown_index[id(item)])
    shown = tuple(ShownObject(item.image_id, item.label_id, item.box, item.score) for item in kept)
    return InjectionResult(shown=shown, register=tuple(entries))


def canonical_entries(entries: Iterable[RegisterEntry]) -> list[dict[str, Any]]:
    return [_entry_json(entry) for entry in entries]
