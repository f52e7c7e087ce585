"""A seeded model of an expert annotating one image, unaided or aided (pure: no I/O).

What an expert sees is a `Scene`: the image's true objects (label index, difficulty d ∈ [0, 1]) and its
look-alikes (objects that are not true objects, with a difficulty: how much they resemble one). In aided
mode the expert also sees the shown suggestions. The expert's answer is an `ImageWork`: the objects created,
the decision on each shown suggestion, and the seconds spent, all drawn from `np.random.Generator`s seeded
by (seed, expert, image), so the same seed gives the same work whatever order the images are run in.

Probabilities (σ = logistic function, z = the expert's skill, a standard normal draw per expert):
- detect a true object of class c:  σ(sensitivity + s·z + class_offset[c] − difficulty_slope·d)
- give it the right label:          σ(label_skill + s·z − label_difficulty_slope·d); a wrong label j of
  true label i is drawn ∝ exp(−|i − j| / confusion_decay) (neighbouring grades more likely)
- mark a look-alike:                σ(lookalike_logit − s·z + lookalike_slope·d)
- aided: a wrong suggestion the expert would see through is still accepted with the automation bias
  b[kind][group] (group = difficulty tercile: 0 for d < 1/3, 1 below 2/3, else 2), scaled per expert.
- seconds = speed · (per_image + per_object · objects + per_edit · edits) · LogNormal(0, time_noise).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np

from app.geometry import INCLUSIVE, iou_matrix

Box = tuple[float, float, float, float]
GROUPS = 3


class Decision(StrEnum):
    keep = "keep"
    relabel = "relabel"
    move = "move"
    delete = "delete"


class Seen(StrEnum):
    """What a shown suggestion is, as the (omniscient) simulator sees it against the scene."""

    correct = "correct"
    wrong_label = "wrong_label"
    duplicate = "duplicate"
    lookalike = "lookalike"
    nothing = "nothing"


@dataclass(frozen=True)
class SceneObject:
    box: Box
    label: int  # index into the task's labels; -1 for a look-alike
    difficulty: float


@dataclass(frozen=True)
class Scene:
    """One image as the simulator knows it: true objects and look-alikes in a stable order."""

    key: int  # the image's position in its task: seeds the draws, never a database id
    width: int
    height: int
    truth: tuple[SceneObject, ...]
    lookalikes: tuple[SceneObject, ...] = ()


@dataclass(frozen=True)
class ShownObject:
    box: Box
    label: int


@dataclass(frozen=True)
class ExpertParams:
    """One task kind's population: means, between-expert spread and the aided behaviour."""

    sensitivity: float
    difficulty_slope: float
    label_skill: float
    label_difficulty_slope: float
    confusion_decay: float
    lookalike_logit: float
    lookalike_slope: float
    skill_sd: float
    jitter: float  # box centre shift as a fraction of the box size (standard deviation)
    # automation bias per kind of wrong suggestion and difficulty group (probability of letting it stand)
    bias_wrong_label: tuple[float, float, float]
    bias_duplicate: tuple[float, float, float]
    bias_fake: tuple[float, float, float]
    bias_omission: tuple[float, float, float]  # not adding a true object that no suggestion shows
    bias_sd: float
    duplicate_delete_both: float
    reject_correct: float  # deleting a correct suggestion, at most; scaled by how unsure the expert is
    move_share: float  # share of kept suggestions whose box the expert adjusts
    unaided_s: tuple[float, float, float]  # per image, per true object in view, per created object
    aided_s: tuple[float, float, float]  # per image, per shown suggestion, per edit
    speed_sd: float
    time_noise: float
    class_offsets: tuple[float, ...] = ()


@dataclass(frozen=True)
class Expert:
    """One simulated expert: population parameters plus its own skill, bias and speed."""

    index: int
    params: ExpertParams
    skill: float
    bias_scale: float
    speed: float
    seed: int

    def rng(self, mode: str, task_key: int, image_key: int) -> np.random.Generator:
        mode_key = {"training": 0, "unaided": 1, "aided": 2}[mode]
        return np.random.default_rng([self.seed, 1, self.index, task_key, mode_key, image_key])


def population(params: ExpertParams, count: int, seed: int, task_key: int = 0) -> list[Expert]:
    """`count` experts drawn from the population; expert i is the same whatever `count` is."""
    experts = []
    for index in range(count):
        rng = np.random.default_rng([seed, 0, task_key, index])
        skill, bias, speed = rng.standard_normal(3)
        experts.append(
            Expert(
                index=index,
                params=params,
                skill=float(skill),
                bias_scale=float(np.exp(params.bias_sd * bias)),
                speed=float(np.exp(params.speed_sd * speed)),
                seed=seed,
            )
        )
    return experts


