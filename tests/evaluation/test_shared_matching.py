"""Overlaps found once and shared: every matching built on them equals the matching computed on its own."""

from __future__ import annotations

import numpy as np
import pytest

from app.evaluation import metrics as m
from app.evaluation import object_columns
from app.evaluation.service import Batch, Boxes, ExpertWork, RegisterOverlaps, TaskData, _register_flags


def _random_boxes(rng: np.random.Generator, count: int, images: int, labels: int, size: int = 60) -> Boxes:
    corners = rng.integers(0, 400, size=(count, 2)).astype(np.float64)
    sizes = rng.integers(0, size, size=(count, 2)).astype(np.float64)  # zero-size boxes too
    return Boxes(
        np.hstack([corners, corners + sizes]),
        rng.integers(0, labels, count).astype(np.int64),
        rng.integers(0, images, count).astype(np.int64),
    )


def _all_intersecting_pairs(
    det: m.FloatArray, det_keys: m.IntArray, ref: m.FloatArray, ref_keys: m.IntArray, pad: float
) -> list[tuple[int, int]]:
    pairs = []
    for d in range(len(det)):
        for r in range(len(ref)):
            width = min(det[d, 2], ref[r, 2]) - max(det[d, 0], ref[r, 0]) + pad
            height = min(det[d, 3], ref[r, 3]) - max(det[d, 1], ref[r, 1]) + pad
            if det_keys[d] == ref_keys[r] and width > 0 and height > 0:
                pairs.append((d, r))
    return pairs


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("plus_one", [True, False])
def test_the_sweep_finds_exactly_the_intersecting_same_key_pairs_in_order(seed: int, plus_one: bool) -> None:
    rng = np.random.default_rng(seed)
    det, ref = _random_boxes(rng, 120, 3, 2), _random_boxes(rng, 90, 3, 2)
    # touching boxes: they share a pixel row with the +1 convention and nothing without it
    det.boxes[0], ref.boxes[0] = (10.0, 10.0, 20.0, 20.0), (20.0, 10.0, 30.0, 20.0)
    det.images[0] = ref.images[0] = 0
    step = 7 if seed % 2 else 10**12  # keys spanning a huge range take the ranked path
    det_keys, ref_keys = det.images * step, ref.images * step

    found = m._overlapping_same_key_pairs(det.boxes, det_keys, ref.boxes, ref_keys, plus_one)

    expected = _all_intersecting_pairs(det.boxes, det_keys, ref.boxes, ref_keys, 1.0 if plus_one else 0.0)
    assert list(zip(found[0].tolist(), found[1].tolist(), strict=True)) == expected
    assert ((0, 0) in expected) == plus_one


@pytest.mark.parametrize("seed", range(3))
def test_the_sweep_by_buckets_finds_every_intersecting_pair_of_crowded_images(seed: int) -> None:
    rng = np.random.default_rng(30 + seed)
    det, ref = _random_boxes(rng, 1500, 2, 1, size=50), _random_boxes(rng, 700, 2, 1, size=50)
    ref.boxes[:5] = det.boxes[:5] + 0.5  # fractions: positions between the buckets' edges
    det_keys, ref_keys = det.images + 40, ref.images + 40
    positions = np.sort(ref.boxes[:, 0])
    low, _ = m._windows(positions, det.boxes[:, 0], det.boxes[:, 2], np.zeros(1500), 600.0, 51.0)
    # these sizes take the buckets (a few pixels wide), not the binary searches
    assert not np.array_equal(low, np.searchsorted(positions, det.boxes[:, 0]))

    found = m._overlapping_same_key_pairs(det.boxes, det_keys, ref.boxes, ref_keys, True)

    width = np.minimum(det.boxes[:, None, 2], ref.boxes[None, :, 2]) - np.maximum(
        det.boxes[:, None, 0], ref.boxes[None, :, 0]
    )
    height = np.minimum(det.boxes[:, None, 3], ref.boxes[None, :, 3]) - np.maximum(
        det.boxes[:, None, 1], ref.boxes[None, :, 1]
    )
    same = det_keys[:, None] == ref_keys[None, :]
    expected = np.nonzero(same & (width + 1 > 0) & (height + 1 > 0))
    np.testing.assert_array_equal(found[0], expected[0])
    np.testing.assert_array_equal(found[1], expected[1])


