"""Study planning: the power machinery against the closed form, and the plan through CLI, API and page."""

import numpy as np
import pytest

from app.cli import build_parser
from app.simulation import planning
from app.simulation.cli import cmd_plan
from tests.conftest import ClientFactory
from tests.factories import make_user

SMALL = {"kind": "grade", "experts": [2, 8], "images": [3], "repetitions": 60}


@pytest.mark.parametrize(
    ("effect", "sd", "n"), [(0.5, 1.0, 8), (1.0, 1.0, 10), (0.3, 2.0, 30), (0.0, 1.0, 6)]
)
def test_simulated_power_of_the_paired_t_test_matches_the_closed_form(
    effect: float, sd: float, n: int
) -> None:
    rng = np.random.default_rng(0)
    differences = rng.normal(effect, sd, size=(20_000, n))
    rejects, _ = planning.paired_t_rejects(differences)
    expected = planning.closed_form_power(effect, sd, n)
    assert rejects.mean() == pytest.approx(expected, abs=0.015)
    if effect == 0.0:
        assert expected == pytest.approx(planning.ALPHA, abs=1e-9)


def test_more_experts_give_more_power_and_caught_rates_have_a_spread() -> None:
    rows = planning.plan("grade", [2, 10], [5], reps=80, seed=1)
    few, many = rows
    assert many.concordance_power > few.concordance_power
    assert few.concordance_gain > 0  # the paper preset: aided grading agrees better with the reference
    removed = many.caught["removed"]
    assert set(removed) == {"unaided", "aided"}
    mean, spread = removed["aided"]
    assert 0.0 <= mean <= 1.0
    assert spread > 0.0
    assert removed["aided"][0] < removed["unaided"][0]  # automation bias: removed cells stay missing


async def test_plan_api_and_page(app: object, client_for: ClientFactory) -> None:
    await make_user(app, "admin", "admin")
    admin = await client_for("admin")
    answer = await admin.post("/api/v1/plan", json=SMALL)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert [(row["experts"], row["images"]) for row in result["rows"]] == [(2, 3), (8, 3)]
    assert all(0.0 <= row["concordance_power"] <= 1.0 for row in result["rows"])
    too_big = await admin.post(
        "/api/v1/plan", json={**SMALL, "repetitions": 2000, "experts": [40], "images": [200]}
    )
    assert too_big.status_code == 422
    page = await admin.get("/admin/plan?kind=grade&experts=2,8&images=3&repetitions=60")
    assert page.status_code == 200
    assert 'id="plan-table"' in page.text
    assert "/admin/plan/figure.svg?kind=grade" in page.text
    figure = await admin.get("/admin/plan/figure.svg?kind=grade&experts=2,8&images=3&repetitions=60")
    assert figure.status_code == 200
    assert figure.headers["content-type"].startswith("image/svg+xml")
    bad = await admin.get("/admin/plan?kind=grade&experts=1&images=3")
    assert bad.status_code == 422
    assert "greater than or equal to 2" in bad.text


def test_plan_command_prints_a_table_and_refuses_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    args = build_parser().parse_args(
        ["plan", "--kind", "grade", "--experts", "2", "--images", "2", "--repetitions", "30"]
    )
    assert cmd_plan(args) == 0
    out = capsys.readouterr().out
    assert "power(concordance)" in out
    assert "grade_shifted" in out
    bad = build_parser().parse_args(["plan", "--experts", "x"])
    assert cmd_plan(bad) == 2
    assert "concord plan: give whole numbers" in capsys.readouterr().err


def test_a_population_fitted_to_a_study_reproduces_its_means() -> None:
    from dataclasses import replace

    from app.simulation import fitting
    from app.simulation.presets import PAPER

    # a "finished study" whose experts are weaker, more trusting and slower than the preset's
    truth = replace(
        PAPER["grade"],
        sensitivity=0.3,
        label_skill=3.3,
        bias_omission=(0.8, 0.85, 0.9),
        unaided_s=(40.0, 3.0, 1.0),
    )
    observed = fitting._simulate("grade", truth, seed=3)
    fitted = fitting.fit("grade", PAPER["grade"], observed, seed=0)
    for measure, mode, want, got, _, _ in fitted.quality():
        tolerance = 0.04 if measure == "concordance" else 0.1 * want
        assert got == pytest.approx(want, abs=tolerance), (measure, mode)
