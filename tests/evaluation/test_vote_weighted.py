"""Vote-weighted concordance (DESIGN.md "Evaluation"): one test per documented property."""

from __future__ import annotations

import numpy as np
import pytest

from app.evaluation import metrics as m
from app.evaluation import service
from app.evaluation.service import Boxes, ExpertWork, MetricsParams, TaskData


def no_errors(experts: int) -> list[m.FloatArray]:
    return [np.zeros(0) for _ in range(experts)]


def f1(tp: int, fp: int, fn: int) -> float:
    return 2 * tp / (2 * tp + fp + fn)


def test_equals_f1_when_all_weights_are_1() -> None:
    # Expert 0 misses cell 3; the others found every cell, so expert 0 sees equal votes v = [2, 2, 2, 2]
    # (w = 1), and nobody else made its two errors (u = 1): its score is F1 with TP 3, FP 2, FN 1.
    matched = np.array([[True, True, True, False], [True, True, True, True], [True, True, True, True]])
    costs = [np.ones(2), np.ones(0), np.ones(1)]

    result = m.vote_weighted_concordance(matched, costs)

    assert result.scores[0] == pytest.approx(f1(3, 2, 1))
    assert (result.precision[0], result.recall[0]) == pytest.approx((3 / 5, 3 / 4))


def test_equals_f1_of_random_data_when_no_other_expert_voted_and_nothing_is_shared() -> None:
    rng = np.random.default_rng(7)
    for _ in range(20):
        matched = rng.random((1, 30)) < 0.6
        errors = int(rng.integers(0, 8))
        result = m.vote_weighted_concordance(matched, [np.ones(errors)])
        tp = int(matched.sum())
        assert result.scores[0] == pytest.approx(f1(tp, errors, 30 - tp) if tp else 0.0)


def test_the_experts_own_votes_never_count_for_the_expert() -> None:
    # Expert 0 alone found cell 1. With its own vote, v = [3, 1] → w = [1, 0] and missing nothing would look
    # like missing nothing; without it, the others give v = [2, 0] for expert 0: still w = [1, 0].
    # Expert 1 sees v = [2, 1] → w = [1, 0]. Changing expert 0's own row never changes expert 0's weights.
    matched = np.array([[True, True], [True, False], [True, False]])
    base = m.vote_weighted_concordance(matched, no_errors(3)).scores[0]
    matched_alone = np.array([[True, False], [True, False], [True, False]])

    alone = m.vote_weighted_concordance(matched_alone, no_errors(3)).scores[0]

    assert base == alone == 1.0


def test_missing_a_cell_everyone_found_costs_more_than_one_few_found() -> None:
    matched = np.array(
        [
            [True, True, False],  # misses cell 2, which one other expert found
            [True, False, True],  # misses cell 1, which every other expert found
            [True, True, False],
            [True, True, True],
        ]
    )

    scores = m.vote_weighted_concordance(matched, no_errors(4)).scores

    assert scores[0] > scores[1]


def test_an_error_others_made_too_costs_less_than_one_nobody_else_made() -> None:
    boxes = np.array([[10.0, 10, 30, 30], [11.0, 10, 31, 30], [200.0, 200, 220, 220]])
    costs = m.kept_error_costs(boxes, np.zeros(3, np.int64), np.zeros(3, np.int64), np.array([0, 1, 2]), 3)
    np.testing.assert_allclose(costs, [0.5, 0.5, 1.0])

    matched = np.ones((3, 2), dtype=np.bool_)
    scores = m.vote_weighted_concordance(matched, [costs[:1], costs[1:2], costs[2:]]).scores

    assert scores[0] == scores[1] > scores[2]


def test_an_error_kept_twice_by_one_other_expert_counts_that_expert_once() -> None:
    boxes = np.array([[10.0, 10, 30, 30], [10.0, 10, 30, 30], [10.0, 10, 30, 31]])
    costs = m.kept_error_costs(boxes, np.zeros(3, np.int64), np.zeros(3, np.int64), np.array([0, 1, 1]), 3)

    assert costs[0] == 0.5


def test_no_other_expert_gives_plain_f1() -> None:
    result = m.vote_weighted_concordance(np.array([[True, False, True]]), [np.ones(1)])

    assert result.others == 0
    assert result.scores[0] == pytest.approx(f1(2, 1, 1))


def test_scores_lie_in_0_1_and_an_empty_reference_is_undefined() -> None:
    rng = np.random.default_rng(3)
    matched = rng.random((6, 40)) < 0.7
    costs = [rng.random(int(rng.integers(0, 10))) for _ in range(6)]

    scores = m.vote_weighted_concordance(matched, costs).scores

    assert ((scores >= 0) & (scores <= 1)).all()
    assert np.isnan(m.vote_weighted_concordance(np.zeros((2, 0), dtype=bool), no_errors(2)).scores).all()


