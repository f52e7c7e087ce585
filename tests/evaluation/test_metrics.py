import numpy as np
import pytest
from scipy import stats

from app.evaluation import metrics as m
from app.evaluation.statistics import anova_oneway, paired_t


def boxes(*rows: tuple[float, float, float, float]) -> m.FloatArray:
    return np.array(rows, dtype=np.float64).reshape(len(rows), 4)


def ints(*values: int) -> m.IntArray:
    return np.array(values, dtype=np.int64)


# ---------------------------------------------------------------- IoU and border


def test_iou_uses_the_plus_one_pixel_convention() -> None:
    a = boxes((0, 0, 9, 9))
    b = boxes((5, 0, 14, 9))

    assert m.iou_matrix(a, b)[0, 0] == pytest.approx(50 / 150)
    assert m.iou_matrix(a, b, plus_one=False)[0, 0] == pytest.approx(36 / 126)


def test_touching_boxes_share_one_pixel_column_and_disjoint_boxes_give_zero() -> None:
    a = boxes((0, 0, 9, 9))
    touching_and_far = boxes((9, 0, 18, 9), (20, 0, 29, 9))

    iou = m.iou_matrix(a, touching_and_far)

    np.testing.assert_allclose(iou, [[10 / 190, 0.0]])


def test_iou_matrix_agrees_with_paired_iou() -> None:
    rng = np.random.default_rng(3)
    corners = rng.integers(0, 50, size=(7, 2)).astype(np.float64)
    a = np.hstack([corners, corners + rng.integers(1, 30, size=(7, 2))])
    b = a[::-1] + 3.0

    matrix = m.iou_matrix(a, b)

    np.testing.assert_allclose(np.diag(matrix), m.paired_iou(a, b))
    assert matrix.shape == (7, 7)


def test_inside_image_mask_needs_more_than_two_pixels_on_every_side() -> None:
    width, height = np.array(100.0), np.array(80.0)
    candidates = boxes(
        (3, 3, 97, 77),  # inside
        (2, 3, 50, 50),  # x1 = 2 is at the border
        (3, 2, 50, 50),
        (3, 3, 98, 50),  # x2 = width - 2
        (3, 3, 50, 78),
        (-24, 10, 36, 60),
    )

    mask = m.inside_image_mask(candidates, width, height)

    np.testing.assert_array_equal(mask, [True, False, False, False, False, False])


def test_counted_mask_drops_deleted_and_border_objects() -> None:
    candidates = boxes((10, 10, 20, 20), (10, 10, 20, 20), (0, 10, 20, 20))
    deleted = np.array([False, True, False])

    mask = m.counted_mask(candidates, np.full(3, 100.0), np.full(3, 100.0), deleted)

    np.testing.assert_array_equal(mask, [True, False, False])


# ---------------------------------------------------------------- average precision


def test_voc_average_precision_of_a_known_sequence() -> None:
    # recall 1/3, 1/3, 2/3; precision 1, 1/2, 2/3 → AP = 1/3 · 1 + 1/3 · 2/3
    assert m.voc_average_precision(np.array([True, False, True]), 3) == pytest.approx(5 / 9)


def test_voc_average_precision_uses_the_precision_envelope() -> None:
    # precision 0, 1/2, 2/3 → envelope 2/3 for both recall steps: AP = 2/3 · 1
    assert m.voc_average_precision(np.array([False, True, True]), 2) == pytest.approx(2 / 3)


def test_voc_average_precision_edge_cases() -> None:
    assert m.voc_average_precision(np.array([True, True]), 2) == 1.0
    assert m.voc_average_precision(np.array([], dtype=bool), 4) == 0.0
    assert m.voc_average_precision(np.array([True]), 0) == 0.0


# ---------------------------------------------------------------- greedy matching and concordance


def test_greedy_match_takes_the_first_reference_on_ties_and_then_counts_a_false_positive() -> None:
    ref = boxes((0, 0, 9, 9), (0, 0, 9, 9))
    det = boxes((0, 0, 9, 9), (0, 0, 9, 9))

    match = m.greedy_match(det, ints(0, 0), ints(0, 0), ref, ints(0, 0), ints(0, 0))

    # both detections pick reference 0; the second does not fall back to the equal reference 1
    np.testing.assert_array_equal(match.best_reference, [0, 0])
    np.testing.assert_array_equal(match.true_positive, [True, False])
    np.testing.assert_array_equal(match.reference_taken, [True, False])


