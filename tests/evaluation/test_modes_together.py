"""Both modes of a task computed in one batch (`service.modes_parts`) equal each mode computed alone, to the
bit."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from app.evaluation import service
from app.evaluation.service import Boxes, ExpertWork, MetricsParams, TaskData
from app.models import TaskKind

IMAGES = 6
SPAN = 12


def _boxes(rng: np.random.Generator, count: int, labels: list[int], images: int = IMAGES) -> Boxes:
    corners = rng.integers(0, 500, size=(count, 2)).astype(np.float64)
    sizes = rng.integers(8, 70, size=(count, 2)).astype(np.float64)
    return Boxes(
        np.hstack([corners, corners + sizes]),
        rng.choice(labels, count).astype(np.int64),
        rng.integers(1, images + 1, count).astype(np.int64),
    )


def _near(rng: np.random.Generator, boxes: Boxes, keep: float, labels: list[int]) -> Boxes:
    chosen = np.flatnonzero(rng.random(len(boxes)) < keep)
    moved = boxes.boxes[chosen] + rng.integers(-8, 9, size=(len(chosen), 1))
    relabelled = np.where(
        rng.random(len(chosen)) < 0.15, rng.choice(labels, len(chosen)), boxes.labels[chosen]
    )
    return Boxes(moved, relabelled.astype(np.int64), boxes.images[chosen])


def _work(rng: np.random.Generator, reference: Boxes, labels: list[int], extra: int) -> ExpertWork:
    found, fakes = _near(rng, reference, 0.8, labels), _boxes(rng, extra, labels)
    objects = Boxes(
        np.vstack([found.boxes, fakes.boxes]),
        np.concatenate([found.labels, fakes.labels]),
        np.concatenate([found.images, fakes.images]),
    )
    order = np.argsort(objects.images, kind="stable")
    objects = objects.take(order)
    seconds = np.cumsum(rng.integers(1, 400, len(objects))).astype(np.float64)
    return ExpertWork(objects, seconds, images_seen=rng.permutation(np.arange(1, IMAGES + 1)).tolist())


def _task(seed: int, kind: TaskKind, experts: dict[str, int]) -> TaskData:
    """A task whose modes hold the given numbers of experts, with a register of every kind."""
    rng = np.random.default_rng(seed)
    labels = {11: "a", 12: "b", 13: "c"} if kind != TaskKind.detect else {11: "figure", 12: "lookalike"}
    ids = list(labels)
    reference = _boxes(rng, 60, ids)
    work = {
        mode: {f"Participant_{n}": _work(rng, reference, ids, int(rng.integers(0, 12))) for n in range(count)}
        for mode, count in experts.items()
    }
    register: dict[str, list[tuple[int | None, Boxes]]] = {
        "removed": [(1, _near(rng, reference, 0.1, ids)), (2, _near(rng, reference, 0.1, ids))],
        "false_positive": [(None, _boxes(rng, 6, ids))],
        "duplicate": [(None, _near(rng, reference, 0.05, ids))],
        "class_changed": [(3, _near(rng, reference, 0.1, ids))],
    }
    return TaskData(
        "task",
        labels,
        reference,
        work,
        _near(rng, reference, 0.9, ids),
        7,
        register,
        span=SPAN,
        kind=kind,
        images=np.arange(1, IMAGES + 1, dtype=np.int64),
    )


PARAMS = [
    MetricsParams(),
    MetricsParams(consensus_radius=20.0, min_votes=2),
    MetricsParams(iou=0.5, error_iou=0.1, consensus_nms=0.5),
    MetricsParams(iou=0.01, error_iou=0.001, count_threshold=3.0),
]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("kind", list(TaskKind))
@pytest.mark.parametrize(
    "experts", [{"unaided": 5, "aided": 4}, {"unaided": 1, "aided": 3}, {"unaided": 2, "aided": 0}]
)
def test_both_modes_in_one_batch_equal_each_mode_computed_alone(
    seed: int, kind: TaskKind, experts: dict[str, int]
) -> None:
    task = _task(seed, kind, experts)
    modes = [mode for mode in ("unaided", "aided") if task.work[mode]]
    for params in PARAMS:
        together = service.modes_parts(task, modes, params)
        for mode in modes:
            alone = service.modes_parts(task, [mode], params)[mode]
            # pickles of equal models are equal bytes only when every float is the same bits
            assert pickle.dumps(together[mode]) == pickle.dumps(alone)
            assert together[mode].metrics.model_dump_json() == alone.metrics.model_dump_json()


def test_a_kept_error_costs_only_by_the_experts_of_its_own_mode() -> None:
    """The same fake in one expert of each mode: in one batch of both modes each still costs 1 (nobody
    else of its mode made it), as each mode computed alone; counted across the modes it would cost 0."""
    rng = np.random.default_rng(7)
    ids = [11, 12]
    reference = _boxes(rng, 30, ids)
    fake = Boxes(np.array([[600.0, 600.0, 650.0, 660.0]]), np.array([11]), np.array([2]))

    def with_fake(work: ExpertWork) -> ExpertWork:
        objects = work.objects
        joined = Boxes(
            np.vstack([objects.boxes, fake.boxes]),
            np.concatenate([objects.labels, fake.labels]),
            np.concatenate([objects.images, fake.images]),
        )
        order = np.argsort(joined.images, kind="stable")
        return ExpertWork(joined.take(order), np.arange(len(joined), dtype=np.float64))

    work = {
        mode: {
            "Participant_1": with_fake(_work(rng, reference, ids, 0)),
            "Participant_2": _work(rng, reference, ids, 0),
        }
        for mode in ("unaided", "aided")
    }
    task = TaskData("task", {11: "a", 12: "b"}, reference, work, None, None, {}, span=SPAN)
    together = service.Batch.of_modes(work, ["unaided", "aided"], SPAN, reference)
    found = service.vote_weighted_of_blocks(task, together, 0.25)
    for index, mode in enumerate(("unaided", "aided")):
        alone = service.vote_weighted_of_blocks(task, service.Batch.of(work[mode], SPAN, reference), 0.25)[0]
        assert found[index].precision.tobytes() == alone.precision.tobytes()
        assert found[index].scores.tobytes() == alone.scores.tobytes()
        assert found[index].precision[0] < 1.0  # the fake is a kept error that costs its expert