# ---------------------------------------------------------------- through the study computation


def _boxes(rows: list[tuple[float, float, float, float]]) -> Boxes:
    return Boxes(
        np.array(rows, dtype=np.float64).reshape(-1, 4),
        np.zeros(len(rows), np.int64),
        np.zeros(len(rows), np.int64),
    )


def _task(work: dict[str, list[tuple[float, float, float, float]]]) -> TaskData:
    cells = [(10.0 + 40 * k, 10.0, 30.0 + 40 * k, 30.0) for k in range(5)]
    experts = {name: ExpertWork(_boxes(rows), np.zeros(len(rows))) for name, rows in work.items()}
    return TaskData("T", {0: "cell"}, _boxes(cells), {"aided": experts}, None, None, {}, span=1)


def test_an_expert_who_keeps_every_fake_scores_lower_than_one_who_removes_them() -> None:
    cells = [(10.0 + 40 * k, 10.0, 30.0 + 40 * k, 30.0) for k in range(5)]
    fakes = [(10.0 + 40 * k, 300.0, 30.0 + 40 * k, 320.0) for k in range(3)]  # shown to both, on no cell
    task = _task({"keeps": cells + fakes, "removes": cells, "other": cells})

    result = service.task_metrics(task, MetricsParams()).modes["aided"].experts

    assert result["removes"].vote_weighted_concordance == 1.0
    assert result["keeps"].vote_weighted_concordance is not None
    assert result["keeps"].vote_weighted_concordance < 1.0
    # The paper's AP-based concordance cannot tell them apart when the fakes come after every true cell.
    assert result["keeps"].concordance == result["removes"].concordance == 1.0


def _pair_scores(
    det_boxes: m.FloatArray, ref_boxes: m.FloatArray, by: str, threshold: float
) -> tuple[m.FloatArray, m.BoolArray]:
    """The full score matrix of a key (IoU, or minus the centre distance) and its admissible cells: the
    reference that `metrics._paired_scores` computes cell by cell."""
    if by == "iou":
        iou = m.iou_matrix(det_boxes, ref_boxes)
        return iou, iou >= threshold
    centres = m.box_centres(det_boxes)[:, None, :] - m.box_centres(ref_boxes)[None, :, :]
    distance = np.linalg.norm(centres, axis=2)
    return -distance, distance <= threshold


def _hungarian_per_key(
    det: m.FloatArray, det_keys: m.IntArray, ref: m.FloatArray, ref_keys: m.IntArray
) -> float:
    """The plain rule: Hungarian on every key's full IoU matrix; returns the total IoU of the assignment."""
    total = 0.0
    for key in np.intersect1d(det_keys, ref_keys):
        rows, cols = np.flatnonzero(det_keys == key), np.flatnonzero(ref_keys == key)
        score, allowed = _pair_scores(det[rows], ref[cols], "iou", 0.25)
        chosen_rows, chosen_cols = m._assign_hungarian(score, allowed)
        total += float(score[chosen_rows, chosen_cols].sum())
    return total


@pytest.mark.parametrize("seed", range(5))
def test_one_to_one_matching_shortcut_gives_an_optimal_assignment(seed: int) -> None:
    rng = np.random.default_rng(seed)
    corners = rng.integers(0, 400, (240, 2)).astype(np.float64)
    boxes = np.concatenate([corners, corners + rng.integers(10, 40, (240, 2))], axis=1)
    labels, images = rng.integers(0, 3, 240), rng.integers(0, 4, 240)
    det, ref = slice(0, 140), slice(140, 240)

    rows, cols = m.one_to_one_match(
        boxes[det], labels[det], images[det], boxes[ref], labels[ref], images[ref]
    )

    det_keys, ref_keys = m.joint_keys(labels[det], images[det], labels[ref], images[ref])
    assert len(set(rows.tolist())) == len(rows)
    assert len(set(cols.tolist())) == len(cols)
    assert (det_keys[rows] == ref_keys[cols]).all()
    achieved = float(m.paired_iou(boxes[det][rows], boxes[ref][cols]).sum())
    assert achieved == pytest.approx(_hungarian_per_key(boxes[det], det_keys, boxes[ref], ref_keys))


