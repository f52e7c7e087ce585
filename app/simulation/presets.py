"""Simulated-expert populations per task kind, and the paper's findings they are calibrated to.

`PAPER_TARGETS` are the Results of Marzahl et al. 2020 (`paper.txt`): mean concordance and seconds per
image per mode, and the share of injected errors the experts' final objects match (the published `matched`
form: for removed cells and relabelled cells the expert has the cell with its true label; for fakes the
expert kept or drew the fake box). Detect groups follow the injection protocol's numbering: removed
0 hard, 1 medium, 2 easy; fakes 0 easy, 1 medium, 2 hard.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from app.simulation.model import ExpertParams

PAPER: dict[str, ExpertParams] = {
    "classify": ExpertParams(
        sensitivity=2.6,
        difficulty_slope=1.5,
        label_skill=2.4,
        label_difficulty_slope=1.5,
        confusion_decay=3.0,
        lookalike_logit=-4.0,
        lookalike_slope=2.0,
        skill_sd=0.5,
        jitter=0.06,
        bias_wrong_label=(0.08, 0.1, 0.15),
        bias_duplicate=(0.3, 0.35, 0.4),
        bias_fake=(0.3, 0.35, 0.4),
        bias_omission=(0.05, 0.08, 0.12),
        bias_sd=0.3,
        duplicate_delete_both=0.3,
        reject_correct=0.05,
        move_share=0.05,
        unaided_s=(34.0, 2.6, 1.3),
        aided_s=(4.0, 0.25, 1.5),
        speed_sd=0.3,
        time_noise=0.25,
    ),
    "grade": ExpertParams(
        sensitivity=0.6,
        difficulty_slope=1.0,
        label_skill=4.0,
        label_difficulty_slope=4.0,
        confusion_decay=0.6,
        lookalike_logit=-4.0,
        lookalike_slope=2.0,
        skill_sd=0.4,
        jitter=0.08,
        bias_wrong_label=(0.05, 0.05, 0.08),
        bias_duplicate=(0.4, 0.45, 0.5),
        bias_fake=(0.4, 0.45, 0.5),
        bias_omission=(0.6, 0.65, 0.7),
        bias_sd=0.3,
        duplicate_delete_both=0.3,
        reject_correct=0.4,
        move_share=0.3,
        unaided_s=(32.0, 2.0, 0.5),
        aided_s=(24.0, 1.4, 1.5),
        speed_sd=0.35,
        time_noise=0.25,
        class_offsets=(-2.0, 0.5, 0.5, 0.5, 0.5),  # grade 0 macrophages are often passed over
    ),
    "detect": ExpertParams(
        sensitivity=1.4,
        difficulty_slope=3.0,
        label_skill=10.0,
        label_difficulty_slope=0.0,
        confusion_decay=1.0,
        lookalike_logit=-2.0,
        lookalike_slope=1.2,
        skill_sd=0.5,
        jitter=0.05,
        bias_wrong_label=(0.0, 0.0, 0.0),
        bias_duplicate=(0.3, 0.3, 0.3),
        bias_fake=(0.66, 0.72, 0.78),
        bias_omission=(0.35, 0.38, 0.4),
        bias_sd=0.2,
        duplicate_delete_both=0.0,
        reject_correct=0.4,
        move_share=0.02,
        unaided_s=(240.0, 2.0, 5.0),
        aided_s=(78.0, 1.3, 3.5),
        speed_sd=0.4,
        time_noise=0.25,
    ),
}

PRESETS: dict[str, dict[str, ExpertParams]] = {"paper": PAPER}


def preset(name: str) -> dict[str, ExpertParams]:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]


def with_overrides(params: ExpertParams, overrides: dict[str, Any]) -> ExpertParams:
    return replace(params, **overrides)


@dataclass(frozen=True)
class Target:
    """One published figure, what the calibration compares it with, and how close it must come."""

    task: str
    measure: str  # concordance | seconds | matched
    mode: str
    value: float
    tolerance: float  # absolute for concordance and matched rates, relative for seconds
    kind: str = ""
    group: str = "all"

    @property
    def label(self) -> str:
        what = f"{self.measure} {self.kind} group {self.group}" if self.kind else self.measure
        return f"{self.task} {self.mode} {what}".replace(" group all", "")


def _matched(
    task: str,
    kind: str,
    rates: dict[str, tuple[float, ...]],
    groups: tuple[str, ...],
    tolerance: float = 0.15,
) -> list[Target]:
    return [
        Target(task, "matched", mode, value, tolerance, kind, group)
        for mode, values in rates.items()
        for group, value in zip(groups, values, strict=True)
    ]


# The protocol injects only 5 removed cells per classify or grade expert and 2–3 errors per detect group
# and expert: a share of so few entries varies by about ±0.2 between studies, the paper's included.
FEW = 0.2

PAPER_TARGETS: tuple[Target, ...] = (
    Target("classify", "concordance", "unaided", 0.73, 0.06),
    Target("classify", "concordance", "aided", 0.84, 0.06),
    Target("classify", "seconds", "unaided", 106, 0.25),
    Target("classify", "seconds", "aided", 15, 0.25),
    *_matched("classify", "class_changed", {"unaided": (0.86,), "aided": (0.78,)}, ("all",)),
    *_matched("classify", "removed", {"unaided": (0.84,), "aided": (0.78,)}, ("all",), FEW),
    Target("grade", "concordance", "unaided", 0.47, 0.06),
    Target("grade", "concordance", "aided", 0.59, 0.06),
    Target("grade", "seconds", "unaided", 51, 0.25),
    Target("grade", "seconds", "aided", 45, 0.25),
    *_matched("grade", "grade_shifted", {"unaided": (0.59,), "aided": (0.57,)}, ("all",)),
    *_matched("grade", "removed", {"unaided": (0.28,), "aided": (0.10,)}, ("all",), FEW),
    Target("detect", "concordance", "unaided", 0.43, 0.06),
    Target("detect", "concordance", "aided", 0.70, 0.06),
    Target("detect", "seconds", "unaided", 338, 0.25),
    Target("detect", "seconds", "aided", 111, 0.25),
    *_matched(
        "detect",
        "removed",
        {"unaided": (0.26, 0.43, 0.66), "aided": (0.18, 0.26, 0.41)},
        ("0", "1", "2"),
        FEW,
    ),
    *_matched(
        "detect",
        "false_positive",
        {"unaided": (0.14, 0.17, 0.26), "aided": (0.71, 0.77, 0.84)},
        ("0", "1", "2"),
        FEW,
    ),
)
