"""The paper's Figure 2 as plots of one task: seconds per image, concordance, injected errors caught or missed.

matplotlib (Agg) is imported inside the functions, so that importing this module costs nothing.
"""

from __future__ import annotations

import io
from typing import Any

from app.errors import NotFound
from app.evaluation.schemas import TaskMetricsOut

PLOTS = ("seconds", "concordance", "injected")
MODE_COLOURS = {"unaided": "#4363d8", "aided": "#f58231"}


def render(task: TaskMetricsOut, plot: str, fmt: str) -> bytes:
    """One plot of the task as SVG or PNG bytes."""
    if plot not in PLOTS:
        raise NotFound(f"no plot {plot!r}; plots: {', '.join(PLOTS)}")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 3.6), layout="constrained")
    axes = figure.add_subplot()
    if plot == "seconds":
        _per_expert(axes, task, "seconds_per_image", "seconds per image")
    elif plot == "concordance":
        _per_expert(axes, task, "concordance", "concordance (mAP)")
        accepted = task.suggestions.concordance
        if accepted is not None:
            axes.axhline(
                accepted, color="#3cb44b", linestyle="--", label=f"all suggestions accepted ({accepted:.3f})"
            )
        axes.set_ylim(0, 1)
        _legend_above(axes)
    else:
        _injected(axes, task)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, dpi=110)
    return buffer.getvalue()


def _per_expert(axes: Any, task: TaskMetricsOut, field: str, title: str) -> None:
    experts = list(dict.fromkeys(name for mode in task.modes.values() for name in mode.experts))
    width = 0.4
    for offset, (mode, result) in enumerate(task.modes.items()):
        values = [
            getattr(result.experts[name], field) if name in result.experts else None for name in experts
        ]
        positions = [index + (offset - 0.5) * width for index in range(len(experts))]
        axes.bar(
            positions,
            [value or 0.0 for value in values],
            width=width,
            color=MODE_COLOURS.get(mode, "#999999"),
            label=mode,
        )
    axes.set_xticks(
        range(len(experts)), [_short(name) for name in experts], rotation=45, ha="right", fontsize=8
    )
    axes.set_ylabel(title)
    _legend_above(axes)


def _injected(axes: Any, task: TaskMetricsOut) -> None:
    """Stacked caught (kept correct) and missed counts, pooled over experts, per kind, group and mode."""
    bars = [
        (f"{kind}\n{group}\n{mode}", result.pooled.matched, result.pooled.total - result.pooled.matched)
        for kind, groups in task.injected_errors.items()
        for group, modes in groups.items()
        for mode, result in modes.items()
    ]
    positions = range(len(bars))
    axes.bar(positions, [bar[1] for bar in bars], color="#3cb44b", label="matched (found with its label)")
    axes.bar(
        positions,
        [bar[2] for bar in bars],
        bottom=[bar[1] for bar in bars],
        color="#e6194b",
        label="not matched",
    )
    axes.set_xticks(list(positions), [bar[0] for bar in bars], fontsize=7)
    axes.set_ylabel("register entries × experts")
    _legend_above(axes)


def _legend_above(axes: Any) -> None:
    """Above the plot, where it covers no bar."""
    axes.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=3, frameon=False)


def _short(name: str) -> str:
    return name.replace("Participant_", "P")
