"""Figure 2's plots draw the bootstrap intervals as error bars whose ends are the intervals' bounds; empty plots
say "no data"; legend colours differ; injected errors are drawn caught green and missed red."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable

import numpy as np
import pytest

from app.evaluation import plots, service
from app.evaluation.schemas import SuggestionsOut, TaskMetricsOut
from app.evaluation.service import ExpertWork, MetricsParams
from tests.evaluation.test_injected_caught import CELL, COPY, FAKE, OTHER_CELL, Box, _task, boxes

SVG = "{http://www.w3.org/2000/svg}"
PX = 1e-4  # SVG coordinates carry six decimals


def hand_made_study() -> TaskMetricsOut:
    """Four experts in two modes who differ in what they kept and how long they looked: every interval has
    width."""
    register = {"duplicate": [(COPY, 1)], "false_positive": [(FAKE, 1)], "removed": [(OTHER_CELL, 2)]}
    kept: dict[str, list[tuple[Box, int]]] = {
        "P1": [(CELL, 1), (COPY, 1), (FAKE, 1)],
        "P2": [(CELL, 1), (OTHER_CELL, 2)],
        "P3": [(CELL, 1), (FAKE, 1), (OTHER_CELL, 2)],
        "P4": [(COPY, 1), (OTHER_CELL, 1)],
    }
    task = _task(kept, register)
    task.images = np.array([0], dtype=np.int64)
    seconds = {"P1": 12.0, "P2": 30.0, "P3": 45.0, "P4": 21.0}
    task.work = {
        mode: {
            name: ExpertWork(boxes(rows), np.zeros(len(rows)), [0], {0: seconds[name] * factor})
            for name, rows in kept.items()
        }
        for mode, factor in (("unaided", 1.0), ("aided", 0.5))
    }
    return service.task_metrics(task, MetricsParams(bootstrap=400, seed=11))


def element(svg: bytes, gid: str) -> ElementTree.Element:
    found = ElementTree.fromstring(svg).find(f".//{SVG}g[@id='{gid}']")
    assert found is not None, f"no {gid} in the SVG"
    return found


def heights(svg: bytes, gid: str) -> list[float]:
    """The y pixel coordinates of the first path in the group gid."""
    path = element(svg, gid).find(f".//{SVG}path")
    assert path is not None
    numbers = [float(number) for number in re.findall(r"-?\d+(?:\.\d+)?", path.get("d", ""))]
    return numbers[1::2]


def to_value(zero_px: float, one_px: float, one_value: float) -> Callable[[float], float]:
    """Pixel y → data value on a linear axis where zero_px shows 0 and one_px shows one_value."""
    return lambda y: (zero_px - y) / (zero_px - one_px) * one_value


@pytest.mark.parametrize(
    ("plot", "measure"), [("concordance", "concordance"), ("seconds", "seconds_per_image")]
)
def test_each_mode_mean_carries_its_bootstrap_interval(plot: str, measure: str) -> None:
    task = hand_made_study()
    assert task.uncertainty is not None
    svg = plots.render(task, plot, "svg")

    for mode in ("unaided", "aided"):
        mean = getattr(task.modes[mode].summary, measure).mean
        bar = heights(svg, f"bar-{plot}-{mode}-mean")
        value = to_value(max(bar), min(bar), mean)
        interval = task.uncertainty.measures[measure][mode]
        assert interval.low is not None
        assert interval.high is not None
        assert interval.low < interval.high
        ends = sorted(value(y) for y in heights(svg, f"ci-{plot}-{mode}-mean"))
        assert ends == pytest.approx([interval.low, interval.high], abs=PX * max(mean, 1.0))


def test_each_kind_caught_share_carries_the_interval_of_its_caught_rate() -> None:
    task = hand_made_study()
    assert task.uncertainty is not None
    svg = plots.render(task, "injected", "svg")

    for kind in ("duplicate", "false_positive", "removed"):
        for mode in ("unaided", "aided"):
            caught = heights(svg, f"bar-injected-{mode}-{kind}-all-caught")
            missed = heights(svg, f"bar-injected-{mode}-{kind}-all-missed")
            value = to_value(max(caught), min(missed), 1.0)  # the stack runs from 0 to 1
            pooled = task.injected_errors[kind]["all"][mode].pooled
            assert value(min(caught)) == pytest.approx(pooled.caught_rate, abs=PX)
            interval = task.uncertainty.measures[f"caught_rate.{kind}"][mode]
            ends = sorted(value(y) for y in heights(svg, f"ci-injected-{mode}-{kind}"))
            assert ends == pytest.approx([interval.low, interval.high], abs=PX)
    assert (
        'id="ci-'
        in plots.render(task, "injected", "svg", intervals=plots.intervals_of(task.uncertainty)).decode()
    )
    assert 'id="ci-' not in plots.render(task, "injected", "svg", intervals={}).decode()


def test_caught_and_missed_are_drawn_in_their_colours_and_legend_colours_differ() -> None:
    task = hand_made_study()
    svg = plots.render(task, "injected", "svg")

    assert plots.CAUGHT_COLOUR in element(svg, "bar-injected-aided-removed-all-caught")[0].get("style", "")
    assert plots.MISSED_COLOUR in element(svg, "bar-injected-aided-removed-all-missed")[0].get("style", "")
    colours = [
        *plots.MODE_COLOURS.values(),
        plots.CAUGHT_COLOUR,
        plots.MISSED_COLOUR,
        plots.SUGGESTIONS_COLOUR,
        plots.INTERVAL_COLOUR,
    ]
    assert len({colour.lower() for colour in colours}) == len(colours)


def test_plots_without_values_say_no_data() -> None:
    empty = TaskMetricsOut(
        modes={},
        suggestions=SuggestionsOut(suggestion_set_id=None, concordance=None),
        injected_errors={},
        statistics={},
    )
    for plot in plots.PLOTS:
        svg = plots.render(empty, plot, "svg").decode()
        assert "no data" in svg
        assert "-0.04" not in svg
        assert 'id="bar-' not in svg


def test_a_plot_of_zeros_keeps_its_axis_at_zero_and_above() -> None:
    task = _task({"P1": [(CELL, 1)], "P2": [(CELL, 1)]}, {})
    task.images = np.array([0], dtype=np.int64)
    for work in task.work["aided"].values():
        work.images_seen = [0]  # seen, but no edit: 0 s per image
    metrics = service.task_metrics(task, MetricsParams(bootstrap=50))
    assert {result.seconds_per_image for result in metrics.modes["aided"].experts.values()} == {0.0}

    ticks = re.findall(r"<!-- (.*?) -->", plots.render(metrics, "seconds", "svg").decode())

    assert "0.0" in ticks
    assert "1.0" in ticks
    assert not any(tick.startswith(("−", "-")) for tick in ticks)
