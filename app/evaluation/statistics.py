"""Aided vs unaided tests over per-expert values (DESIGN.md "Statistics"), paired effect sizes, Holm correction.

The paper's F values are a one-way ANOVA of the two modes; the paired t-test (repeated measures over the
same experts) is the right one. Degenerate inputs give NaN with a reason instead of a scipy warning.
Both are written out in closed form with scipy's distribution functions (the same numbers as scipy.stats'
f_oneway and ttest_rel, checked by the tests, without their per-call overhead, which dominated a study's
statistics).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from scipy import special

NAN = float("nan")


class AnovaResult(NamedTuple):
    f: float
    df_between: int
    df_within: int
    p: float
    reason: str = ""


class PairedTResult(NamedTuple):
    t: float
    df: int
    p: float
    reason: str = ""


def anova_oneway(a: Sequence[float], b: Sequence[float]) -> AnovaResult:
    """One-way ANOVA of two groups (k = 2): F = [SS_between / (k − 1)] / [SS_within / (N − k)].

    df_between = 1, df_within = N − 2 with N = len(a) + len(b); p = P(F(1, N − 2) ≥ F).
    Needs at least 2 values per group and some spread inside the groups, else NaN with `reason`.

    Example: a = [1, 2, 3], b = [4, 5, 6] → F = 13.5, df (1, 4), p ≈ 0.0213.
    """
    first, second = _finite(a), _finite(b)
    df_within = len(first) + len(second) - 2
    reason = _anova_problem(first, second)
    if reason:
        return AnovaResult(NAN, 1, max(df_within, 0), NAN, reason)
    grand_mean = np.concatenate([first, second]).mean()
    between = sum(len(group) * (group.mean() - grand_mean) ** 2 for group in (first, second))
    within = sum(float(((group - group.mean()) ** 2).sum()) for group in (first, second))
    f = float(between / (within / df_within))
    return AnovaResult(f, 1, df_within, float(special.fdtrc(1, df_within, f)))


def _anova_problem(first: np.ndarray, second: np.ndarray) -> str:
    if len(first) < 2 or len(second) < 2:
        return f"needs at least 2 experts per mode, got {len(first)} and {len(second)}"
    if np.ptp(first) == 0 and np.ptp(second) == 0:
        return "no spread within either mode: F is undefined"
    return ""


def paired_t(a: Sequence[float], b: Sequence[float]) -> PairedTResult:
    """Paired t-test of a[i] vs b[i] (same expert i): d = a − b, t = mean(d) / (sd(d) / √n), df = n − 1.

    p is two-sided. Pairs with a non-finite value are dropped. Needs n ≥ 2 pairs whose differences vary,
    else NaN with `reason`.

    Example: a = [1, 2, 3], b = [2, 4, 5] → d = [−1, −2, −2], t ≈ −5.0, df 2, p ≈ 0.0377.
    """
    if len(a) != len(b):
        return PairedTResult(
            NAN, 0, NAN, f"needs one value per expert in both modes, got {len(a)} and {len(b)}"
        )
    first, second = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    keep = np.isfinite(first) & np.isfinite(second)
    differences = first[keep] - second[keep]
    n = len(differences)
    if n < 2:
        return PairedTResult(NAN, max(n - 1, 0), NAN, f"needs at least 2 experts with both modes, got {n}")
    if np.ptp(differences) == 0:
        return PairedTResult(NAN, n - 1, NAN, "the differences do not vary: t is undefined")
    t = float(differences.mean() / (differences.std(ddof=1) / np.sqrt(n)))
    return PairedTResult(t, n - 1, float(2.0 * special.stdtr(n - 1, -abs(t))))


def _finite(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    return array[np.isfinite(array)]


def paired_effect_size(a: Sequence[float], b: Sequence[float]) -> float:
    """Cohen's d_z of paired values (same expert i): d = b − a, d_z = mean(d) / sd(d) (sample SD).

    Pairs with a non-finite value are dropped; NaN for fewer than 2 pairs or differences that do not vary.
    d_z = t / √n of `paired_t` (with the sign of b − a).

    Example: a = [1, 2, 3], b = [2, 4, 5] → d = [1, 2, 2], d_z = (5/3) / 0.577 ≈ 2.887.
    """
    first, second = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(first) != len(second):
        return NAN
    keep = np.isfinite(first) & np.isfinite(second)
    differences = second[keep] - first[keep]
    if len(differences) < 2 or np.ptp(differences) == 0:
        return NAN
    return float(differences.mean() / differences.std(ddof=1))


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values, in the input order; None (or NaN) entries stay None and do not count.

    With the m finite p sorted ascending p_(1) ≤ … ≤ p_(m): p̃_(i) = max_{j ≤ i} min(1, (m − j + 1) p_(j)).
    The same numbers as statsmodels' multipletests(method="holm") (pinned by a test).

    Example: [0.01, 0.04, 0.03] → [0.03, 0.06, 0.06].
    """
    finite = [
        (value, index) for index, value in enumerate(p_values) if value is not None and np.isfinite(value)
    ]
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (value, index) in enumerate(sorted(finite)):
        running = max(running, min(1.0, (len(finite) - rank) * value))
        adjusted[index] = running
    return adjusted