def _batch(seed: int) -> tuple[Batch, Boxes]:
    rng = np.random.default_rng(seed)
    reference = _random_boxes(rng, 40, 4, 3, size=40)
    experts = {}
    for name in ("a", "b", "c"):
        jittered = reference.boxes + rng.integers(-6, 7, size=reference.boxes.shape)
        keep = rng.random(len(reference)) < 0.8
        labels = np.where(rng.random(len(reference)) < 0.2, (reference.labels + 1) % 3, reference.labels)
        own = Boxes(jittered[keep], labels[keep], reference.images[keep])
        extra = _random_boxes(rng, 8, 4, 3, size=40)
        objects = Boxes(
            np.vstack([own.boxes, extra.boxes]),
            np.concatenate([own.labels, extra.labels]),
            np.concatenate([own.images, extra.images]),
        )
        experts[name] = ExpertWork(objects, np.zeros(len(objects.labels)))
    return Batch.of(experts, 10, reference), reference


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("iou", [0.1, 0.25, 0.5])
def test_matchings_from_shared_overlaps_equal_the_matchings_on_their_own(seed: int, iou: float) -> None:
    batch, reference = _batch(seed)
    references = batch.repeat(reference)
    objects = batch.objects
    found = batch.reference_overlaps

    alone = m.greedy_match(*_fields(objects), *_fields(references), iou=iou)
    shared = found.greedy(iou)
    np.testing.assert_array_equal(shared.true_positive, alone.true_positive)
    np.testing.assert_array_equal(shared.best_reference, alone.best_reference)
    np.testing.assert_array_equal(shared.best_iou, alone.best_iou)

    no_labels = np.zeros(len(objects), dtype=np.int64)
    alone_any = m.greedy_match(
        objects.boxes,
        no_labels,
        objects.images,
        references.boxes,
        np.zeros(len(references), dtype=np.int64),
        references.images,
        iou=iou,
    )
    shared_any = found.greedy(iou, any_class=True)
    np.testing.assert_array_equal(shared_any.true_positive, alone_any.true_positive)
    np.testing.assert_array_equal(shared_any.best_reference, alone_any.best_reference)

    det, ref = m.one_to_one_match(*_fields(objects), *_fields(references), "iou", iou)
    keys = found.class_keys
    det_shared, ref_shared = m.one_to_one_of_overlaps(
        found.same_class, objects.boxes, keys[0], references.boxes, keys[1], iou
    )
    np.testing.assert_array_equal(det_shared, det)
    np.testing.assert_array_equal(ref_shared, ref)


def _fields(boxes: Boxes) -> tuple[m.FloatArray, m.IntArray, m.IntArray]:
    return boxes.boxes, boxes.labels, boxes.images


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("kind", ["removed", "class_changed", "false_positive", "duplicate"])
def test_register_flags_from_shared_overlaps_equal_the_rules_on_their_own(seed: int, kind: str) -> None:
    from app.evaluation.service import _register_candidates, caught_entries

    batch, reference = _batch(seed)
    rng = np.random.default_rng(100 + seed)
    registers = [_random_boxes(rng, 12, 4, 3, size=40), reference.take(np.arange(0, 40, 3))]
    task = TaskData("t", {0: "a", 1: "b", 2: "c"}, reference, {}, None, None, {}, span=10)
    overlaps = RegisterOverlaps.of(batch, registers)
    entries = registers[1]
    pairs = overlaps.of_kind(len(registers[0]), len(entries))

    found, caught = _register_flags(task, kind, entries, batch, pairs, 0.25)

    candidates = batch.objects.take(_register_candidates(batch, [entries]))
    expected_found = m.matched_register_entries(
        *_fields(batch.repeat(entries)), *_fields(candidates), iou=0.25
    )
    np.testing.assert_array_equal(found.reshape(-1), expected_found)
    np.testing.assert_array_equal(caught, caught_entries(task, kind, entries, batch, 0.25))


@pytest.mark.parametrize("seed", range(4))
def test_one_sweep_against_reference_and_registers_equals_a_sweep_against_each(seed: int) -> None:
    batch, reference = _batch(seed)
    rng = np.random.default_rng(200 + seed)
    registers = Boxes(*_fields(_random_boxes(rng, 30, 4, 3, size=90)))  # wider than the reference's boxes
    shared = Batch(batch.names, batch.objects, batch.owners, batch.bounds, batch.span, reference, registers)

    for found, alone in (
        (shared.reference_overlaps.any_class, batch.overlaps_with_repeated(reference)),
        (shared.register_overlaps, batch.overlaps_with_repeated(registers)),
    ):
        np.testing.assert_array_equal(found.det, alone.det)
        np.testing.assert_array_equal(found.ref, alone.ref)
        np.testing.assert_array_equal(found.iou, alone.iou)
    assert len(shared.register_overlaps.det)
    assert len(shared.reference_overlaps.any_class.det)


