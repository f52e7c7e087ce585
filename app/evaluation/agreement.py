"""Agreement statistics of DESIGN.md "Evaluation" ("Statistics a reviewer asks for"): pure numpy, no I/O.

- Cohen's kappa (unweighted for classes, quadratic weights for ordered grades) of two raters' category codes;
- Fleiss' kappa of many raters per subject (counts table), Krippendorff's alpha (the `krippendorff` library's
  computation);
- ICC(A,1) (Shrout & Fleiss ICC(2,1), two-way random, absolute agreement, single rater) and Bland–Altman
  bias and 95 % limits of agreement for counts per image;
- clinical threshold: cases where a rater's count lies on the other side of a threshold than the reference.

Kappa, Fleiss and ICC are written in closed form: they run per expert and mode on every evaluation, where the
libraries' per-call overhead (and statsmodels' import time) would dominate. The tests pin each closed form
to statsmodels (kappa, Fleiss) and to Shrout & Fleiss's published example (ICC). Krippendorff's alpha repeats
the `krippendorff` library's array operations without its input checks and its stack of identity matrices
(less than half its time on the study's tables); the tests pin it to the library bit for bit.
Undefined values (no data, no spread) are NaN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
NAN = float("nan")
LIMITS_Z = 1.96


def cohen_kappa(
    first: IntArray, second: IntArray, n_categories: int, weights: Literal["none", "quadratic"] = "none"
) -> float:
    """Cohen's kappa of two raters' codes (N,) in 0..K−1: κ = 1 − Σ W·O / Σ W·E.

    O = observed proportions (K, K), E = outer product of the two raters' marginal proportions, W the
    disagreement weights: 1 − I (unweighted) or (i − j)² / (K − 1)² (quadratic, for ordered grades).
    NaN when N = 0 or Σ W·E = 0 (both raters used one and the same category).

    Example: first = [0, 1, 1, 0], second = [0, 1, 0, 0], K = 2 → O = [[.5, 0], [.25, .25]],
    E = [[.375, .125], [.375, .125]] → κ = 1 − .25 / .5 = 0.5.
    """
    if len(first) == 0 or n_categories < 1:
        return NAN
    table = np.bincount(first * n_categories + second, minlength=n_categories**2)
    return cohen_kappa_of_table(table.reshape(n_categories, n_categories), weights)


def cohen_kappa_of_table(table: IntArray, weights: Literal["none", "quadratic"] = "none") -> float:
    """`cohen_kappa` from the two raters' contingency table (K, K): table[i, j] = cells coded i by the first
    rater and j by the second (so several raters' tables come from one `np.bincount`). NaN for no cells."""
    n_categories, total = len(table), int(table.sum())
    if total == 0 or n_categories < 1:
        return NAN
    observed = table / total
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    codes = np.arange(n_categories, dtype=np.float64)
    if weights == "quadratic":
        weight = (codes[:, None] - codes[None, :]) ** 2 / max(n_categories - 1, 1) ** 2
    else:
        weight = 1.0 - np.eye(n_categories)
    chance = float((weight * expected).sum())
    if chance == 0.0:
        return NAN
    return 1.0 - float((weight * observed).sum()) / chance


def cohen_kappa_of_tables(tables: IntArray, weights: Literal["none", "quadratic"] = "none") -> FloatArray:
    """`cohen_kappa_of_table` (R,) of R contingency tables (R, K, K) at once, with the same sums in the same
    order per table (each table's reductions run over that table alone). NaN for a table without cells."""
    count, n_categories = tables.shape[0], tables.shape[1]
    if count == 0 or n_categories < 1:
        return np.full(count, NAN)
    totals = tables.reshape(count, -1).sum(axis=1)
    observed = tables / np.maximum(totals, 1)[:, None, None]
    expected = observed.sum(axis=2)[:, :, None] * observed.sum(axis=1)[:, None, :]
    codes = np.arange(n_categories, dtype=np.float64)
    if weights == "quadratic":
        weight = (codes[:, None] - codes[None, :]) ** 2 / max(n_categories - 1, 1) ** 2
    else:
        weight = 1.0 - np.eye(n_categories)
    chance = (weight * expected).reshape(count, -1).sum(axis=1)
    disagreement = (weight * observed).reshape(count, -1).sum(axis=1)
    defined = (totals > 0) & (chance != 0.0)
    kappas: FloatArray = np.full(count, NAN)
    kappas[defined] = 1.0 - disagreement[defined] / chance[defined]
    return kappas


def fleiss_kappa(counts: IntArray) -> float:
    """Fleiss' kappa of a counts table (subjects N, categories K); every subject rated by the same n raters.

    P_i = (Σ_j n_ij² − n) / (n (n − 1)), P̄ = mean P_i; p_j = Σ_i n_ij / (N n), P_e = Σ_j p_j²;
    κ = (P̄ − P_e) / (1 − P_e). NaN when N = 0, n < 2 or P_e = 1.

    Example: [[2, 0], [0, 2], [1, 1]] (two raters) → P̄ = 2/3, P_e = 1/2 → κ = 1/3.
    """
    table = np.asarray(counts, dtype=np.float64)
    if table.ndim != 2 or table.shape[0] == 0:
        return NAN
    raters = table.sum(axis=1)
    n = float(raters[0])
    if n < 2 or not np.all(raters == n):
        return NAN
    agreement = float(((table**2).sum(axis=1) - n).mean() / (n * (n - 1)))
    shares = table.sum(axis=0) / (table.shape[0] * n)
    chance = float((shares**2).sum())
    if chance >= 1.0:
        return NAN
    return (agreement - chance) / (1.0 - chance)


def krippendorff_alpha(value_counts: IntArray, level: Literal["nominal", "ordinal"]) -> float:
    """Krippendorff's alpha from a value-counts table (units, values): the `krippendorff` library's
    computation (0.9) without its input checks, each array built by the same operations, so the same bits.

    value_counts[u, v] = number of raters who gave unit u the value v (values in their order, which matters
    for "ordinal"). Units with fewer than two values cannot be paired and do not count; a rater may leave a
    unit out (missing data). NaN when fewer than two values are pairable or there is no variation.
    alpha = 1 − Σ o·δ / Σ e·δ: o the coincidences Σ_u n_uc (n_uk − [c = k]) / (n_u − 1), e the expected
    ones (n_c n_k − [c = k] n_c) / (n − 1), δ 1 for unequal values (nominal) or the ordinal metric.
    """
    table = np.asarray(value_counts, dtype=np.float64)
    if table.ndim != 2 or table.shape[1] < 2:
        return NAN
    pairable = table[table.sum(axis=1) >= 2]
    if len(pairable) == 0 or np.count_nonzero(pairable.sum(axis=0)) < 2:
        return NAN
    coincidences = _coincidences(pairable)
    totals = coincidences.sum(axis=0)
    expected = np.divide(np.outer(totals, totals) - np.diagflat(totals), totals.sum() - 1, dtype=np.float64)
    distances = _alpha_distances(totals, level)
    return float(1 - (coincidences * distances).sum() / (expected * distances).sum())


def _coincidences(table: FloatArray) -> FloatArray:
    """The library's coincidence matrix (values, values): the per-unit products less the diagonal's own
    pairs, each divided by its unit's pairable values − 1, summed over the units in the same (units, values,
    values) layout (so in the same order). The diagonal is taken off in place, not by multiplying a stack of
    identity matrices; counts are whole numbers, so either way gives the same values."""
    units, values = table.shape
    products = table[:, :, np.newaxis] * table[:, np.newaxis, :]
    diagonal = np.arange(values)
    products[:, diagonal, diagonal] -= table
    pairable = np.maximum(table.sum(axis=1), 2)
    per_unit = np.divide(products, (pairable - 1).reshape((units, 1, 1)), dtype=np.float64)
    coincidences: FloatArray = per_unit.sum(axis=0)
    return coincidences


def _alpha_distances(totals: FloatArray, level: Literal["nominal", "ordinal"]) -> FloatArray:
    """The library's distance of every pair of values: nominal 1 where they differ; ordinal
    (Σ_{g=c..k} n_g − (n_c + n_k) / 2)²."""
    index = np.arange(len(totals))
    first, second = index[:, np.newaxis], index[np.newaxis, :]
    if level == "nominal":
        unequal: FloatArray = (first != second).astype(np.float64)
        return unequal
    low, high = np.minimum(first, second), np.maximum(first, second)
    ranges = np.dstack((low, high + 1))
    between = np.add.reduceat(np.append(totals, 0), ranges.reshape(-1))[::2].reshape(*low.shape)
    distances: FloatArray = (between - np.divide(totals[low] + totals[high], 2, dtype=np.float64)) ** 2
    return distances


def icc_absolute(ratings: FloatArray) -> float:
    """ICC(A,1) of a ratings table (subjects n, raters k): two-way random effects, absolute agreement.

    ICC = (MSR − MSE) / (MSR + (k − 1) MSE + k (MSC − MSE) / n), MSR = k Σ_i (ȳ_i· − ȳ)² / (n − 1),
    MSC = n Σ_j (ȳ_·j − ȳ)² / (k − 1), MSE = Σ (y_ij − ȳ_i· − ȳ_·j + ȳ)² / ((n − 1)(k − 1)).
    Shrout & Fleiss (1979) call it ICC(2,1); their 6 × 4 example gives 0.29. NaN for n < 2, k < 2 or a
    zero denominator (no variation at all).
    """
    table = np.asarray(ratings, dtype=np.float64)
    if table.ndim != 2 or table.shape[0] < 2 or table.shape[1] < 2:
        return NAN
    n, k = table.shape
    grand = table.mean()
    rows, cols = table.mean(axis=1), table.mean(axis=0)
    msr = k * float(((rows - grand) ** 2).sum()) / (n - 1)
    msc = n * float(((cols - grand) ** 2).sum()) / (k - 1)
    residual = table - rows[:, None] - cols[None, :] + grand
    mse = float((residual**2).sum()) / ((n - 1) * (k - 1))
    denominator = msr + (k - 1) * mse + k * (msc - mse) / n
    if denominator == 0.0:
        return NAN
    return float((msr - mse) / denominator)


def icc_absolute_of_pairs(first: FloatArray, second: FloatArray) -> FloatArray:
    """`icc_absolute` (R,) of R tables of two raters at once: table r is first[r] and second[r] (n,) side by
    side, as `icc_absolute(np.stack([first[r], second[r]], axis=1))`, with the same sums in the same order
    (each row's reductions run over that row alone), so the values are those of one table at a time.
    """
    table = np.stack([np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)], axis=2)
    count, n, k = table.shape
    if n < 2:
        return np.full(count, NAN)
    flat = table.reshape(count, n * k)  # each row: one table in row-major order, as `table.mean()` sums it
    grand = flat.mean(axis=1)
    rows, cols = table.mean(axis=2), table.mean(axis=1)
    msr = k * ((rows - grand[:, None]) ** 2).sum(axis=1) / (n - 1)
    msc = n * ((cols - grand[:, None]) ** 2).sum(axis=1) / (k - 1)
    residual = table - rows[:, :, None] - cols[:, None, :] + grand[:, None, None]
    mse = (residual**2).reshape(count, n * k).sum(axis=1) / ((n - 1) * (k - 1))
    denominator = msr + (k - 1) * mse + k * (msc - mse) / n
    defined = denominator != 0.0
    result: FloatArray = np.full(count, NAN)
    result[defined] = (msr[defined] - mse[defined]) / denominator[defined]
    return result


