"""Calibration: simulate a study of phantoms with a preset and compare Concord's evaluation of it with the
paper's findings (`presets.PAPER_TARGETS`). `concord simulate --calibration` prints the table.

The presets are calibrated on the demo's phantom images (scene seed 0: 15 BAL and 15 EIPH patches, a
7000 × 5000 px mitotic-figure region in 4 fields); `seed` draws the expert population."""

from __future__ import annotations

from dataclasses import dataclass

from app.evaluation.schemas import TaskMetricsOut
from app.simulation import world
from app.simulation.model import population
from app.simulation.presets import PAPER_TARGETS, Target, preset

DEFAULT_IMAGES = {"classify": 15, "grade": 15, "detect": 4}


@dataclass(frozen=True)
class Row:
    target: Target
    simulated: float | None

    @property
    def within(self) -> bool:
        if self.simulated is None:
            return False
        allowed = self.target.tolerance * (self.target.value if self.target.measure == "seconds" else 1.0)
        return abs(self.simulated - self.target.value) <= allowed


def measure(metrics: TaskMetricsOut, target: Target) -> float | None:
    """The figure of the evaluation output that a target names (the one place that reads its fields)."""
    if target.measure in ("concordance", "seconds"):
        mode = metrics.modes.get(target.mode)
        if mode is None:
            return None
        spread = (
            mode.summary.concordance if target.measure == "concordance" else mode.summary.seconds_per_image
        )
        return spread.mean
    by_group = metrics.injected_errors.get(target.kind, {}).get(target.group, {})
    found = by_group.get(target.mode)
    return None if found is None else found.pooled.rate


def simulate_kind(
    kind: str, preset_name: str, experts: int, images: int, seed: int, scene_seed: int = 0
) -> TaskMetricsOut:
    task = world.sim_task(kind, scene_seed, images)
    people = population(preset(preset_name)[kind], experts, seed, task.task_key)
    return world.evaluate(world.run(task, people))


def calibrate(
    preset_name: str = "paper",
    experts: int = 10,
    seed: int = 0,
    images: dict[str, int] | None = None,
    scene_seed: int = 0,
    populations: int = 4,
    kinds: tuple[str, ...] = ("classify", "grade", "detect"),
) -> list[Row]:
    """Each target against its mean over `populations` expert populations (seeds seed, seed + 1, …)."""
    sizes = {**DEFAULT_IMAGES, **(images or {})}
    rows = []
    for kind in kinds:
        targets = [target for target in PAPER_TARGETS if target.task == kind]
        found: list[list[float | None]] = [[] for _ in targets]
        for population_seed in range(seed, seed + populations):
            metrics = simulate_kind(kind, preset_name, experts, sizes[kind], population_seed, scene_seed)
            for values, target in zip(found, targets, strict=True):
                values.append(measure(metrics, target))
        rows += [Row(target, _mean(values)) for target, values in zip(targets, found, strict=True)]
    return rows


def _mean(values: list[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return sum(present) / len(present) if present else None


def markdown(rows: list[Row]) -> str:
    lines = ["| figure | paper | simulated | tolerance | within |", "|---|---|---|---|---|"]
    for row in rows:
        t = row.target
        tolerance = f"±{t.tolerance:.0%}" if t.measure == "seconds" else f"±{t.tolerance:.2f}"
        value = "—" if row.simulated is None else _fmt(row.simulated, t.measure)
        lines.append(
            f"| {t.label} | {_fmt(t.value, t.measure)} | {value} | {tolerance} | {'yes' if row.within else 'NO'} |"
        )
    return "\n".join(lines)


def _fmt(value: float, measure: str) -> str:
    return f"{value:.0f} s" if measure == "seconds" else f"{value:.2f}"
