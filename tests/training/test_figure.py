"""The Figure 2 right panel: runs summarised per set, mode and loss (mean, min–max), drawn as SVG."""

from typing import Any

import pytest

from app.models import TrainingRun
from app.training.plots import render, summarise


def run(mode: str, loss: str, set_name: str, accuracy: float | None, **extra: Any) -> TrainingRun:
    return TrainingRun(mode=mode, loss=loss, set_name=set_name, best_val_accuracy=accuracy, **extra)


def test_summary_gives_mean_and_range_per_set_with_single_expert_sets_first() -> None:
    runs = [
        run("unaided", "votes", "first:10", 0.9),
        run("unaided", "votes", "first:2", 0.8),
        run("unaided", "votes", "first:2", 0.9),
        run("unaided", "bce", "P2", 0.7),
        run("unaided", "bce", "P10", 0.75),
        run("aided", "bce", "P2", None),
    ]
    rows = summarise(runs)
    assert [(row.set_name, row.loss) for row in rows] == [
        ("P2", "bce"),
        ("P10", "bce"),
        ("first:2", "votes"),
        ("first:10", "votes"),
    ]
    two = rows[2]
    assert two.mean == pytest.approx(0.85)
    assert (two.low, two.high, two.runs) == (0.8, 0.9, 2)


def test_the_figure_is_an_svg_with_one_series_per_mode_and_loss() -> None:
    runs = [run("unaided", "bce", "first:2", 0.8), run("aided", "votes", "first:2", 0.9)]
    svg = render(runs).decode()
    assert svg.lstrip().startswith("<?xml")
    assert "<svg" in svg
    assert "unaided, BCE" in svg
    assert "aided, VotesLoss" in svg
    assert "2 experts" in svg
    assert "no training runs yet" in render([]).decode()
