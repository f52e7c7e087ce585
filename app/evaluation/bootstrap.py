"""Two-level bootstrap of study statistics: resample experts, then images within each drawn expert.

A replicate draws E experts with replacement from the E experts of a mode; each drawn expert (each slot)
gets its own resample of its image universe (U images drawn with replacement, given as counts per image,
multinomial). Every statistic is a ratio of sums over the slots, Σ numerator / Σ denominator, which covers a
mean over experts (numerator = the expert's value, denominator 1) and a pooled rate (caught / total).
The 95 % interval is the percentile interval of the replicates. Seeded: the same seed gives the same
interval. Pure numpy, no I/O.

Cost: each expert is drawn about `replicates` times in all, so one statistic costs about replicates ×
Σ_experts (the expert's work for one resample).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
LEVEL = 0.95

# counts (n, U) of each image in n resamples → numerator (n,), denominator (n,)
SampleValues = Callable[[IntArray], tuple[FloatArray, FloatArray]]


@dataclass(frozen=True)
class ExpertSample:
    """One expert's part of a statistic: its image universe size and its value under image resamples."""

    universe: int
    values: SampleValues


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float


def generator(seed: int, *names: str) -> np.random.Generator:
    """A generator for one statistic: the same (seed, names) always gives the same stream."""
    return np.random.default_rng([seed, *(zlib.crc32(name.encode()) for name in names)])


def replicate_ratios(
    groups: Sequence[Sequence[ExpertSample]], replicates: int, rng: np.random.Generator
) -> FloatArray:
    """(B, G) replicate values of G statistics over the same E experts (groups[g][e]: expert e in group g).

    The experts drawn are shared by the groups (a paired design: aided and unaided of the same experts);
    each group resamples images on its own. A replicate whose denominator is 0 is NaN.
    """
    n_experts = len(groups[0]) if groups else 0
    if n_experts == 0 or replicates <= 0:
        return np.full((max(replicates, 0), len(groups)), np.nan)
    chosen = rng.integers(0, n_experts, size=(replicates, n_experts))
    result = np.empty((replicates, len(groups)))
    for column, samples in enumerate(groups):
        numerators = np.zeros((replicates, n_experts))
        denominators = np.zeros((replicates, n_experts))
        for expert, sample in enumerate(samples):
            slots = np.nonzero(chosen == expert)
            if len(slots[0]) == 0:
                continue
            numerators[slots], denominators[slots] = sample.values(
                _image_counts(rng, sample.universe, len(slots[0]))
            )
        totals = denominators.sum(axis=1)
        result[:, column] = np.divide(
            numerators.sum(axis=1), totals, out=np.full(replicates, np.nan), where=totals > 0
        )
    return result


def _image_counts(rng: np.random.Generator, universe: int, draws: int) -> IntArray:
    """(draws, U): how often each of U images is drawn when U images are drawn with replacement."""
    if universe == 0:
        return np.zeros((draws, 0), dtype=np.int64)
    picks = rng.integers(0, universe, size=(draws, universe)) + universe * np.arange(draws)[:, None]
    return np.bincount(picks.ravel(), minlength=draws * universe).reshape(draws, universe)


def percentile_interval(estimate: float, values: FloatArray, level: float = LEVEL) -> Interval:
    """Percentile interval of the finite replicate values; NaN bounds when there are none."""
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return Interval(estimate, np.nan, np.nan)
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return Interval(estimate, float(low), float(high))


def mean_sample(values: FloatArray) -> ExpertSample:
    """An expert whose value is the mean of per-image values (N,) (e.g. seconds per image seen)."""
    per_image = np.asarray(values, dtype=np.float64)

    def resampled(counts: IntArray) -> tuple[FloatArray, FloatArray]:
        if len(per_image) == 0:
            zeros = np.zeros(len(counts))
            return zeros, zeros
        return counts @ per_image / len(per_image), np.ones(len(counts))

    return ExpertSample(len(per_image), resampled)


def rate_sample(caught: FloatArray, entry_images: IntArray, universe: int) -> ExpertSample:
    """An expert's pooled rate of register entries: numerator Σ counts[image of k]·caught_k, denominator
    Σ counts[image of k], for entries k (K,) on universe images entry_images (K,)."""
    flags = np.asarray(caught, dtype=np.float64)

    def resampled(counts: IntArray) -> tuple[FloatArray, FloatArray]:
        weights = counts[:, entry_images].astype(np.float64)
        return weights @ flags, weights.sum(axis=1)

    return ExpertSample(universe, resampled)


