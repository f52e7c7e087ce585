"""Two-level bootstrap: its resampled concordance is the paper's concordance of the resampled data; seeded;
cached; intervals around the observed value."""

from __future__ import annotations

import numpy as np
import pytest

from app.evaluation import bootstrap as bs
from app.evaluation import metrics as m
from app.evaluation import review
from app.evaluation.service import MetricsParams, task_metrics
from app.models import TaskKind
from tests.evaluation.test_agreement import study


def random_study(
    seed: int,
) -> tuple[m.FloatArray, m.IntArray, m.IntArray, m.FloatArray, m.IntArray, m.IntArray]:
    """Detections (in image blocks) and reference of 3 images, 2 classes."""
    rng = np.random.default_rng(seed)
    corners = rng.integers(0, 200, size=(30, 2)).astype(np.float64)
    reference = np.hstack([corners, corners + 20])
    ref_images = np.sort(rng.integers(0, 3, 30))
    ref_labels = rng.integers(0, 2, 30)
    keep = rng.random(30) < 0.8
    det = reference[keep] + rng.integers(-4, 5, size=(int(keep.sum()), 4))
    det_images, det_labels = ref_images[keep], ref_labels[keep].copy()
    det_labels[rng.random(len(det_labels)) < 0.15] ^= 1
    order = np.argsort(det_images, kind="stable")
    return det[order], det_labels[order], det_images[order], reference, ref_labels, ref_images


def test_contiguous_average_precision_equals_grouped_average_precision() -> None:
    rng = np.random.default_rng(2)
    groups = np.sort(rng.integers(0, 6, 200))
    tp = rng.random(200) < 0.6
    n_ref = np.bincount(groups[tp], minlength=8) + rng.integers(0, 3, 8)

    expected = m.grouped_average_precision(tp, groups, n_ref) * n_ref
    np.testing.assert_allclose(bs.contiguous_average_precision(tp, groups, 8), expected, atol=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_resampled_concordance_is_the_paper_concordance_of_the_resampled_images(seed: int) -> None:
    det, det_labels, det_images, ref, ref_labels, ref_images = random_study(seed)
    match = m.greedy_match(det, det_labels, det_images, ref, ref_labels, ref_images)
    reference_counts = np.zeros((3, 2), dtype=np.int64)
    np.add.at(reference_counts, (ref_images, ref_labels), 1)
    sample = bs.concordance_sample(match.true_positive, det_labels, det_images, reference_counts)
    draws = np.array([[1, 1, 1], [2, 0, 1], [0, 3, 0], [1, 0, 2]])

    scores, denominators = sample.values(draws)

    for row, counts in enumerate(draws):
        # the resampled data written out: image i drawn k times becomes k images in a row
        parts, refs, next_image = [], [], 0
        for image, times in enumerate(counts):
            for _ in range(times):
                chosen = det_images == image
                parts.append((det[chosen], det_labels[chosen], np.full(int(chosen.sum()), next_image)))
                kept = ref_images == image
                refs.append((ref[kept], ref_labels[kept], np.full(int(kept.sum()), next_image)))
                next_image += 1
        mine = [np.concatenate([part[k] for part in parts]) for k in range(3)]
        theirs = [np.concatenate([part[k] for part in refs]) for k in range(3)]
        expected = m.paper_concordance(mine[0], mine[1], mine[2], theirs[0], theirs[1], theirs[2]).mean
        assert scores[row] == pytest.approx(expected, abs=1e-9), counts
    assert list(denominators) == [1, 1, 1, 1]


def test_replicates_are_seeded_and_rates_pool_entries() -> None:
    caught = [bs.rate_sample(np.array([1.0, 0.0, 1.0]), np.array([0, 1, 1]), 2) for _ in range(4)]
    first = bs.replicate_ratios([caught], 300, bs.generator(7, "t", "rate"))
    again = bs.replicate_ratios([caught], 300, bs.generator(7, "t", "rate"))
    other = bs.replicate_ratios([caught], 300, bs.generator(8, "t", "rate"))

    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    # image 0 holds a caught entry, image 1 one caught of two: every replicate lies in [1/2, 1]
    assert np.nanmin(first) >= 0.5 and np.nanmax(first) <= 1.0
    interval = bs.percentile_interval(2 / 3, first[:, 0])
    assert interval.low <= 2 / 3 <= interval.high


def test_the_study_bootstrap_brackets_the_observed_figures_and_is_cached() -> None:
    task = study(TaskKind.grade)
    task.work["aided"] = {name: work for name, work in task.work["unaided"].items()}
    params = MetricsParams(bootstrap=200, seed=3)

    result = task_metrics(task, params)
    again = task_metrics(task, params)

    assert result.uncertainty is not None and again.uncertainty is result.uncertainty  # cached
    concordance = result.uncertainty.measures["concordance"]
    assert set(concordance) == {"unaided", "aided", "aided_minus_unaided"}
    observed = result.modes["unaided"].summary.concordance.mean
    assert concordance["unaided"].estimate == pytest.approx(observed)
    low, high = concordance["unaided"].low, concordance["unaided"].high
    assert low is not None and high is not None and observed is not None and low <= observed <= high
    # the same work in both modes: the observed difference is exactly 0
    assert concordance["aided_minus_unaided"].estimate == pytest.approx(0.0)
    assert task_metrics(task, MetricsParams(bootstrap=200, seed=4)).uncertainty != result.uncertainty
    assert task_metrics(task, MetricsParams()).uncertainty is None
    assert len(review._CACHE) <= review.CACHE_SIZE
