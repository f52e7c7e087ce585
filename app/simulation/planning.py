"""Study planning: the power to detect the concordance gain and the time saving between modes, and the
expected share of injected errors caught, by repeated simulation (evaluation only, no HTTP, vectorised).

How: the object-level expert model works once through a pool of experts (`POOL` draws of the population)
on the demo's phantom images (with the paper's injected errors). Each repetition then draws E experts from
the pool and N images with replacement, and evaluates all repetitions and experts at once with Concord's
concordance maths (`metrics.greedy_match`, `metrics.grouped_average_precision`: the published mean VOC AP
per class, images kept apart per expert and repetition). The paired t-test over experts (aided − unaided)
at α rejects or not; power = the share of repetitions that reject in the expected direction.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import stats

from app.evaluation import metrics as m
from app.simulation import world
from app.simulation.model import ExpertParams, population
from app.simulation.presets import preset

POOL = 40
ALPHA = 0.05
IOU = m.PAPER_IOU
CAUGHT_WHEN_MATCHED = {"removed": True, "class_changed": True, "grade_shifted": True, "false_positive": False}


@dataclass(frozen=True)
class Pool:
    """Per mode: each pool expert's final objects per image, and seconds per image."""

    kind: str
    images: int
    reference: list[tuple[np.ndarray, np.ndarray]]  # per image: boxes (n, 4), labels (n,)
    objects: dict[str, list[list[tuple[np.ndarray, np.ndarray]]]]  # mode → expert → image → boxes, labels
    seconds: dict[str, np.ndarray]  # mode → (experts, images)
    caught: dict[str, dict[str, np.ndarray]]  # kind → mode → (experts, images): caught count per image
    entries: dict[str, np.ndarray]  # kind → (images,): register entries per image


@dataclass(frozen=True)
class PlanRow:
    experts: int
    images: int
    concordance_power: float
    seconds_power: float
    concordance_gain: float  # mean over repetitions of the mean paired difference (aided − unaided)
    seconds_saved: float
    caught: dict[str, dict[str, tuple[float, float]]]  # error kind → mode → (mean, sd) over repetitions


def paired_t_rejects(differences: np.ndarray, alpha: float = ALPHA) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided paired t-test per row of `differences` (R, n): (rejects (R,), t (R,)).

    t = mean / (sd / √n) with the sample sd (ddof 1), df = n − 1; rejects when |t| > t_{1−α/2, n−1}.
    Rows with zero spread reject when their mean is not zero.
    """
    n = differences.shape[1]
    mean = differences.mean(axis=1)
    sd = differences.std(axis=1, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(sd > 0, mean / (sd / np.sqrt(n)), np.where(mean != 0, np.inf * np.sign(mean), 0.0))
    critical = stats.t.ppf(1 - alpha / 2, n - 1)
    return np.abs(t) > critical, t


def closed_form_power(effect: float, sd: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided paired t-test for normal differences: P(|T| > t_crit), T ~ noncentral t with
    df n − 1 and noncentrality effect·√n / sd."""
    critical = stats.t.ppf(1 - alpha / 2, n - 1)
    shift = effect * np.sqrt(n) / sd
    return float(stats.nct.sf(critical, n - 1, shift) + stats.nct.cdf(-critical, n - 1, shift))


@lru_cache(maxsize=8)
def build_pool(kind: str, params: ExpertParams, seed: int = 0) -> Pool:
    task = world.sim_task(kind, 0, world_images(kind))
    result = world.run(task, population(params, POOL, seed, task.task_key))
    reference = [
        (
            np.array([o.box for o in s.truth]).reshape(-1, 4),
            np.array([o.label for o in s.truth], dtype=np.int64),
        )
        for s in task.scenes
    ]
    objects: dict[str, list[list[tuple[np.ndarray, np.ndarray]]]] = {}
    seconds: dict[str, np.ndarray] = {}
    for mode, experts in result.work.items():
        shown = task.shown if mode == "aided" else tuple(() for _ in task.scenes)
        objects[mode] = [
            [_arrays(world.final_objects(work, items)) for work, items in zip(images, shown, strict=True)]
            for images in experts.values()
        ]
        seconds[mode] = np.array([[work.seconds for work in images] for images in experts.values()])
    caught, entries = _caught(task, objects)
    return Pool(kind, len(task.scenes), reference, objects, seconds, caught, entries)


def world_images(kind: str) -> int:
    return 4 if kind == "detect" else 15


def _arrays(objects: list[tuple[tuple[float, float, float, float], int]]) -> tuple[np.ndarray, np.ndarray]:
    boxes = np.array([box for box, _ in objects], dtype=np.float64).reshape(-1, 4)
    return boxes, np.array([label for _, label in objects], dtype=np.int64)


