"""The paper's Figure 2 as plots of one task: seconds per image, concordance, injected errors caught or missed.

matplotlib (Agg) is imported inside the functions, so that importing this module costs nothing. Every colour
of a legend differs from every other one on the dashboard: modes blue and orange, caught green, missed red,
the all-suggestions-accepted line purple. A plot without values says "no data" instead of drawing empty axes.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from typing import Any

from app.errors import NotFound
from app.evaluation.schemas import TaskMetricsOut

PLOTS = ("seconds", "concordance", "injected")
MODE_COLOURS = {"unaided": "#4363d8", "aided": "#f58231"}
OTHER_MODE_COLOUR = "#808080"
CAUGHT_COLOUR = "#2e8b57"
MISSED_COLOUR = "#d62728"
SUGGESTIONS_COLOUR = "#911eb4"

# Hook for confidence intervals: mode → expert → (low, high), drawn as error bars on the per-expert plots.
ErrorBars = Mapping[str, Mapping[str, tuple[float, float]]]


def render(
    task: TaskMetricsOut, plot: str, fmt: str, intervals: Mapping[str, ErrorBars] | None = None
) -> bytes:
    """One plot of the task as SVG or PNG bytes; intervals: plot → error bars (none drawn when absent)."""
    if plot not in PLOTS:
        raise NotFound(f"no plot {plot!r}; plots: {', '.join(PLOTS)}")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 3.6), layout="constrained")
    axes = figure.add_subplot()
    bars = (intervals or {}).get(plot)
    if plot == "seconds":
        _per_expert(axes, task, "seconds_per_image", "seconds per image", bars)
    elif plot == "concordance":
        _concordance(axes, task, bars)
    else:
        _injected(axes, task)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, dpi=110)
    return buffer.getvalue()


def render_all_svg(task: TaskMetricsOut, intervals: Mapping[str, ErrorBars] | None = None) -> dict[str, str]:
    """Every plot of the task as a data: URI of its SVG, so that a page draws them from one computation."""
    return {
        plot: "data:image/svg+xml;base64," + base64.b64encode(render(task, plot, "svg", intervals)).decode()
        for plot in PLOTS
    }


def _concordance(axes: Any, task: TaskMetricsOut, bars: ErrorBars | None) -> None:
    if not _per_expert(axes, task, "concordance", "concordance (mAP)", bars):
        return
    accepted = task.suggestions.concordance
    if accepted is not None:
        axes.axhline(
            accepted,
            color=SUGGESTIONS_COLOUR,
            linestyle="--",
            label=f"all suggestions accepted ({accepted:.3f})",
        )
    axes.set_ylim(0, 1)
    _legend_above(axes)


def _per_expert(axes: Any, task: TaskMetricsOut, field: str, title: str, bars: ErrorBars | None) -> bool:
    """Bars per expert and mode; False (and "no data") when no expert has a value."""
    experts = list(dict.fromkeys(name for mode in task.modes.values() for name in mode.experts))
    values = {
        mode: [getattr(result.experts[name], field) if name in result.experts else None for name in experts]
        for mode, result in task.modes.items()
    }
    if all(value is None for column in values.values() for value in column):
        _no_data(axes, title)
        return False
    width = 0.4
    for offset, (mode, column) in enumerate(values.items()):
        positions = [index + (offset - 0.5) * width for index in range(len(experts))]
        axes.bar(
            positions,
            [value or 0.0 for value in column],
            width=width,
            color=MODE_COLOURS.get(mode, OTHER_MODE_COLOUR),
            label=mode,
            yerr=_error_bars(bars, mode, experts, column),
        )
    axes.set_xticks(
        range(len(experts)), [_short(name) for name in experts], rotation=45, ha="right", fontsize=8
    )
    axes.set_ylabel(title)
    _legend_above(axes)
    return True


def _error_bars(
    bars: ErrorBars | None, mode: str, experts: list[str], values: list[float | None]
) -> list[list[float]] | None:
    """matplotlib's yerr (2, N): distances below and above each bar; None when no interval is known."""
    known = (bars or {}).get(mode)
    if not known:
        return None
    below, above = [], []
    for name, value in zip(experts, values, strict=True):
        low, high = known.get(name, (value or 0.0, value or 0.0))
        below.append(max((value or 0.0) - low, 0.0))
        above.append(max(high - (value or 0.0), 0.0))
    return [below, above]


def _injected(axes: Any, task: TaskMetricsOut) -> None:
    """Stacked caught and missed register entries (× experts), pooled over experts, per kind, group and mode;
    caught and missed by the per-kind rules, in the same colours for every kind."""
    bars = [
        (f"{kind}\n{group}\n{mode}", result.pooled.caught, result.pooled.missed)
        for kind, groups in task.injected_errors.items()
        for group, modes in groups.items()
        for mode, result in modes.items()
    ]
    if not bars:
        _no_data(axes, "register entries × experts")
        return
    positions = range(len(bars))
    axes.bar(positions, [bar[1] for bar in bars], color=CAUGHT_COLOUR, label="caught")
    axes.bar(
        positions,
        [bar[2] for bar in bars],
        bottom=[bar[1] for bar in bars],
        color=MISSED_COLOUR,
        label="missed",
    )
    axes.set_xticks(list(positions), [bar[0] for bar in bars], fontsize=7)
    axes.set_ylabel("register entries × experts")
    _legend_above(axes)


def _no_data(axes: Any, title: str) -> None:
    axes.set_axis_off()
    axes.text(0.5, 0.5, f"{title}: no data", ha="center", va="center", fontsize=12, color="#555555")


def _legend_above(axes: Any) -> None:
    """Above the plot, where it covers no bar."""
    axes.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=3, frameon=False)


def _short(name: str) -> str:
    return name.replace("Participant_", "P")
