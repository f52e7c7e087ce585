"""Injected errors caught or missed, per kind (DESIGN.md "Evaluation"), on a hand-made study with known answers."""

from __future__ import annotations

import numpy as np

from app.evaluation import metrics as m
from app.evaluation import service
from app.evaluation.service import Boxes, ExpertWork, MetricsParams, TaskData

Box = tuple[float, float, float, float]
CELL: Box = (10.0, 10.0, 30.0, 30.0)
OTHER_CELL: Box = (100.0, 10.0, 120.0, 30.0)
COPY: Box = (14.0, 12.0, 34.0, 32.0)  # a duplicate of CELL shifted by 4 px, 2 px: IoU with CELL ≈ 0.62
FAKE: Box = (200.0, 200.0, 220.0, 220.0)


def boxes(rows: list[tuple[Box, int]]) -> Boxes:
    return Boxes(
        np.array([box for box, _ in rows], dtype=np.float64).reshape(-1, 4),
        np.array([label for _, label in rows], dtype=np.int64),
        np.zeros(len(rows), np.int64),
    )


def caught(
    kind: str, entry: tuple[Box, int], objects: list[tuple[Box, int]], original: Box | None = None
) -> bool:
    entries = boxes([entry])
    originals = None if original is None else np.array([original], dtype=np.float64)
    found = m.caught_errors(
        kind,
        (entries.boxes, entries.labels, entries.images),
        (boxes(objects).boxes, boxes(objects).labels, boxes(objects).images),
        originals,
    )
    return bool(found[0])


def test_removed_is_caught_when_the_expert_redraws_the_cell_with_its_label() -> None:
    assert caught("removed", (CELL, 1), [(CELL, 1)])
    assert not caught("removed", (CELL, 1), [(CELL, 2)])
    assert not caught("removed", (CELL, 1), [(OTHER_CELL, 1)])


def test_a_relabelled_cell_is_caught_when_the_expert_restores_the_reference_label() -> None:
    for kind in ("class_changed", "grade_shifted"):
        assert caught(kind, (CELL, 1), [(CELL, 1)])
        assert not caught(kind, (CELL, 1), [(CELL, 3)])  # kept the wrong label shown


def test_a_fake_is_caught_when_the_expert_keeps_no_object_on_it_whatever_its_label() -> None:
    assert caught("false_positive", (FAKE, 1), [(CELL, 1)])
    assert not caught("false_positive", (FAKE, 1), [(FAKE, 1)])
    assert not caught("false_positive", (FAKE, 1), [(FAKE, 2)])  # relabelling a fake keeps it


def test_a_duplicate_is_judged_on_the_pair() -> None:
    entry = (COPY, 1)
    assert caught("duplicate", entry, [(CELL, 1)], CELL)  # kept the original, deleted the copy
    assert caught("duplicate", entry, [(COPY, 1)], CELL)  # kept the copy only: one object on the cell
    assert caught("duplicate", entry, [], CELL)
    assert not caught("duplicate", entry, [(CELL, 1), (COPY, 1)], CELL)  # kept both
    # Testing the copy alone would call "kept the original" a kept duplicate: CELL matches COPY at IoU ≥ 0.25.
    assert m.iou_matrix(np.array([CELL]), np.array([COPY]))[0, 0] >= m.PAPER_IOU


def test_the_original_of_a_duplicate_is_the_reference_object_overlapping_it_most() -> None:
    reference = np.array([OTHER_CELL, CELL], dtype=np.float64)
    copies = np.array([COPY, FAKE], dtype=np.float64)

    originals = m.duplicate_originals(copies, np.zeros(2, np.int64), reference, np.zeros(2, np.int64))

    assert originals.tolist() == [1, m.NO_MATCH]


def _task(work: dict[str, list[tuple[Box, int]]], register: dict[str, list[tuple[Box, int]]]) -> TaskData:
    experts = {name: ExpertWork(boxes(rows), np.zeros(len(rows))) for name, rows in work.items()}
    entries: dict[str, list[tuple[int | None, Boxes]]] = {
        kind: [(1, boxes(rows))] for kind, rows in register.items()
    }
    reference = boxes([(CELL, 1), (OTHER_CELL, 2)])
    return TaskData("T", {1: "a", 2: "b", 3: "c"}, reference, {"aided": experts}, None, None, entries, span=1)


def test_study_counts_caught_missed_and_the_published_matched_side_by_side() -> None:
    register = {"duplicate": [(COPY, 1)], "false_positive": [(FAKE, 1)], "removed": [(OTHER_CELL, 2)]}
    task = _task(
        {
            "careful": [(CELL, 1), (OTHER_CELL, 2)],  # removed the copy and the fake, redrew the removed cell
            "trusting": [(CELL, 1), (COPY, 1), (FAKE, 1)],  # kept every error
        },
        register,
    )

    injected = service.task_metrics(task, MetricsParams()).injected_errors

    duplicate = injected["duplicate"]["all"]["aided"]
    assert duplicate.experts["careful"].model_dump() == {
        "total": 1,
        "caught": 1,
        "missed": 0,
        "caught_rate": 1.0,
        "matched": 1,  # the published raw count: the original matches the copy's box
    }
    assert (duplicate.experts["trusting"].caught, duplicate.experts["trusting"].missed) == (0, 1)
    fake = injected["false_positive"]["all"]["aided"]
    assert (fake.experts["careful"].caught, fake.experts["careful"].matched) == (1, 0)
    assert (fake.experts["trusting"].caught, fake.experts["trusting"].matched) == (0, 1)
    removed = injected["removed"]["1"]["aided"]
    assert (removed.experts["careful"].caught, removed.experts["trusting"].caught) == (1, 0)
    pooled = fake.pooled
    assert (pooled.total, pooled.caught, pooled.missed, pooled.caught_rate) == (2, 1, 1, 0.5)
    assert (pooled.matched, pooled.rate) == (1, 0.5)