def _caught(
    task: world.SimTask, objects: dict[str, list[list[tuple[np.ndarray, np.ndarray]]]]
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """Per error kind, mode, pool expert and image: how many register entries the expert caught."""
    caught: dict[str, dict[str, np.ndarray]] = {}
    entries: dict[str, np.ndarray] = {}
    images = len(task.scenes)
    for kind, when_matched in CAUGHT_WHEN_MATCHED.items():
        chosen = [
            e for e in task.register if e.kind.value == kind and e.ref_box is not None and e.ref_label_id
        ]
        if not chosen:
            continue
        boxes = np.array(
            [[e.ref_box.x1, e.ref_box.y1, e.ref_box.x2, e.ref_box.y2] for e in chosen if e.ref_box]
        )
        labels = np.array([(e.ref_label_id or 1) - 1 for e in chosen], dtype=np.int64)
        where = np.array([e.image_id - 1 for e in chosen], dtype=np.int64)
        entries[kind] = np.bincount(where, minlength=images)
        caught[kind] = {}
        for mode, experts in objects.items():
            table = np.zeros((len(experts), images))
            for row, per_image in enumerate(experts):
                det_boxes = np.concatenate([b for b, _ in per_image])
                det_labels = np.concatenate([lab for _, lab in per_image])
                det_images = np.concatenate([np.full(len(lab), i) for i, (_, lab) in enumerate(per_image)])
                matched = m.matched_register_entries(
                    boxes, labels, where, det_boxes, det_labels, det_images, IOU
                )
                hit = matched if when_matched else ~matched
                table[row] = np.bincount(where[hit], minlength=images)
            caught[kind][mode] = table
    return caught, entries


def _concordance(pool: Pool, mode: str, experts: np.ndarray, images: np.ndarray, classes: int) -> np.ndarray:
    """Concordance (mean AP over classes) of each (repetition, expert) on its drawn images: (R, E)."""
    reps, count = experts.shape
    n_images = images.shape[1]
    det_b, det_l, det_i, ref_b, ref_l, ref_i = [], [], [], [], [], []
    for r in range(reps):
        for e in range(count):
            for k in range(n_images):
                key = (r * count + e) * n_images + k
                boxes, labels = pool.objects[mode][experts[r, e]][images[r, k]]
                det_b.append(boxes)
                det_l.append(labels)
                det_i.append(np.full(len(labels), key))
                tb, tl = pool.reference[images[r, k]]
                ref_b.append(tb)
                ref_l.append(tl)
                ref_i.append(np.full(len(tl), key))
    dets = np.concatenate(det_b), np.concatenate(det_l), np.concatenate(det_i)
    refs = np.concatenate(ref_b), np.concatenate(ref_l), np.concatenate(ref_i)
    match = m.greedy_match(*dets, *refs, iou=IOU)
    owner = dets[2] // n_images
    groups = owner * classes + dets[1]
    ref_owner = refs[2] // n_images
    n_ref = np.bincount(ref_owner * classes + refs[1], minlength=reps * count * classes)
    ap = m.grouped_average_precision(match.true_positive, groups, n_ref).reshape(reps * count, classes)
    seen = np.bincount(groups, minlength=reps * count * classes).reshape(reps * count, classes) > 0
    counted = seen | (n_ref.reshape(reps * count, classes) > 0)
    mean: np.ndarray = (ap * counted).sum(axis=1) / np.maximum(counted.sum(axis=1), 1)
    return mean.reshape(reps, count)


def plan_row(pool: Pool, labels: int, experts: int, images: int, reps: int, seed: int) -> PlanRow:
    rng = np.random.default_rng([seed, experts, images])
    chosen = np.stack([rng.choice(POOL, experts, replace=False) for _ in range(reps)])
    drawn = rng.integers(0, pool.images, size=(reps, images))
    concordance = {mode: _concordance(pool, mode, chosen, drawn, labels) for mode in ("unaided", "aided")}
    seconds = {
        mode: pool.seconds[mode][chosen[:, :, None], drawn[:, None, :]].mean(axis=2)
        for mode in ("unaided", "aided")
    }
    gain = concordance["aided"] - concordance["unaided"]
    saved = seconds["unaided"] - seconds["aided"]
    conc_rejects, conc_t = paired_t_rejects(gain)
    time_rejects, time_t = paired_t_rejects(saved)
    caught: dict[str, dict[str, tuple[float, float]]] = {}
    for kind, by_mode in pool.caught.items():
        total = pool.entries[kind][drawn].sum(axis=1) * experts
        caught[kind] = {}
        for mode, table in by_mode.items():
            found = table[chosen[:, :, None], drawn[:, None, :]].sum(axis=(1, 2))
            rate = found[total > 0] / total[total > 0]
            if len(rate):
                caught[kind][mode] = (float(rate.mean()), float(rate.std()))
    return PlanRow(
        experts=experts,
        images=images,
        concordance_power=float(np.mean(conc_rejects & (conc_t > 0))),
        seconds_power=float(np.mean(time_rejects & (time_t > 0))),
        concordance_gain=float(gain.mean()),
        seconds_saved=float(saved.mean()),
        caught=caught,
    )


def plan(
    kind: str,
    experts: list[int],
    images: list[int],
    params: ExpertParams | None = None,
    preset_name: str = "paper",
    reps: int = 200,
    seed: int = 0,
) -> list[PlanRow]:
    """Power and caught rates for every (experts, images) pair; images are per mode."""
    chosen = params or preset(preset_name)[kind]
    pool = build_pool(kind, chosen)  # one pool per population; the seed draws experts and images from it
    labels = len(world.LABELS[kind])
    return [plan_row(pool, labels, e, n, reps, seed) for e in experts for n in images]