def test_greedy_match_respects_detection_order_image_and_class() -> None:
    ref = boxes((0, 0, 9, 9), (0, 0, 9, 9), (0, 0, 9, 9))
    ref_labels, ref_images = ints(0, 1, 0), ints(0, 0, 1)
    det = boxes((0, 0, 9, 9), (0, 0, 9, 9), (1, 1, 9, 9), (0, 0, 9, 9))
    det_labels, det_images = ints(1, 0, 0, 0), ints(0, 1, 1, 2)

    match = m.greedy_match(det, det_labels, det_images, ref, ref_labels, ref_images)

    np.testing.assert_array_equal(match.best_reference, [1, 2, 2, m.NO_MATCH])
    np.testing.assert_array_equal(match.true_positive, [True, True, False, False])


def test_greedy_match_threshold_is_inclusive() -> None:
    ref = boxes((0, 0, 9, 9))
    det = boxes((5, 0, 14, 9))  # IoU exactly 1/3

    at = m.greedy_match(det, ints(0), ints(0), ref, ints(0), ints(0), iou=1 / 3)
    above = m.greedy_match(det, ints(0), ints(0), ref, ints(0), ints(0), iou=0.34)

    assert at.true_positive.tolist() == [True]
    assert above.true_positive.tolist() == [False]


def test_paper_concordance_averages_over_the_union_of_classes() -> None:
    ref = boxes((0, 0, 9, 9), (20, 20, 29, 29))
    det = boxes((0, 0, 9, 9), (20, 20, 29, 29))

    # class 0 found exactly; class 1 exists only in the detections and scores 0; class 2 only in the reference
    concordance = m.paper_concordance(det, ints(0, 1), ints(0, 0), ref, ints(0, 2), ints(0, 0))

    assert concordance.per_class == {0: 1.0, 1: 0.0, 2: 0.0}
    assert concordance.mean == pytest.approx(1 / 3)


def test_paper_concordance_depends_on_detection_order() -> None:
    ref = boxes((0, 0, 9, 9))
    hit, miss = (0.0, 0.0, 9.0, 9.0), (50.0, 50.0, 59.0, 59.0)

    hit_first = m.paper_concordance(boxes(hit, miss), ints(0, 0), ints(0, 0), ref, ints(0), ints(0))
    miss_first = m.paper_concordance(boxes(miss, hit), ints(0, 0), ints(0, 0), ref, ints(0), ints(0))

    assert hit_first.mean == 1.0
    assert miss_first.mean == pytest.approx(0.5)


def test_matched_register_entries_needs_the_entry_label_and_enough_overlap() -> None:
    entries = boxes((0, 0, 9, 9), (30, 30, 39, 39), (60, 60, 69, 69))
    det = boxes((0, 0, 9, 9), (30, 30, 39, 39), (100, 100, 109, 109))

    found = m.matched_register_entries(
        entries, ints(2, 2, 2), ints(0, 0, 0), det, ints(2, 3, 2), ints(0, 0, 0)
    )

    np.testing.assert_array_equal(found, [True, False, False])


def test_register_rules_differ_when_one_detection_is_best_for_two_entries() -> None:
    entries = boxes((0, 0, 9, 9), (2, 0, 11, 9))
    det = boxes((0, 0, 9, 9))

    greedy = m.matched_register_entries(entries, ints(0, 0), ints(0, 0), det, ints(0), ints(0), rule="greedy")
    any_detection = m.matched_register_entries(
        entries, ints(0, 0), ints(0, 0), det, ints(0), ints(0), rule="any"
    )

    np.testing.assert_array_equal(greedy, [True, False])
    np.testing.assert_array_equal(any_detection, [True, True])


# ---------------------------------------------------------------- one-to-one matching


def test_hungarian_matching_beats_greedy_on_a_crossing_pair() -> None:
    # det 0 overlaps ref 0 best but is ref 1's only partner: greedy loses a pair, Hungarian keeps both
    ref = boxes((0, 0, 9, 9), (3, 0, 12, 9))
    det = boxes((1, 0, 10, 9), (-3, 0, 6, 9))

    det_h, ref_h = m.one_to_one_match(det, ints(0, 0), ints(0, 0), ref, ints(0, 0), ints(0, 0), threshold=0.5)
    det_g, _ = m.one_to_one_match(
        det, ints(0, 0), ints(0, 0), ref, ints(0, 0), ints(0, 0), threshold=0.5, method="greedy"
    )

    assert sorted(zip(det_h.tolist(), ref_h.tolist(), strict=True)) == [(0, 1), (1, 0)]
    assert len(det_g) == 1