@dataclass(frozen=True)
class Created:
    box: Box
    label: int


@dataclass
class ImageWork:
    """The expert's work on one image: created objects, a decision per shown suggestion, seconds."""

    created: list[Created] = field(default_factory=list)
    decisions: list[tuple[Decision, int, Box]] = field(default_factory=list)  # per shown: what, label, box
    seconds: float = 0.0

    @property
    def edits(self) -> int:
        return len(self.created) + sum(1 for decision, _, _ in self.decisions if decision != Decision.keep)


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-x)))


def _group(difficulty: float) -> int:
    return min(int(difficulty * GROUPS), GROUPS - 1)


def p_detect(expert: Expert, obj: SceneObject) -> float:
    p = expert.params
    offset = p.class_offsets[obj.label] if obj.label < len(p.class_offsets) else 0.0
    skill = p.skill_sd * expert.skill
    return _sigmoid(p.sensitivity + skill + offset - p.difficulty_slope * obj.difficulty)


def p_right_label(expert: Expert, obj: SceneObject) -> float:
    p = expert.params
    return _sigmoid(p.label_skill + p.skill_sd * expert.skill - p.label_difficulty_slope * obj.difficulty)


def p_mark_lookalike(expert: Expert, obj: SceneObject) -> float:
    p = expert.params
    return _sigmoid(p.lookalike_logit - p.skill_sd * expert.skill + p.lookalike_slope * obj.difficulty)


def bias(expert: Expert, table: tuple[float, float, float], difficulty: float) -> float:
    return float(min(table[_group(difficulty)] * expert.bias_scale, 0.99))


def _wrong_label(rng: np.random.Generator, true_label: int, labels: int, decay: float) -> int:
    others = np.array([j for j in range(labels) if j != true_label])
    weights = np.exp(-np.abs(others - true_label) / decay)
    return int(rng.choice(others, p=weights / weights.sum()))


def _perceived_label(rng: np.random.Generator, expert: Expert, obj: SceneObject, labels: int) -> int:
    if labels < 2 or rng.random() < p_right_label(expert, obj):
        return obj.label
    return _wrong_label(rng, obj.label, labels, expert.params.confusion_decay)


def _jittered(rng: np.random.Generator, expert: Expert, box: Box, scene: Scene) -> Box:
    x1, y1, x2, y2 = box
    width, height = x2 - x1, y2 - y1
    dx, dy = rng.normal(0.0, expert.params.jitter, 2) * (width, height)
    margin = 3.0
    dx = float(np.clip(dx, margin - x1, scene.width - margin - x2))
    dy = float(np.clip(dy, margin - y1, scene.height - margin - y2))
    return (round(x1 + dx, 1), round(y1 + dy, 1), round(x2 + dx, 1), round(y2 + dy, 1))


def _seconds(
    rng: np.random.Generator, expert: Expert, costs: tuple[float, float, float], items: int, edits: int
) -> float:
    per_image, per_item, per_edit = costs
    noise = float(np.exp(rng.normal(0.0, expert.params.time_noise)))
    return round(expert.speed * (per_image + per_item * items + per_edit * edits) * noise, 2)


def unaided(expert: Expert, scene: Scene, labels: int, task_key: int = 0) -> ImageWork:
    """Annotate from scratch: find true objects, label them, mark some look-alikes."""
    rng = expert.rng("unaided", task_key, scene.key)
    work = ImageWork()
    for obj in scene.truth:
        if rng.random() < p_detect(expert, obj):
            label = _perceived_label(rng, expert, obj, labels)
            work.created.append(Created(_jittered(rng, expert, obj.box, scene), label))
    for obj in scene.lookalikes:
        if rng.random() < p_mark_lookalike(expert, obj):
            work.created.append(Created(_jittered(rng, expert, obj.box, scene), 0))
    work.seconds = _seconds(rng, expert, expert.params.unaided_s, len(scene.truth), len(work.created))
    return work


