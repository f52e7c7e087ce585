"""Bootstrap intervals of injected errors are for the caught rate by the per-kind rules, not for `matched`."""

from __future__ import annotations

import numpy as np
import pytest

from app.evaluation import service
from app.evaluation.service import MetricsParams
from tests.evaluation.test_injected_caught import CELL, COPY, FAKE, OTHER_CELL, _task


def test_intervals_of_injected_errors_follow_caught_where_matched_says_the_opposite() -> None:
    register = {"duplicate": [(COPY, 1)], "false_positive": [(FAKE, 1)], "removed": [(OTHER_CELL, 2)]}
    task = _task(
        {
            # every expert keeps the fake and both cells of the duplicated pair: matched, but missed
            "P1": [(CELL, 1), (COPY, 1), (FAKE, 1)],
            "P2": [(CELL, 1), (COPY, 1), (FAKE, 1), (OTHER_CELL, 2)],
            "P3": [(CELL, 1), (COPY, 1), (FAKE, 1), (OTHER_CELL, 2)],
        },
        register,
    )
    task.images = np.array([0], dtype=np.int64)

    result = service.task_metrics(task, MetricsParams(bootstrap=300, seed=5))

    assert result.uncertainty is not None
    measures = result.uncertainty.measures
    assert not any(measure.startswith("matched") for measure in measures)
    for kind in ("duplicate", "false_positive"):
        pooled = result.injected_errors[kind]["all"]["aided"].pooled
        assert (pooled.caught_rate, pooled.rate) == (0.0, 1.0)  # caught never, matched always
        interval = measures[f"caught_rate.{kind}"]["aided"]
        assert (interval.estimate, interval.low, interval.high) == (0.0, 0.0, 0.0)
    # two of three experts redrew the removed cell: the estimate is the pooled caught rate, bracketed
    removed = result.injected_errors["removed"]["all"]["aided"].pooled
    interval = measures["caught_rate.removed"]["aided"]
    assert interval.estimate == pytest.approx(removed.caught_rate) == pytest.approx(2 / 3)
    assert interval.low is not None
    assert interval.high is not None
    assert interval.low <= 2 / 3 <= interval.high
    assert (interval.low, interval.high) != (2 / 3, 2 / 3)