@dataclass(frozen=True)
class BlandAltman:
    """Bias (mean of rater − reference) and 95 % limits of agreement bias ± 1.96 · SD (ddof 1), n pairs."""

    bias: float
    lower: float
    upper: float
    n: int


def bland_altman(rater: FloatArray, reference: FloatArray) -> BlandAltman:
    """Bland–Altman agreement of paired values (N,): d = rater − reference, bias = mean d,
    limits = bias ± 1.96 · sd(d) (sample SD). Limits NaN for N < 2, everything NaN for N = 0.

    Example: rater [3, 5, 7], reference [2, 5, 5] → d = [1, 0, 2], bias 1, sd 1 → limits −0.96, 2.96.
    """
    differences = np.asarray(rater, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    n = len(differences)
    if n == 0:
        return BlandAltman(NAN, NAN, NAN, 0)
    bias = float(differences.mean())
    if n < 2:
        return BlandAltman(bias, NAN, NAN, 1)
    half_width = LIMITS_Z * float(differences.std(ddof=1))
    return BlandAltman(bias, bias - half_width, bias + half_width, n)


def bland_altman_of_rows(rater: FloatArray, reference: FloatArray) -> list[BlandAltman]:
    """`bland_altman` of each row of paired tables (R, N) at once, with the same sums in the same order
    (each row's mean and SD reduce that row alone)."""
    differences = np.asarray(rater, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    count, n = differences.shape
    if n < 2:
        return [bland_altman(rater[row], reference[row]) for row in range(count)]
    bias = differences.mean(axis=1).tolist()
    half_width = (LIMITS_Z * differences.std(axis=1, ddof=1)).tolist()
    return [
        BlandAltman(mean, mean - half, mean + half, n) for mean, half in zip(bias, half_width, strict=True)
    ]


@dataclass(frozen=True)
class ThresholdCases:
    """Cases (rater × image) whose count is on the other side of the threshold than the reference's."""

    cases: int
    over: int  # rater ≥ threshold > reference
    under: int  # reference ≥ threshold > rater


def threshold_cases(rater: FloatArray, reference: FloatArray, threshold: float) -> ThresholdCases:
    """Counts at or above `threshold` are positive (the paper: ≥ 7 mitotic figures per high-power field).

    Example: rater [8, 3, 7], reference [6, 9, 7], threshold 7 → over 1 (8 vs 6), under 1 (3 vs 9).
    """
    mine = np.asarray(rater, dtype=np.float64) >= threshold
    theirs = np.asarray(reference, dtype=np.float64) >= threshold
    return ThresholdCases(
        cases=len(mine),
        over=int(np.count_nonzero(mine & ~theirs)),
        under=int(np.count_nonzero(~mine & theirs)),
    )


def threshold_cases_of_rows(
    rater: FloatArray, reference: FloatArray, threshold: float
) -> list[ThresholdCases]:
    """`threshold_cases` of each row of paired tables (R, N) at once."""
    mine = np.asarray(rater, dtype=np.float64) >= threshold
    theirs = np.asarray(reference, dtype=np.float64) >= threshold
    over = np.count_nonzero(mine & ~theirs, axis=1).tolist()
    under = np.count_nonzero(~mine & theirs, axis=1).tolist()
    return [
        ThresholdCases(cases=mine.shape[1], over=high, under=low)
        for high, low in zip(over, under, strict=True)
    ]