def test_every_experts_weights_at_once_equal_one_expert_at_a_time_to_the_bit() -> None:
    rng = np.random.default_rng(8)
    matched = rng.random((10, 700)) < 0.7
    matched[:, :3] = True  # every vote on some cells
    matched[4] = matched[5] = False  # two experts without a match
    costs = [rng.random(int(rng.integers(0, 40))) for _ in range(10)]

    result = m.vote_weighted_concordance(matched, costs)

    votes = m.reference_votes(matched)
    for row in range(10):
        weights = m.votes_loss_weights(votes - matched[row])
        found = float(weights @ matched[row])
        recall = found / float(weights.sum())
        cost = float(costs[row].sum())
        precision = found / (found + cost) if found + cost > 0 else 1.0
        assert (result.recall[row], result.precision[row]) == (recall, precision)
    flat = m.vote_weighted_concordance(np.ones((3, 4), dtype=np.bool_), [np.zeros(0)] * 3)
    assert flat.scores.tolist() == [1.0, 1.0, 1.0]


def _contested_per_key(
    det_index: np.ndarray,
    ref_index: np.ndarray,
    det_boxes: np.ndarray,
    det_keys: np.ndarray,
    ref_boxes: np.ndarray,
    ref_keys: np.ndarray,
    by: str,
    threshold: float,
    method: str,
) -> tuple[np.ndarray, np.ndarray]:
    """`metrics._one_to_one_of_pairs` as it was: each key's score matrix built in a loop over the keys."""
    lone = (np.bincount(det_index, minlength=len(det_keys))[det_index] == 1) & (
        np.bincount(ref_index, minlength=len(ref_keys))[ref_index] == 1
    )
    det_pairs, ref_pairs = [det_index[lone]], [ref_index[lone]]
    contested_dets, contested_refs = np.unique(det_index[~lone]), np.unique(ref_index[~lone])
    for key in np.unique(det_keys[contested_dets]):
        dets = contested_dets[det_keys[contested_dets] == key]
        refs = contested_refs[ref_keys[contested_refs] == key]
        score, allowed = _pair_scores(det_boxes[dets], ref_boxes[refs], by, threshold)
        rows, cols = m._assign(score, allowed, method)  # type: ignore[arg-type]
        det_pairs.append(dets[rows])
        ref_pairs.append(refs[cols])
    dets_found = np.concatenate(det_pairs).astype(np.int64)
    refs_found = np.concatenate(ref_pairs).astype(np.int64)
    order = np.argsort(dets_found, kind="stable")
    return dets_found[order], refs_found[order]


@pytest.mark.parametrize("by", ["iou", "centre"])
@pytest.mark.parametrize("method", ["hungarian", "greedy"])
@pytest.mark.parametrize("seed", range(4))
def test_every_keys_score_matrix_at_once_matches_the_loop_over_keys(by: str, method: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    corners = rng.integers(0, 120, (400, 2)) + rng.choice([0.0, 0.5, 0.25], (400, 2))
    corners += rng.random((400, 2)) * (seed % 2)  # odd seeds: any fraction, so results that round
    boxes = np.concatenate([corners, corners + rng.integers(8, 40, (400, 2))], axis=1)
    boxes[250:260] = boxes[0:10]  # exact copies: tied scores
    labels, images = rng.integers(0, 3, 400), rng.integers(0, 5, 400)
    det, ref = slice(0, 250), slice(250, 400)
    det_keys, ref_keys = m.joint_keys(labels[det], images[det], labels[ref], images[ref])
    threshold = 0.2 if by == "iou" else 30.0
    det_index, ref_index = m._candidate_pairs(
        boxes[det], det_keys, boxes[ref], ref_keys, by == "iou", threshold
    )
    admissible = m._paired_admissible(boxes[det][det_index], boxes[ref][ref_index], by, threshold)  # type: ignore[arg-type]
    pairs = (det_index[admissible], ref_index[admissible])
    fields = (boxes[det], det_keys, boxes[ref], ref_keys)

    found = m._one_to_one_of_pairs(*pairs, *fields, by, threshold, method)  # type: ignore[arg-type]

    expected = _contested_per_key(*pairs, *fields, by, threshold, method)
    assert len(expected[0]) > 40
    np.testing.assert_array_equal(found[0], expected[0])
    np.testing.assert_array_equal(found[1], expected[1])


def test_key_blocks_list_each_keys_cells_row_by_row() -> None:
    blocks = m.KeyBlocks.of(
        np.array([7, 3, 5, 9]), np.array([2, 1, 2, 4]), np.array([11, 12, 13]), np.array([2, 1, 2])
    )

    assert blocks.det.tolist() == [3, 7, 7, 5, 5]
    assert blocks.ref.tolist() == [12, 11, 13, 11, 13]
    assert [(d.tolist(), r.tolist(), c) for d, r, c in blocks.per_key()] == [
        ([3], [12], slice(0, 1)),
        ([7, 5], [11, 13], slice(1, 5)),
        ([9], [], slice(5, 5)),
    ]
    none = m.KeyBlocks.of(*(np.zeros(0, dtype=np.int64),) * 4)
    assert (len(none.det), len(none.ref), list(none.per_key())) == (0, 0, [])
