"""Agreement statistics, effect sizes and Holm: closed forms pinned to statsmodels, krippendorff and
published examples; a hand-made study whose agreement figures are known."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pytest
from statsmodels.stats import inter_rater
from statsmodels.stats.multitest import multipletests

from app.evaluation import agreement, statistics
from app.evaluation.service import Boxes, ExpertWork, MetricsParams, TaskData, task_metrics
from app.models import TaskKind

# ---------------------------------------------------------------- closed forms vs libraries


@pytest.mark.parametrize("weights", ["none", "quadratic"])
def test_cohen_kappa_equals_statsmodels(weights: str) -> None:
    rng = np.random.default_rng(11)
    first = rng.integers(0, 5, 300)
    second = np.clip(first + rng.integers(-1, 2, 300), 0, 4)
    table = np.zeros((5, 5))
    np.add.at(table, (first, second), 1)
    expected = inter_rater.cohens_kappa(table, wt=None if weights == "none" else "quadratic").kappa

    assert agreement.cohen_kappa(first, second, 5, weights) == pytest.approx(expected, abs=1e-12)  # type: ignore[arg-type]


def test_cohen_kappa_worked_example_and_degenerate_cases() -> None:
    assert agreement.cohen_kappa(np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0]), 2) == pytest.approx(0.5)
    assert math.isnan(agreement.cohen_kappa(np.zeros(0, np.int64), np.zeros(0, np.int64), 3))
    assert math.isnan(agreement.cohen_kappa(np.zeros(4, np.int64), np.zeros(4, np.int64), 3))


def test_fleiss_kappa_equals_statsmodels() -> None:
    rng = np.random.default_rng(5)
    table = rng.multinomial(6, [0.5, 0.3, 0.2], size=40)

    assert agreement.fleiss_kappa(table) == pytest.approx(inter_rater.fleiss_kappa(table), abs=1e-12)
    assert agreement.fleiss_kappa(np.array([[2, 0], [0, 2], [1, 1]])) == pytest.approx(1 / 3)


def test_krippendorff_alpha_from_value_counts_equals_the_library_on_reliability_data() -> None:
    import krippendorff

    # Krippendorff's own example (nominal, 4 coders × 12 units, missing values)
    data = np.array(
        [
            [1, 2, 3, 3, 2, 1, 4, 1, 2, np.nan, np.nan, np.nan],
            [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, np.nan, 3],
            [np.nan, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, np.nan],
            [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, np.nan],
        ]
    )
    counts = np.zeros((12, 5), dtype=np.int64)
    for coder in data:
        for unit, value in enumerate(coder):
            if not np.isnan(value):
                counts[unit, int(value) - 1] += 1

    expected = krippendorff.alpha(reliability_data=data, level_of_measurement="nominal")
    assert agreement.krippendorff_alpha(counts, "nominal") == pytest.approx(expected)
    assert expected == pytest.approx(0.743, abs=1e-3)  # the published value of this example


@pytest.mark.parametrize("level", ["nominal", "ordinal"])
@pytest.mark.parametrize("seed", range(6))
def test_krippendorff_alpha_equals_the_library_to_the_bit(
    level: Literal["nominal", "ordinal"], seed: int
) -> None:
    import krippendorff

    rng = np.random.default_rng(seed)
    for _ in range(40):
        values = int(rng.integers(2, 7))
        counts = rng.integers(0, 5, (int(rng.integers(2, 900)), values))  # units with 0 or 1 value too
        counts[rng.random(len(counts)) < 0.3, 0] = 10  # many raters agreeing on some units

        found = agreement.krippendorff_alpha(counts, level)

        pairable = counts[counts.sum(axis=1) >= 2]
        expected = krippendorff.alpha(
            value_counts=pairable, value_domain=list(range(values)), level_of_measurement=level
        )
        assert found == float(expected)


def test_icc_absolute_reproduces_shrout_and_fleiss() -> None:
    # Shrout & Fleiss (1979), table 2: 6 targets × 4 judges; ICC(2,1) = 0.29
    ratings = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])

    assert agreement.icc_absolute(ratings) == pytest.approx(0.2898, abs=1e-4)
    assert agreement.icc_absolute(np.array([[3.0, 3.0], [5.0, 5.0], [1.0, 1.0]])) == pytest.approx(1.0)
    assert math.isnan(agreement.icc_absolute(np.array([[1.0, 2.0]])))


def test_bland_altman_and_threshold_worked_examples() -> None:
    result = agreement.bland_altman(np.array([3.0, 5.0, 7.0]), np.array([2.0, 5.0, 5.0]))
    assert (result.bias, result.n) == (1.0, 3)
    assert (result.lower, result.upper) == pytest.approx((1 - 1.96, 1 + 1.96))

    split = agreement.threshold_cases(np.array([8.0, 3.0, 7.0]), np.array([6.0, 9.0, 7.0]), 7)
    assert (split.cases, split.over, split.under) == (3, 1, 1)


@pytest.mark.parametrize("size", [0, 1, 2, 20, 137])
def test_row_forms_equal_one_table_at_a_time_to_the_bit(size: int) -> None:
    rng = np.random.default_rng(size)
    mine = rng.integers(0, 40, (6, size)).astype(np.float64)
    theirs = np.clip(mine + rng.integers(-3, 4, (6, size)), 0, None)
    mine[1] = theirs[1]  # no differences: SD 0
    if size:
        mine[2], theirs[2] = 5.0, 5.0  # no variation: ICC undefined
    mine[3] = mine[3] + rng.random(size) / 7  # fractions: the sums' order matters

    iccs = agreement.icc_absolute_of_pairs(mine, theirs)
    limits = agreement.bland_altman_of_rows(mine, theirs)
    splits = agreement.threshold_cases_of_rows(mine, theirs, 7.0)

    for row in range(6):
        alone = agreement.icc_absolute(np.stack([mine[row], theirs[row]], axis=1))
        assert np.array_equal(iccs[row], alone, equal_nan=True)
        expected = agreement.bland_altman(mine[row], theirs[row])
        assert np.array_equal(
            [limits[row].bias, limits[row].lower, limits[row].upper],
            [expected.bias, expected.lower, expected.upper],
            equal_nan=True,
        )
        assert limits[row].n == expected.n
        assert splits[row] == agreement.threshold_cases(mine[row], theirs[row], 7.0)


@pytest.mark.parametrize("weights", ["none", "quadratic"])
@pytest.mark.parametrize("categories", [1, 2, 5])
def test_kappas_of_tables_equal_one_table_at_a_time_to_the_bit(weights: str, categories: int) -> None:
    rng = np.random.default_rng(categories)
    tables = rng.integers(0, 30, (7, categories, categories))
    tables[1] = 0  # no cells
    tables[2] = 0
    tables[2, 0, 0] = 9  # one category only: no chance disagreement

    kappas = agreement.cohen_kappa_of_tables(tables, weights)  # type: ignore[arg-type]

    for row in range(7):
        alone = agreement.cohen_kappa_of_table(tables[row], weights)  # type: ignore[arg-type]
        assert np.array_equal(kappas[row], alone, equal_nan=True)


def test_holm_equals_statsmodels_and_keeps_missing_values() -> None:
    p = [0.01, 0.04, None, 0.03, 0.2, math.nan]
    finite = [0.01, 0.04, 0.03, 0.2]
    expected = multipletests(finite, method="holm")[1]

    adjusted = statistics.holm(p)
    assert [adjusted[i] for i in (0, 1, 3, 4)] == pytest.approx(list(expected))
    assert adjusted[2] is None
    assert adjusted[5] is None
    assert statistics.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_paired_effect_size_is_t_over_root_n() -> None:
    a, b = [1.0, 2.0, 3.0, 5.0], [2.0, 4.0, 5.0, 5.5]
    t = statistics.paired_t(b, a).t

    assert statistics.paired_effect_size(a, b) == pytest.approx(t / 2)
    assert statistics.paired_effect_size([1.0, 2.0, 3.0], [2.0, 4.0, 5.0]) == pytest.approx(2.8868, abs=1e-4)
    assert math.isnan(statistics.paired_effect_size([1.0, 2.0], [2.0, 3.0]))


# ---------------------------------------------------------------- a hand-made study with known answers

GRADES = {10: "0", 11: "1", 12: "2", 13: "3"}


def cell(x: float, y: float) -> tuple[float, float, float, float]:
    return (x, y, x + 30, y + 30)


def objects(rows: list[tuple[int, int, tuple[float, float, float, float]]]) -> Boxes:
    return Boxes(
        np.array([box for _, _, box in rows], dtype=np.float64).reshape(len(rows), 4),
        np.array([label for _, label, _ in rows], dtype=np.int64),
        np.array([image for image, _, _ in rows], dtype=np.int64),
    )


REFERENCE = [(1, 10 + grade, cell(100 * grade + 10, 10)) for grade in range(4)] + [
    (2, 10, cell(100 * k + 10, 300)) for k in range(8)
]


def work(rows: list[tuple[int, int, tuple[float, float, float, float]]]) -> ExpertWork:
    return ExpertWork(objects(rows), np.zeros(len(rows)), images_seen=[1, 2])


def study(kind: TaskKind) -> TaskData:
    perfect = list(REFERENCE)
    # B: grades 1 and 2 on image 1 both read one higher; misses two cells of image 2
    shifted = [(image, label + (1 if label in (11, 12) else 0), box) for image, label, box in REFERENCE]
    sloppy = shifted[:-2]
    return TaskData(
        name="grading",
        labels=GRADES,
        reference=objects(REFERENCE),
        work={"unaided": {"A": work(perfect), "B": work(sloppy)}},
        suggestions=None,
        suggestion_set_id=None,
        register={},
        span=3,
        kind=kind,
        images=np.array([1, 2], dtype=np.int64),
    )


def test_agreement_of_a_hand_made_grading_study() -> None:
    result = task_metrics(study(TaskKind.grade), MetricsParams())
    found = result.agreement
    assert found is not None
    assert found.label_kappa_weights == "quadratic"
    assert found.count_label is None
    mode = found.modes["unaided"]
    a, b = mode.experts["A"], mode.experts["B"]

    assert (a.label_kappa, a.matched_cells, a.images) == (1.0, 12, 2)
    assert (a.count_icc, a.count_bland_altman.bias, a.count_bland_altman.lower) == (1.0, 0.0, 0.0)
    # B's grades vs reference on its 10 matched cells: 0→0 ×7, 1→2, 2→3, 3→3
    table = np.zeros((4, 4))
    for mine, theirs in [(0, 0)] * 7 + [(2, 1), (3, 2), (3, 3)]:
        table[mine, theirs] += 1
    expected = inter_rater.cohens_kappa(table, wt="quadratic").kappa
    assert b.matched_cells == 10
    assert b.label_kappa == pytest.approx(expected)
    # counts per image: B has 4 and 6 where the reference has 4 and 8
    assert b.count_bland_altman.bias == -1.0
    assert b.count_bland_altman.upper == pytest.approx(-1 + 1.96 * math.sqrt(2))
    assert b.threshold_over is None
    assert mode.threshold is None
    # 12 clusters: both experts on 10 (labels differ on 2), A alone on 2; alpha: every pairable unit but 2 agrees
    assert mode.clusters == 12
    counts = np.array(
        [[2, 0, 0, 0, 0], [0, 1, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 2, 0]]  # image 1: grades 0..3
        + [[2, 0, 0, 0, 0]] * 6
        + [[1, 0, 0, 0, 1]] * 2  # image 2: the last column is "not marked"
    )
    assert mode.fleiss_kappa == pytest.approx(inter_rater.fleiss_kappa(counts))
    assert mode.krippendorff_alpha is not None
    assert 0 < mode.krippendorff_alpha < 1


def test_clinical_threshold_of_a_counting_task() -> None:
    task = study(TaskKind.detect)
    task.labels = {10: "mitotic figure", 11: "lookalike", 12: "other", 13: "more"}
    result = task_metrics(task, MetricsParams(count_threshold=7))
    found = result.agreement
    assert found is not None
    assert found.count_label == "mitotic figure"
    assert found.count_threshold == 7
    mode = found.modes["unaided"]

    # counts of label 10 only: reference 1 and 8; A 1 and 8; B 1 and 6 → B under the threshold on image 2
    assert (mode.experts["A"].threshold_over, mode.experts["A"].threshold_under) == (0, 0)
    assert (mode.experts["B"].threshold_over, mode.experts["B"].threshold_under) == (0, 1)
    assert mode.threshold is not None
    assert (mode.threshold.cases, mode.threshold.under) == (4, 1)
    assert found.label_kappa_weights == "none"


def test_holm_runs_across_tasks_in_the_study() -> None:
    from app.evaluation.schemas import TestsOut
    from app.evaluation.service import adjust_across_tasks

    results = {name: task_metrics(study(TaskKind.grade), MetricsParams()) for name in ("x", "y")}
    for result, p in zip(results.values(), (0.01, 0.04), strict=True):
        result.statistics["concordance"] = TestsOut(
            anova_F=None, anova_df=[1, 2], anova_p=None, paired_t=1.0, paired_df=2, paired_p=p
        )
    adjust_across_tasks(results)

    assert [result.statistics["concordance"].paired_p_holm for result in results.values()] == pytest.approx(
        [0.02, 0.04]
    )
    assert results["x"].statistics["concordance"].anova_p_holm is None


@pytest.mark.parametrize("seed", range(4))
def test_clusters_of_agreement_are_the_consensus_leader_clusters(seed: int) -> None:
    from app.evaluation import metrics as m
    from app.evaluation.review import _clusters

    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 300, size=(400, 2))
    images = rng.integers(0, 3, 400)

    found = _clusters(centres, images, 30.0)

    for image in range(3):
        members = np.flatnonzero(images == image)
        expected = m._leader_clusters(centres[members], 30.0)
        # the same partition: equal ids ⇔ equal ids
        same_found = found[members][:, None] == found[members][None, :]
        np.testing.assert_array_equal(same_found, expected[:, None] == expected[None, :])
    assert not set(found[images == 0]) & set(found[images == 1])
    # the task's images (a sorted superset, some without objects) spare the sort and give the same ids
    known = np.array([-5, 0, 1, 2, 7])
    np.testing.assert_array_equal(_clusters(centres, images, 30.0, known), found)
    np.testing.assert_array_equal(_clusters(centres, images, 30.0, known[2:]), found)  # not a superset


@pytest.mark.parametrize("seed", range(12))
def test_swept_cluster_pairs_are_the_k_d_tree_pairs(seed: int) -> None:
    from scipy.spatial import cKDTree

    from app.evaluation.review import _swept_pairs

    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 500))
    if seed % 3 == 0:
        points = rng.uniform(0, 500, size=(n, 2))
    elif seed % 3 == 1:  # whole pixels: many pairs exactly at the radius (3-4-5, 5-12-13 triangles)
        points = rng.integers(0, 60, size=(n, 2)).astype(np.float64)
    else:  # box centres (half pixels) far from the origin
        points = rng.integers(0, 400, size=(n, 2)) / 2.0 + rng.uniform(-1e4, 1e4)
    radius = (5.0, 13.0, 0.5, 50.0)[seed % 4]

    found = _swept_pairs(points, radius, limit=n * n)

    assert found is not None
    earlier, later = found
    expected = cKDTree(points).query_pairs(r=radius, output_type="ndarray").reshape(-1, 2)
    assert (earlier < later).all()
    assert len(earlier) == len(expected)
    assert set(zip(earlier.tolist(), later.tolist(), strict=True)) == set(map(tuple, expected.tolist()))


def test_swept_cluster_pairs_of_a_tall_strip_stay_few_candidates() -> None:
    """A strip far taller than the radius: the bands of y keep each point's candidates to its neighbourhood
    (a sweep along x alone would test every pair of the strip)."""
    from scipy.spatial import cKDTree

    from app.evaluation.review import SWEEP_CANDIDATES_PER_POINT, _swept_pairs

    rng = np.random.default_rng(5)
    strip = np.column_stack([rng.uniform(0, 10, 400), rng.uniform(0, 4000, 400)])

    found = _swept_pairs(strip, 50.0, SWEEP_CANDIDATES_PER_POINT * 400)

    assert found is not None
    expected = cKDTree(strip).query_pairs(r=50.0, output_type="ndarray").reshape(-1, 2)
    assert set(zip(found[0].tolist(), found[1].tolist(), strict=True)) == set(map(tuple, expected.tolist()))


def test_cluster_pairs_of_dense_points_come_from_the_k_d_tree() -> None:
    from app.evaluation.review import SWEEP_CANDIDATES_PER_POINT, _cluster_pairs, _swept_pairs

    rng = np.random.default_rng(5)
    dense = rng.uniform(0, 60, size=(400, 2))  # packed far closer than the radius: most pairs are near
    images = np.zeros(400, dtype=np.int64)

    assert _swept_pairs(dense, 50.0, SWEEP_CANDIDATES_PER_POINT * 400) is None
    earlier, later = _cluster_pairs(dense, images, 50.0)
    swept = _swept_pairs(dense, 50.0, 400 * 400)
    assert swept is not None
    assert sorted(zip(earlier.tolist(), later.tolist(), strict=True)) == sorted(
        zip(swept[0].tolist(), swept[1].tolist(), strict=True)
    )


@pytest.mark.parametrize("seed", range(6))
def test_best_reference_with_the_overlap_grid_equals_all_pairs(seed: int) -> None:
    from app.evaluation import metrics as m

    rng = np.random.default_rng(seed)
    n_det, n_ref = 300, 250
    sizes = rng.integers(1, 80, size=(n_det + n_ref, 2)).astype(np.float64)
    corners = rng.integers(0, 600, size=(n_det + n_ref, 2)).astype(np.float64) + rng.random(
        (n_det + n_ref, 2)
    ) * (seed % 2)
    boxes = np.hstack([corners, corners + sizes])
    det_keys, ref_keys = rng.integers(0, 4, n_det), rng.integers(0, 5, n_ref)
    for plus_one in (True, False):
        best, best_iou = m.best_reference(boxes[:n_det], det_keys, boxes[n_det:], ref_keys, plus_one)
        for d in range(n_det):
            same = np.flatnonzero(ref_keys == det_keys[d])
            if len(same) == 0:
                assert best[d] == m.NO_MATCH
                continue
            iou = m.iou_matrix(boxes[d : d + 1], boxes[n_det:][same], plus_one)[0]
            assert best[d] == same[int(np.argmax(iou))], d
            assert best_iou[d] == pytest.approx(iou.max()), d