def classify_shown(scene: Scene, shown: list[ShownObject], iou: float = 0.5) -> list[tuple[Seen, int]]:
    """What each shown suggestion is: (kind, index of its true object or look-alike, -1 for none)."""
    truth = np.array([obj.box for obj in scene.truth]).reshape(-1, 4)
    looks = np.array([obj.box for obj in scene.lookalikes]).reshape(-1, 4)
    taken: set[int] = set()
    seen: list[tuple[Seen, int]] = []
    for item in shown:
        overlap = _iou(np.array(item.box), truth)
        best = int(np.argmax(overlap)) if len(overlap) else -1
        if best >= 0 and overlap[best] >= iou:
            if best in taken:
                seen.append((Seen.duplicate, best))
                continue
            taken.add(best)
            right = scene.truth[best].label == item.label
            seen.append((Seen.correct if right else Seen.wrong_label, best))
            continue
        look = _iou(np.array(item.box), looks)
        near = int(np.argmax(look)) if len(look) else -1
        seen.append((Seen.lookalike, near) if near >= 0 and look[near] >= iou else (Seen.nothing, -1))
    return seen


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    pixel_box = np.asarray(box, dtype=np.float64).reshape(1, 4)
    return iou_matrix(pixel_box, boxes.astype(np.float64), INCLUSIVE).reshape(-1)


def aided(
    expert: Expert, scene: Scene, shown: list[ShownObject], labels: int, task_key: int = 0
) -> ImageWork:
    """Review the suggestions (keep, relabel, move or delete each), then add what no suggestion shows."""
    rng = expert.rng("aided", task_key, scene.key)
    work = ImageWork()
    seen = classify_shown(scene, shown)
    covered = {index for kind, index in seen if kind in (Seen.correct, Seen.wrong_label)}
    originals = {index: position for position, (kind, index) in enumerate(seen) if kind == Seen.correct}
    for item, (kind, index) in zip(shown, seen, strict=True):
        work.decisions.append(_review(rng, expert, scene, item, kind, index, labels))
    _delete_duplicate_originals(rng, expert, scene, seen, originals, work)
    for index, obj in enumerate(scene.truth):
        if index in covered or any(k == Seen.duplicate and i == index for k, i in seen):
            continue
        if rng.random() < p_detect(expert, obj) * (
            1.0 - bias(expert, expert.params.bias_omission, obj.difficulty)
        ):
            label = _perceived_label(rng, expert, obj, labels)
            work.created.append(Created(_jittered(rng, expert, obj.box, scene), label))
    work.seconds = _seconds(rng, expert, expert.params.aided_s, len(shown), work.edits)
    return work


def _review(
    rng: np.random.Generator,
    expert: Expert,
    scene: Scene,
    item: ShownObject,
    kind: Seen,
    index: int,
    labels: int,
) -> tuple[Decision, int, Box]:
    p = expert.params
    keep = (Decision.keep, item.label, item.box)
    if kind == Seen.nothing:
        return (
            (Decision.delete, item.label, item.box) if rng.random() > bias(expert, p.bias_fake, 0.0) else keep
        )
    if kind == Seen.lookalike:
        look = scene.lookalikes[index]
        sees_through = rng.random() > p_mark_lookalike(expert, look)
        if sees_through and rng.random() > bias(expert, p.bias_fake, look.difficulty):
            return (Decision.delete, item.label, item.box)
        return keep
    obj = scene.truth[index]
    if kind == Seen.duplicate:
        if rng.random() > bias(expert, p.bias_duplicate, obj.difficulty):
            return (Decision.delete, item.label, item.box)
        return keep
    if rng.random() < p.reject_correct * (1.0 - p_detect(expert, obj)):
        return (Decision.delete, item.label, item.box)
    perceived = _perceived_label(rng, expert, obj, labels)
    if perceived != item.label and rng.random() > bias(expert, p.bias_wrong_label, obj.difficulty):
        return (Decision.relabel, perceived, item.box)
    if rng.random() < p.move_share:
        return (Decision.move, item.label, _jittered(rng, expert, obj.box, scene))
    return keep


def _delete_duplicate_originals(
    rng: np.random.Generator,
    expert: Expert,
    scene: Scene,
    seen: list[tuple[Seen, int]],
    originals: dict[int, int],
    work: ImageWork,
) -> None:
    """Confused by a duplicate pair, an expert sometimes deletes both boxes."""
    for position, (kind, index) in enumerate(seen):
        if kind != Seen.duplicate or index not in originals:
            continue
        if (
            work.decisions[position][0] == Decision.delete
            and rng.random() < expert.params.duplicate_delete_both
        ):
            original = originals[index]
            _, label, box = work.decisions[original]
            work.decisions[original] = (Decision.delete, label, box)