def test_centre_distance_matching_and_scores_per_class() -> None:
    ref = boxes((0, 0, 10, 10), (100, 100, 110, 110), (200, 200, 210, 210), (300, 300, 310, 310))
    det = boxes((3, 4, 13, 14), (400, 400, 410, 410))  # centre 5 px away; the other far from all

    det_index, ref_index = m.one_to_one_match(
        det, ints(0, 0), ints(0, 0), ref, ints(0, 0, 0, 0), ints(0, 0, 0, 0), by="centre", threshold=5.0
    )
    scores = m.detection_scores_per_class(ints(0, 0), ints(0, 0, 0, 0), det_index)

    assert (det_index.tolist(), ref_index.tolist()) == ([0], [0])
    assert scores[0].precision == pytest.approx(0.5)
    assert scores[0].recall == pytest.approx(0.25)
    assert scores[0].f1 == pytest.approx(1 / 3)


# ---------------------------------------------------------------- consensus and votes


def test_consensus_counts_distinct_experts_and_takes_the_majority_label() -> None:
    cell = (100.0, 100.0, 140.0, 140.0)
    near = (104.0, 100.0, 144.0, 140.0)
    far = (400.0, 400.0, 440.0, 440.0)
    all_boxes = boxes(cell, near, cell, near, far, cell)
    labels = ints(1, 1, 2, 1, 3, 1)
    experts = ints(0, 0, 1, 2, 2, 0)  # expert 0 marked the first cell twice on image 0
    images = ints(0, 0, 0, 0, 0, 1)

    result = m.consensus(all_boxes, labels, experts, images, radius=50.0)

    np.testing.assert_array_equal(result.votes, [3, 1, 1])
    np.testing.assert_array_equal(result.labels, [1, 3, 1])
    np.testing.assert_array_equal(result.images, [0, 0, 1])
    np.testing.assert_allclose(result.boxes[0], [102.0, 100.0, 142.0, 140.0])


def test_consensus_keeps_clusters_with_enough_votes() -> None:
    all_boxes = boxes((0, 0, 10, 10), (1, 1, 11, 11), (300, 300, 310, 310))

    result = m.consensus(all_boxes, ints(0, 0, 0), ints(0, 1, 0), ints(0, 0, 0), min_votes=2)

    np.testing.assert_array_equal(result.votes, [2])


def _leader_clusters_by_distance_matrix(centres: m.FloatArray, radius: float) -> list[int]:
    """The leader rule of `metrics.consensus` written out with the full distance matrix."""
    within = np.linalg.norm(centres[:, None, :] - centres[None, :, :], axis=2) <= radius
    cluster = np.full(len(centres), -1)
    count = 0
    for seed in range(len(centres)):
        if cluster[seed] < 0:
            cluster[within[seed] & (cluster < 0)] = count
            count += 1
    return [int(value) for value in cluster]


@pytest.mark.parametrize("seed", range(10))
def test_consensus_clusters_equal_the_distance_matrix_rule(seed: int) -> None:
    rng = np.random.default_rng(seed)
    corners = rng.integers(0, 300, (300, 2)).astype(np.float64)  # integer centres: many exactly at the radius
    all_boxes = np.concatenate([corners, corners + rng.integers(4, 60, (300, 2))], axis=1)
    radius = float(rng.choice([5.0, 20.0, 50.0]))

    found = m._leader_clusters(m.box_centres(all_boxes), radius)

    assert found.tolist() == _leader_clusters_by_distance_matrix(m.box_centres(all_boxes), radius)