def concordance_sample(
    true_positive: npt.NDArray[np.bool_], classes: IntArray, images: IntArray, reference_counts: IntArray
) -> ExpertSample:
    """An expert's paper concordance (mean over classes of VOC AP, `metrics.paper_concordance`) under image
    resamples.

    true_positive, classes, images (N,): the expert's detections in detection order with their greedy TP
    flag, class index in 0..C−1 and image index in 0..U−1; each image's detections are contiguous.
    reference_counts (U, C): reference objects per image and class. An image drawn k times puts its
    detections k times in a row (their TP flags unchanged: matching is per image and class) and counts its
    reference objects k times. A class counts when the resample holds a detection or a reference object of
    it; AP_c = Σ_{TP k} max_{j ≥ k} precision_j / n_ref,c (every-point interpolation), 0 when n_ref,c = 0.
    """
    universe, n_classes = reference_counts.shape
    order = np.argsort(classes, kind="stable")  # class-major, detection order inside a class
    block_starts = _run_starts(classes[order] * max(universe, 1) + images[order])
    block_lengths = np.diff(np.r_[block_starts, len(order)])
    block_images = images[order][block_starts]
    block_classes = classes[order][block_starts]
    flags = true_positive[order]
    in_class = np.zeros((len(block_starts), n_classes))
    in_class[np.arange(len(block_starts)), block_classes] = 1.0

    def resampled(counts: IntArray) -> tuple[FloatArray, FloatArray]:
        draws = len(counts)
        repeats = counts[:, block_images]
        flat = repeats.ravel()
        instance_block = np.repeat(np.tile(np.arange(len(block_starts)), draws), flat)
        lengths = block_lengths[instance_block]
        offsets = np.cumsum(lengths) - lengths
        detection = np.repeat(block_starts[instance_block] - offsets, lengths) + np.arange(int(lengths.sum()))
        instance_group = np.repeat(np.arange(draws), len(block_starts)) * n_classes + np.tile(
            block_classes, draws
        )
        groups = np.repeat(np.repeat(instance_group, flat), lengths)
        n_ref = (counts @ reference_counts).astype(np.float64)
        ap = contiguous_average_precision(flags[detection], groups, draws * n_classes).reshape(
            draws, n_classes
        )
        ap = np.divide(ap, n_ref, out=np.zeros_like(ap), where=n_ref > 0)
        counted = ((repeats @ in_class) > 0) | (n_ref > 0)
        n_counted = counted.sum(axis=1)
        score = np.divide((ap * counted).sum(axis=1), n_counted, out=np.zeros(draws), where=n_counted > 0)
        return score, np.ones(draws)

    return ExpertSample(universe, resampled)


def contiguous_average_precision(
    true_positive: npt.NDArray[np.bool_], groups: IntArray, size: int
) -> FloatArray:
    """Σ over the TPs of each ranked list of max_{j ≥ k} precision_j, lists given as contiguous runs of
    ascending group ids in [0, size): VOC AP × n_ref, without sorting (the bootstrap's hot loop).

    The within-list suffix maximum is one reversed running maximum of precision + 2·(size − 1 − group):
    precision lies in [0, 1], so a later list never leaks into an earlier one (exact up to float rounding,
    about size · 1e-16). `metrics.grouped_average_precision` gives the same AP × n_ref (pinned by a test).
    """
    if len(groups) == 0:
        return np.zeros(size)
    starts = _run_starts(groups)
    lengths = np.diff(np.r_[starts, len(groups)])
    first = np.repeat(starts, lengths)
    hits = np.cumsum(true_positive, dtype=np.float64)
    before = np.r_[0.0, hits][first]
    precision = (hits - before) / (np.arange(1, len(groups) + 1) - first)
    lifted = precision + 2.0 * (size - 1 - groups)
    envelope = np.maximum.accumulate(lifted[::-1])[::-1] - 2.0 * (size - 1 - groups)
    totals: FloatArray = np.bincount(
        groups[true_positive], weights=envelope[true_positive], minlength=size
    ).astype(np.float64)
    return totals


def _run_starts(values: IntArray) -> IntArray:
    return np.flatnonzero(np.r_[True, values[1:] != values[:-1]]) if len(values) else _ints()


def _ints() -> IntArray:
    return np.zeros(0, dtype=np.int64)