@pytest.mark.parametrize("ids", [[7, 9, 10, 15], [3], [5, 10**9]])
def test_sorted_positions_by_table_equal_the_binary_search(ids: list[int]) -> None:
    known = np.array(ids, dtype=np.int64)
    inside = np.array([ids[0], ids[-1], *ids, ids[0] + 1, (ids[0] + ids[-1]) // 2], dtype=np.int64)
    outside = [np.array([ids[0] - 1, *ids]), np.array([*ids, ids[-1] + 1]), np.zeros(0, np.int64)]
    for images in (inside, np.repeat(inside, 50), *outside):
        found = m.sorted_positions(known, images)
        np.testing.assert_array_equal(found, np.searchsorted(known, images))
        assert found.dtype == np.searchsorted(known, images).dtype


def test_object_tables_are_sorted_into_the_layout_order_whatever_order_the_rows_come_in() -> None:
    rng = np.random.default_rng(5)
    count = 200
    rows = [
        (
            int(rng.integers(1, 3)),  # task
            int(rng.integers(0, 2)),  # mode
            int(rng.integers(1, 4)),  # expert
            int(rng.integers(10, 14)),  # image
            7,
            1.0,
            2.0,
            3.0,
            4.0,
            float(index),  # edited seconds, to see where each row went
            int(rng.integers(0, 3)),  # position
            1000 - index,  # id
        )
        for index in range(count)
    ]
    expected_order = sorted(rows, key=lambda row: (row[0], row[1], row[3], row[2], row[10], row[11]))

    tables = object_columns.tables_by_task([rows[i] for i in rng.permutation(count)], [1, 2, 3])

    assert len(tables[3]) == 0
    for task in (1, 2):
        wanted = [row[9] for row in expected_order if row[0] == task]
        assert tables[task][:, object_columns.EDITED].tolist() == wanted


def _task(seed: int) -> TaskData:
    batch, reference = _batch(seed)
    rng = np.random.default_rng(seed)
    experts = {}
    for row, name in enumerate(batch.names):
        start, stop = batch.bounds[row]
        images = batch.objects.images[start:stop] - row * batch.span
        objects = Boxes(batch.objects.boxes[start:stop], batch.objects.labels[start:stop], images)
        seconds = np.sort(rng.integers(0, 500, stop - start)).astype(np.float64)
        experts[name] = ExpertWork(objects, seconds, [0, 1, 2, 3])
    return TaskData(
        "t",
        {0: "a", 1: "b", 2: "c"},
        reference,
        {"unaided": experts},
        None,
        None,
        {},
        span=10,
        images=np.arange(4, dtype=np.int64),
    )


def test_kept_results_follow_the_task_content_and_stay_the_callers_own() -> None:
    from app.evaluation import service

    service.clear_result_cache()
    params = service.MetricsParams()
    task = _task(1)
    first = service.cached_task_metrics(task, params)
    first.modes["unaided"].experts["a"].concordance = -1.0  # the caller's copy: the kept result stays
    again = service.cached_task_metrics(task, params)
    assert again == service.task_metrics(task, params)
    assert again.modes["unaided"].experts["a"].concordance >= 0

    edited = _task(1)
    work = edited.work["unaided"]["b"]
    work.objects.boxes[0] += 9.0  # one box moved: another digest, computed afresh
    assert service.task_digest(edited, params) != service.task_digest(task, params)
    assert service.cached_task_metrics(edited, params) == service.task_metrics(edited, params)
    assert service.task_digest(task, service.MetricsParams(iou=0.5)) != service.task_digest(task, params)


@pytest.mark.parametrize(("seed", "images"), [(0, 5), (1, 5), (2, 5), (3, 5), (4, 60), (5, 60)])
def test_seconds_per_image_of_a_batch_equal_each_expert_alone(seed: int, images: int) -> None:
    from app.evaluation.service import _seconds_per_image_of_batch, seconds_per_image

    rng = np.random.default_rng(seed)
    experts = {}
    for row, name in enumerate(("a", "b", "c", "d", "e")):
        count = int(rng.integers(0, 30 * images // 5))
        objects = _random_boxes(rng, count, images, 2)
        edited = np.cumsum(rng.choice([3.0, 40.5, 400.0], size=count, p=[0.6, 0.3, 0.1])) + 1e9
        edited += rng.random(count)  # fractions of a second: sums that depend on their order
        work = ExpertWork(objects, edited)
        if row == 1:
            work.images_seen = [4, 2, 4, 0]  # seen, in viewing order, with an image without objects
        if row == 2:
            work.visit_seconds = {1: 30.0, 3: 12.5}  # Concord's own visits
        if row == 3:
            work.images_seen = rng.permutation(images).tolist()  # many seen: a mean of more than 8 terms
        experts[name] = work
    batch = Batch.of(experts, images + 5)

    found = _seconds_per_image_of_batch(batch, experts)

    for row, name in enumerate(batch.names):
        alone = seconds_per_image(experts[name])
        assert found[row] == alone or (np.isnan(found[row]) and np.isnan(alone)), name


def test_a_kept_result_and_its_mode_parts_are_one_pickle() -> None:
    from app.evaluation import service

    service.clear_result_cache()
    params = service.MetricsParams()
    task = _task(2)
    service.cached_task_metrics(task, params)
    key, mode_keys = service.task_digests(task, params)
    kept, mode = service._MODE_PARTS[mode_keys["unaided"]]
    assert kept is service._RESULTS[key]  # the result and its mode parts pickled once
    assert mode == "unaided"
    assert service.cached_task_metrics(task, params) == service.task_metrics(task, params)
