"""The paper's Figure 2 as plots of one task: seconds per image, concordance, injected errors caught or missed.

matplotlib (Agg) is imported inside the functions, so that importing this module costs nothing. Every colour
of a legend differs from every other one on the dashboard: modes blue and orange, caught green, missed red,
the all-suggestions-accepted line purple, 95 % intervals black. A plot without values says "no data" instead
of drawing empty axes.

Bootstrap intervals (`TaskMetricsOut.uncertainty`, or given as `intervals`) are drawn as error bars whose
ends are the interval's bounds: on the per-mode mean bar of the seconds and concordance plots, and on the
caught share of each kind (all groups) of the injected-error plot. Bars and error bars carry SVG ids
(`bar-…`, `ci-…`) so that a reader of the SVG can find them.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Mapping
from typing import Any

from app.errors import NotFound
from app.evaluation.schemas import IntervalOut, PooledOut, TaskMetricsOut, UncertaintyOut

PLOTS = ("seconds", "concordance", "injected")
MODE_COLOURS = {"unaided": "#4363d8", "aided": "#f58231"}
OTHER_MODE_COLOUR = "#808080"
CAUGHT_COLOUR = "#2e8b57"
MISSED_COLOUR = "#d62728"
SUGGESTIONS_COLOUR = "#911eb4"
INTERVAL_COLOUR = "#000000"
INTERVAL_LABEL = "95 % CI"
MEAN = "mean"  # the column of a mode's mean over its experts, where the bootstrap interval sits
ALL_GROUPS = "all"
CAUGHT_RATE = "caught_rate."
MEASURES = {"seconds": "seconds_per_image", "concordance": "concordance"}
BAR_WIDTH = 0.4

# plot → mode → column (an expert, MEAN, or an error kind on the injected plot) → (low, high)
ErrorBars = Mapping[str, Mapping[str, tuple[float, float]]]


def render(
    task: TaskMetricsOut, plot: str, fmt: str, intervals: Mapping[str, ErrorBars] | None = None
) -> bytes:
    """One plot of the task as SVG or PNG bytes; intervals: plot → error bars (default: the task's
    bootstrap intervals, none when it has none)."""
    if plot not in PLOTS:
        raise NotFound(f"no plot {plot!r}; plots: {', '.join(PLOTS)}")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.5, 3.6), layout="constrained")
    axes = figure.add_subplot()
    bars = (intervals_of(task.uncertainty) if intervals is None else intervals).get(plot, {})
    if plot == "seconds":
        _per_expert(axes, task, plot, "seconds per image", bars)
    elif plot == "concordance":
        _concordance(axes, task, bars)
    else:
        _injected(axes, task, bars)
    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "concord"}):
        figure.savefig(buffer, format=fmt, dpi=110)
    return buffer.getvalue()


def render_all_svg(task: TaskMetricsOut, intervals: Mapping[str, ErrorBars] | None = None) -> dict[str, str]:
    """Every plot of the task as a data: URI of its SVG, so that a page draws them from one computation."""
    return {
        plot: "data:image/svg+xml;base64," + base64.b64encode(render(task, plot, "svg", intervals)).decode()
        for plot in PLOTS
    }


def intervals_of(uncertainty: UncertaintyOut | None) -> dict[str, ErrorBars]:
    """Error bars of each plot from a task's bootstrap intervals: the mean of each mode on the seconds and
    concordance plots, each kind's pooled caught rate on the injected plot. Unknown bounds are left out."""
    if uncertainty is None:
        return {}
    measures = uncertainty.measures
    result: dict[str, ErrorBars] = {
        plot: {
            mode: {MEAN: bounds}
            for mode, interval in measures.get(measure, {}).items()
            if (bounds := _bounds(interval))
        }
        for plot, measure in MEASURES.items()
    }
    injected: dict[str, dict[str, tuple[float, float]]] = {}
    for measure, modes in measures.items():
        if measure.startswith(CAUGHT_RATE):
            for mode, interval in modes.items():
                if bounds := _bounds(interval):
                    injected.setdefault(mode, {})[measure.removeprefix(CAUGHT_RATE)] = bounds
    result["injected"] = injected
    return result


def _bounds(interval: IntervalOut) -> tuple[float, float] | None:
    if interval.low is None or interval.high is None:
        return None
    return interval.low, interval.high


def _concordance(axes: Any, task: TaskMetricsOut, bars: ErrorBars) -> None:
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