def test_votes_loss_weights_scale_between_min_and_max() -> None:
    np.testing.assert_allclose(m.votes_loss_weights(np.array([1, 3, 5])), [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(m.votes_loss_weights(np.array([4, 4])), [1.0, 1.0])
    assert m.votes_loss_weights(np.array([], dtype=np.int64)).shape == (0,)


@pytest.mark.parametrize("size", [1, 50, 5_000, 10**7])  # the last: np.unique itself (a table too large)
def test_distinct_ints_and_first_indices_are_those_of_np_unique(size: int) -> None:
    rng = np.random.default_rng(size)
    for n in (0, 1, 300):
        values = rng.integers(0, size, n)
        distinct, first = np.unique(values, return_index=True)

        np.testing.assert_array_equal(m.distinct_ints(values, size), distinct)
        np.testing.assert_array_equal(m.first_indices(values, size), first)
        np.testing.assert_array_equal(m.distinct_values(values - size // 2), distinct - size // 2)
        assert m.first_indices(values, size).dtype == np.int64


@pytest.mark.parametrize("size", [1, 50, 5_000, 10**7])  # the last: np.isin itself (a table too large)
def test_contained_ints_is_np_isin(size: int) -> None:
    rng = np.random.default_rng(size)
    for n in (0, 1, 300):
        values = rng.integers(0, size, n) - size // 3
        for wanted in (values[:5], rng.integers(-size, 2 * size, 20), np.zeros(0, dtype=np.int64)):
            np.testing.assert_array_equal(m.contained_ints(values, wanted), np.isin(values, wanted))


@pytest.mark.parametrize("size", [1, 50, 5_000, 2**16, 2**16 + 1, 10**7])  # past 2¹⁶: numpy's merge sort
def test_stable_order_is_the_stable_argsort(size: int) -> None:
    rng = np.random.default_rng(size)
    for n in (0, 1, 300, 20_000):  # many ties at the small sizes: the order among them is the test
        values = rng.integers(0, size, n)
        if n:
            values[-1] = size - 1  # the top of the range

        found = m.stable_order(values, size)

        np.testing.assert_array_equal(found, np.argsort(values, kind="stable"))
        assert found.dtype == np.intp


def test_mean_of_is_np_mean_to_the_bit() -> None:
    rng = np.random.default_rng(11)
    for n in (1, 2, 7, 8, 9, 17, 130, 1000):  # numpy's pairwise sum changes its blocks at 8 and 128
        values = rng.random(n) * 10.0 ** rng.integers(-3, 4, n)
        assert m.mean_of(values) == float(np.mean(values))
        assert m.mean_of(values[::3]) == float(np.mean(values[::3]))  # a strided view


# ---------------------------------------------------------------- time per image


def test_gap_rule_sums_short_gaps_of_truncated_times_per_image() -> None:
    images = ints(0, 0, 0, 0, 1, 1)
    seconds = np.array([10.9, 0.2, 400.0, 405.5, 50.0, 50.9])  # image 0 sorted: 0, 10, 400, 405

    totals = m.seconds_per_image_gaps(images, seconds, n_images=3)

    np.testing.assert_allclose(totals, [15.0, 0.0, 0.0])


def test_seconds_per_image_mean_runs_over_every_image_seen() -> None:
    images = ints(0, 0)
    seconds = np.array([0.0, 30.0])

    assert m.seconds_per_image_300s_rule(ints(0, 1), images, seconds) == pytest.approx(15.0)
    assert m.seconds_per_image_300s_rule(ints(0), images, seconds) == pytest.approx(30.0)
    assert np.isnan(m.seconds_per_image_300s_rule(ints(), images, seconds))


def test_a_gap_of_exactly_300_seconds_is_left_out() -> None:
    totals = m.seconds_per_image_gaps(ints(0, 0, 0), np.array([0.0, 300.0, 599.0]), n_images=1)

    np.testing.assert_allclose(totals, [299.0])


@pytest.mark.parametrize("seed", range(6))
def test_lexsort_order_is_lexsort(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 400
    images = rng.integers(0, 30, n)
    seconds = np.floor(rng.uniform(1.7e9, 1.7e9 + [50, 1e4, 1e7][seed % 3], n))
    if seed == 4:
        seconds[rng.integers(0, n, 5)] = np.nan  # NaN sorts last within its image, as lexsort has it
    if seed == 5:
        images = images * 2**40  # image · range past int64: lexsort itself
    experts = rng.integers(3, 7, n)

    for keys in ((seconds, images), (images, experts, images % 7), (seconds + 0.5, images)):
        np.testing.assert_array_equal(m.lexsort_order(keys), np.lexsort(keys))


# ---------------------------------------------------------------- statistics


def test_anova_of_two_groups() -> None:
    result = anova_oneway([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])

    assert result.f == pytest.approx(13.5)
    assert (result.df_between, result.df_within) == (1, 4)
    assert result.p == pytest.approx(0.02131, abs=1e-4)
    assert result.reason == ""


def test_paired_t_of_three_experts() -> None:
    result = paired_t([1.0, 2.0, 3.0], [2.0, 4.0, 5.0])

    assert result.t == pytest.approx(-5.0)
    assert result.df == 2
    assert result.p == pytest.approx(0.03775, abs=1e-4)


@pytest.mark.parametrize("seed", range(5))
def test_closed_forms_agree_with_scipy_stats(seed: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0.7, 0.1, 10).tolist(), rng.normal(0.8, 0.05, 10).tolist()

    anova, reference_anova = anova_oneway(a, b), stats.f_oneway(a, b)
    paired, reference_paired = paired_t(a, b), stats.ttest_rel(a, b)

    assert (anova.f, anova.p) == pytest.approx((reference_anova.statistic, reference_anova.pvalue), rel=1e-10)
    assert (paired.t, paired.p) == pytest.approx(
        (reference_paired.statistic, reference_paired.pvalue), rel=1e-10
    )


@pytest.mark.parametrize(
    ("a", "b", "reason_part"),
    [([0.5], [0.6, 0.7], "at least 2 experts"), ([0.5, 0.5], [0.7, 0.7], "no spread")],
)
def test_anova_of_too_few_or_constant_values_is_nan_with_a_reason(
    a: list[float], b: list[float], reason_part: str
) -> None:
    result = anova_oneway(a, b)

    assert np.isnan(result.f)
    assert np.isnan(result.p)
    assert reason_part in result.reason


@pytest.mark.parametrize(
    ("a", "b", "reason_part"),
    [
        ([0.5], [0.6], "at least 2 experts"),
        ([0.5, float("nan")], [0.6, 0.7], "at least 2 experts"),
        ([0.5, 0.6], [0.6, 0.7], "do not vary"),
        ([0.5, 0.6], [0.6], "one value per expert"),
    ],
)
def test_paired_t_of_degenerate_input_is_nan_with_a_reason(
    a: list[float], b: list[float], reason_part: str
) -> None:
    result = paired_t(a, b)

    assert np.isnan(result.t)
    assert reason_part in result.reason


def test_grouped_average_precision_matches_the_docstring_example() -> None:
    ap = m.grouped_average_precision(
        np.array([True, True, False, True]), np.array([0, 1, 0, 0]), np.array([3, 2])
    )
    assert np.allclose(ap, [5 / 9, 1 / 2])


def test_grouped_average_precision_equals_one_list_at_a_time() -> None:
    rng = np.random.default_rng(3)
    for _ in range(200):
        size = int(rng.integers(1, 5))
        groups = rng.integers(0, size, size=int(rng.integers(0, 30)))
        hits = rng.random(len(groups)) < 0.6
        n_ref = rng.integers(0, 12, size=size)
        n_ref = np.maximum(n_ref, np.bincount(groups[hits], minlength=size))
        grouped = m.grouped_average_precision(hits, groups, n_ref)
        one_by_one = [m.voc_average_precision(hits[groups == g], int(n_ref[g])) for g in range(size)]
        assert np.allclose(grouped, one_by_one, atol=1e-12)


@pytest.mark.parametrize("spread", ["even", "one long group"])
def test_suffix_max_by_group_equals_each_groups_reversed_running_maximum(spread: str) -> None:
    rng = np.random.default_rng(5)
    for _ in range(50):
        size = int(rng.integers(1, 40))
        count = int(rng.integers(0, 400))
        groups = np.sort(rng.integers(0, size, count))
        if spread == "one long group" and count:
            groups = np.where(rng.random(count) < 0.9, 0, groups)  # a table of size × longest would be sparse
            groups.sort()
        values = rng.integers(0, 7, count) / rng.integers(1, 9, count)  # precisions, ties included

        found = m._suffix_max_by_group(values, groups, size)

        expected = np.zeros(count)
        for group in range(size):
            members = np.flatnonzero(groups == group)
            expected[members] = np.maximum.accumulate(values[members][::-1])[::-1]
        np.testing.assert_array_equal(found, expected)
