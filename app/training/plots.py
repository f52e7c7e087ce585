"""The paper's Figure 2, right panel: validation accuracy per training set, BCE vs VotesLoss, unaided vs aided.

matplotlib (Agg) is imported inside the function, so that importing this module costs nothing.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from app.models import TrainingRun
from app.training.service import natural_key

SERIES_STYLE = {
    ("unaided", "bce"): ("#4363d8", "o"),
    ("unaided", "votes"): ("#4363d8", "s"),
    ("aided", "bce"): ("#f58231", "o"),
    ("aided", "votes"): ("#f58231", "s"),
}


@dataclass(frozen=True)
class SetSummary:
    """Best validation accuracies of one set × mode × loss over its repeats: mean, min, max, count."""

    mode: str
    loss: str
    set_name: str
    mean: float
    low: float
    high: float
    runs: int


def summarise(runs: Sequence[TrainingRun]) -> list[SetSummary]:
    """One row per (mode, loss, set) of the runs with a best accuracy; single-expert sets first, then first:K."""
    groups: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for run in runs:
        if run.best_val_accuracy is not None:
            groups[(run.mode, run.loss, run.set_name)].append(run.best_val_accuracy)
    rows = [
        SetSummary(mode, loss, name, sum(values) / len(values), min(values), max(values), len(values))
        for (mode, loss, name), values in groups.items()
    ]
    return sorted(rows, key=lambda row: (_set_order(row.set_name), row.mode, row.loss))


def _set_order(name: str) -> tuple[int, list[object]]:
    return (1, natural_key(name)) if name.startswith("first:") else (0, natural_key(name))


def _label(name: str) -> str:
    return f"{name.removeprefix('first:')} experts" if name.startswith("first:") else name


def render(runs: Sequence[TrainingRun], fmt: str = "svg") -> bytes:
    """Mean best validation accuracy per set (markers) with the min–max over repeats (bars), as SVG or PNG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    rows = summarise(runs)
    sets = list(dict.fromkeys(row.set_name for row in rows))
    figure = Figure(figsize=(max(6.0, 0.45 * len(sets) + 2.5), 3.8), layout="constrained")
    axes = figure.add_subplot()
    series = list(dict.fromkeys((row.mode, row.loss) for row in rows))
    for offset, key in enumerate(series):
        chosen = [row for row in rows if (row.mode, row.loss) == key]
        shift = (offset - (len(series) - 1) / 2) * 0.15
        x = [sets.index(row.set_name) + shift for row in chosen]
        means = [row.mean for row in chosen]
        spread = [[row.mean - row.low for row in chosen], [row.high - row.mean for row in chosen]]
        colour, marker = SERIES_STYLE.get(key, ("#808080", "^"))
        loss_name = "VotesLoss" if key[1] == "votes" else "BCE"
        axes.errorbar(
            x, means, yerr=spread, fmt=marker, color=colour, label=f"{key[0]}, {loss_name}", capsize=2
        )
    axes.set_xticks(range(len(sets)), [_label(name) for name in sets], rotation=60, ha="right", fontsize=8)
    axes.set_ylabel("best validation accuracy")
    axes.set_ylim(0, 1)
    if not rows:
        axes.text(0.5, 0.5, "no training runs yet", ha="center", va="center", transform=axes.transAxes)
    else:
        axes.legend(loc="lower right", fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, dpi=110)
    return buffer.getvalue()


def render_curves(history: Sequence[dict[str, float | int | str]]) -> bytes:
    """One run's train and validation loss (left axis) and validation accuracy (right axis) per epoch, SVG."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.2, 2.6), layout="constrained")
    axes = figure.add_subplot()
    epochs = [int(record["epoch"]) for record in history]
    axes.plot(
        epochs, [float(record["train_loss"]) for record in history], "o-", color="#4363d8", label="train loss"
    )
    axes.plot(
        epochs, [float(record["val_loss"]) for record in history], "s--", color="#911eb4", label="val loss"
    )
    axes.set_xlabel("epoch")
    axes.set_ylabel("loss")
    accuracy = axes.twinx()
    accuracy.plot(
        epochs,
        [float(record["val_accuracy"]) for record in history],
        "^-",
        color="#3cb44b",
        label="val accuracy",
    )
    accuracy.set_ylim(0, 1)
    accuracy.set_ylabel("val accuracy")
    handles = axes.get_legend_handles_labels()[0] + accuracy.get_legend_handles_labels()[0]
    axes.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 1.3), ncols=3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="svg")
    return buffer.getvalue()