def _per_expert(axes: Any, task: TaskMetricsOut, plot: str, title: str, bars: ErrorBars) -> bool:
    """Bars per expert and mode, then each mode's mean over its experts with its interval; False (and
    "no data") when no expert has a value."""
    field = MEASURES[plot]
    experts = list(dict.fromkeys(name for mode in task.modes.values() for name in mode.experts))
    values = {
        mode: [
            *(getattr(result.experts[name], field) if name in result.experts else None for name in experts),
            getattr(result.summary, field).mean,
        ]
        for mode, result in task.modes.items()
    }
    if all(value is None for column in values.values() for value in column):
        _no_data(axes, title)
        return False
    columns = [*experts, MEAN]
    positions = [*range(len(experts)), len(experts) + 0.5]  # the mean a little apart
    intervals = []
    for offset, (mode, column) in enumerate(values.items()):
        shifted = [position + (offset - 0.5) * BAR_WIDTH for position in positions]
        drawn = axes.bar(
            shifted,
            [value or 0.0 for value in column],
            width=BAR_WIDTH,
            color=MODE_COLOURS.get(mode, OTHER_MODE_COLOUR),
            label=mode,
        )
        for patch, name, position in zip(drawn.patches, columns, shifted, strict=True):
            patch.set_gid(_gid("bar", plot, mode, name))
            if name in bars.get(mode, {}):
                intervals.append((position, bars[mode][name], _gid("ci", plot, mode, name)))
    for position, bounds, gid in intervals:
        _interval(axes, position, bounds, gid)
    highest = max(
        [value or 0.0 for column in values.values() for value in column]
        + [high for _, (_, high), _ in intervals]
    )
    axes.set_ylim(0, None if highest > 0 else 1)  # seconds and concordance are never negative
    axes.set_xticks(
        positions, [*(_short(name) for name in experts), "mean"], rotation=45, ha="right", fontsize=8
    )
    axes.set_ylabel(title)
    _legend_above(axes)
    return True


def _interval(axes: Any, position: float, bounds: tuple[float, float], gid: str) -> None:
    """An error bar from low to high (its ends are the bounds, wherever the bar ends)."""
    low, high = bounds
    half = (high - low) / 2.0
    labelled = INTERVAL_LABEL in axes.get_legend_handles_labels()[1]
    drawn = axes.errorbar(
        [position],
        [low + half],
        yerr=[[half], [half]],
        fmt="none",
        ecolor=INTERVAL_COLOUR,
        elinewidth=1.2,
        capsize=4,
        label="_nolegend_" if labelled else INTERVAL_LABEL,
    )
    drawn.lines[2][0].set_gid(gid)


def _injected(axes: Any, task: TaskMetricsOut, bars: ErrorBars) -> None:
    """Shares of register entries (× experts) caught and missed, pooled over experts, per kind, group and mode,
    caught and missed by the per-kind rules, in the same colours for every kind; the count caught/total
    above each bar and the bootstrap interval of each kind's caught rate on its bar of all groups."""
    rows = [
        (kind, group, mode, result.pooled)
        for kind, groups in task.injected_errors.items()
        for group, modes in groups.items()
        if group == ALL_GROUPS or len(groups) > 2  # one group: its bar would repeat the bar of all
        for mode, result in modes.items()
        if result.pooled.total
    ]
    if not rows:
        _no_data(axes, "share of register entries × experts")
        return
    positions = list(range(len(rows)))
    shares = [pooled.caught / pooled.total for *_, pooled in rows]
    caught = axes.bar(positions, shares, color=CAUGHT_COLOUR, label="caught")
    missed = axes.bar(
        positions, [1.0 - share for share in shares], bottom=shares, color=MISSED_COLOUR, label="missed"
    )
    for position, (kind, group, mode, pooled) in enumerate(rows):
        caught.patches[position].set_gid(_gid("bar", "injected", mode, kind, group, "caught"))
        missed.patches[position].set_gid(_gid("bar", "injected", mode, kind, group, "missed"))
        axes.text(position, 1.01, _count(pooled), ha="center", va="bottom", fontsize=6)
        if group == ALL_GROUPS and kind in bars.get(mode, {}):
            _interval(axes, position, bars[mode][kind], _gid("ci", "injected", mode, kind))
    axes.set_xticks(
        positions, [_injected_label(kind, group, mode) for kind, group, mode, _ in rows], fontsize=7
    )
    axes.set_ylim(0, 1.12)
    axes.set_ylabel("share of register entries × experts")
    _legend_above(axes)


def _injected_label(kind: str, group: str, mode: str) -> str:
    name = kind.replace("_", " ")
    return f"{name}\n{mode}" if group == ALL_GROUPS else f"{name}\ngroup {group}\n{mode}"


def _count(pooled: PooledOut) -> str:
    return f"{pooled.caught}/{pooled.total}"


def _no_data(axes: Any, title: str) -> None:
    axes.set_axis_off()
    axes.text(0.5, 0.5, f"{title}: no data", ha="center", va="center", fontsize=12, color="#555555")


def _legend_above(axes: Any) -> None:
    """Above the plot, where it covers no bar."""
    axes.legend(fontsize=8, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=4, frameon=False)


def _short(name: str) -> str:
    return name.replace("Participant_", "P")


def _gid(*parts: str) -> str:
    """An SVG id from names that may hold any character."""
    return "-".join(re.sub(r"[^A-Za-z0-9_.]", "_", part) for part in parts)
