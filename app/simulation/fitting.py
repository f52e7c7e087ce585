"""Fit a simulated-expert population to a finished study's results, so a group can plan its next study
from its last one.

What is fitted, for one task kind, starting from a preset (each step a bisection or a ratio, each checked
by simulating the demo's phantoms with Concord's evaluation):
- skill shift δ added to sensitivity and label skill: the unaided mean concordance;
- automation-bias factor b multiplying every bias table: the aided mean concordance;
- time factors: the unaided and aided mean seconds per image.
Fit quality: observed vs. fitted mean and spread (sd over experts) of both measures in both modes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from app.evaluation.schemas import TaskMetricsOut
from app.simulation import world
from app.simulation.model import ExpertParams, population

FIT_EXPERTS = 10
STEPS = 8


@dataclass(frozen=True)
class Observed:
    concordance: dict[str, float]  # mode → mean
    concordance_sd: dict[str, float]
    seconds: dict[str, float]
    seconds_sd: dict[str, float]

    @classmethod
    def of(cls, metrics: TaskMetricsOut) -> Observed:
        modes = {mode: metrics.modes[mode].summary for mode in ("unaided", "aided") if mode in metrics.modes}
        if set(modes) != {"unaided", "aided"}:
            raise ValueError("the task needs expert work in both unaided and aided mode to fit a population")
        return cls(
            concordance={m: s.concordance.mean or 0.0 for m, s in modes.items()},
            concordance_sd={m: s.concordance.sd or 0.0 for m, s in modes.items()},
            seconds={m: s.seconds_per_image.mean or 0.0 for m, s in modes.items()},
            seconds_sd={m: s.seconds_per_image.sd or 0.0 for m, s in modes.items()},
        )


@dataclass(frozen=True)
class Fit:
    params: ExpertParams
    observed: Observed
    fitted: Observed

    def quality(self) -> list[tuple[str, str, float, float, float, float]]:
        """(measure, mode, observed mean, fitted mean, observed sd, fitted sd) rows."""
        rows = []
        for measure in ("concordance", "seconds"):
            for mode in ("unaided", "aided"):
                rows.append(
                    (
                        measure,
                        mode,
                        getattr(self.observed, measure)[mode],
                        getattr(self.fitted, measure)[mode],
                        getattr(self.observed, f"{measure}_sd")[mode],
                        getattr(self.fitted, f"{measure}_sd")[mode],
                    )
                )
        return rows


def _simulate(kind: str, params: ExpertParams, seed: int) -> Observed:
    task = world.sim_task(kind, 0, 4 if kind == "detect" else 15)
    return Observed.of(world.evaluate(world.run(task, population(params, FIT_EXPERTS, seed, task.task_key))))


def _bisect(measure: Callable[[float], float], target: float, low: float, high: float, rising: bool) -> float:
    for _ in range(STEPS):
        middle = (low + high) / 2
        above = measure(middle) > target
        if above == rising:
            high = middle
        else:
            low = middle
    return (low + high) / 2


def _shifted(params: ExpertParams, delta: float) -> ExpertParams:
    return replace(params, sensitivity=params.sensitivity + delta, label_skill=params.label_skill + delta)


def _biased(params: ExpertParams, factor: float) -> ExpertParams:
    def scale(table: tuple[float, float, float]) -> tuple[float, float, float]:
        a, b, c = (min(value * factor, 0.99) for value in table)
        return (a, b, c)

    return replace(
        params,
        bias_wrong_label=scale(params.bias_wrong_label),
        bias_duplicate=scale(params.bias_duplicate),
        bias_fake=scale(params.bias_fake),
        bias_omission=scale(params.bias_omission),
    )


def _timed(params: ExpertParams, unaided: float, aided: float) -> ExpertParams:
    return replace(
        params,
        unaided_s=tuple(value * unaided for value in params.unaided_s),  # type: ignore[arg-type]
        aided_s=tuple(value * aided for value in params.aided_s),  # type: ignore[arg-type]
    )


def fit(kind: str, base: ExpertParams, observed: Observed, seed: int = 0) -> Fit:
    delta = _bisect(
        lambda d: _simulate(kind, _shifted(base, d), seed).concordance["unaided"],
        observed.concordance["unaided"],
        -4.0,
        4.0,
        rising=True,
    )
    params = _shifted(base, delta)
    factor = _bisect(
        lambda f: _simulate(kind, _biased(params, f), seed).concordance["aided"],
        observed.concordance["aided"],
        0.0,
        4.0,
        rising=False,
    )
    params = _biased(params, factor)
    simulated = _simulate(kind, params, seed)
    params = _timed(
        params,
        observed.seconds["unaided"] / max(simulated.seconds["unaided"], 1e-9),
        observed.seconds["aided"] / max(simulated.seconds["aided"], 1e-9),
    )
    return Fit(params, observed, _simulate(kind, params, seed))
