"""The paper preset meets the paper's findings within the stated tolerances on a reduced study."""

import pytest

from app.simulation.calibration import calibrate, markdown

pytestmark = pytest.mark.slow


def test_paper_preset_meets_the_published_findings_on_a_reduced_study() -> None:
    # reduced: 6 experts × 3 populations instead of the README's 10 × 4
    rows = calibrate("paper", experts=6, seed=0, populations=3)
    assert len(rows) >= 30
    missed = [row for row in rows if not row.within]
    assert not missed, markdown(missed)
