"""The evaluation dashboard: admin page, HTMX results block, plots as PNG and SVG."""

from __future__ import annotations

from typing import Any

from app.evaluation import plots
from app.evaluation.importer import ImportRequest
from app.evaluation.schemas import SuggestionsOut, TaskMetricsOut
from app.models import TrainingRun
from tests.conftest import ClientFactory
from tests.evaluation.test_exports import MORE
from tests.evaluation.test_import import GT_FILE, _import
from tests.factories import make_user


async def test_dashboard_page_block_and_plots(app: Any, client_for: ClientFactory) -> None:
    await make_user(app, "admin", "admin")
    report = await _import(app, ImportRequest("S", "T", "classify", "ground-truth"), GT_FILE)
    await _import(app, ImportRequest("S", "T", "classify", "expert", mode="unaided"), MORE)
    admin = await client_for("admin")
    page = f"/studies/{report.study_id}/evaluation"

    full = await admin.get(page)
    assert full.status_code == 200
    assert "<html" in full.text.lower()
    assert "Concordance" not in full.text[:50]
    # The page itself computes nothing: a placeholder loads the results block.
    assert 'hx-trigger="load"' in full.text
    assert "Computing the evaluation" in full.text
    assert "data:image/svg+xml" not in full.text
    block = await admin.get(page, params={"iou": 0.5}, headers={"HX-Request": "true"})
    assert block.status_code == 200
    assert block.text.lstrip().startswith('<section id="results">')
    assert "IoU 0.5" in block.text
    assert block.headers["Vary"] == "HX-Request"
    assert block.text.count("data:image/svg+xml;base64,") == 3  # every plot drawn from the one computation
    png = await admin.get(f"{page}/plots/T/concordance.png")
    assert png.status_code == 200
    assert png.content[:4] == b"\x89PNG"
    svg = await admin.get(f"{page}/plots/T/seconds.svg")
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert b"<svg" in svg.content
    assert (await (await client_for("alice")).get(page)).status_code == 403


async def test_dashboard_shows_the_training_figure_once_the_study_has_runs(
    app: Any, client_for: ClientFactory
) -> None:
    await make_user(app, "admin", "admin")
    report = await _import(app, ImportRequest("S", "T", "classify", "ground-truth"), GT_FILE)
    await _import(app, ImportRequest("S", "T", "classify", "expert", mode="unaided"), MORE)
    admin = await client_for("admin")
    page = f"/studies/{report.study_id}/evaluation"
    figure = f"/api/v1/studies/{report.study_id}/training-runs/figure.svg"
    htmx = {"HX-Request": "true"}
    assert figure not in (await admin.get(page, headers=htmx)).text

    async with app.state.sessionmaker() as session:
        session.add(_finished_run(report.study_id, report.task_id))
        await session.commit()
    text = (await admin.get(page, headers=htmx)).text
    assert figure in text
    assert "1 training run " in text
    drawn = await admin.get(figure)
    assert drawn.status_code == 200
    assert b"unaided, VotesLoss" in drawn.content


def _finished_run(study_id: int, task_id: int) -> TrainingRun:
    return TrainingRun(
        study_id=study_id,
        task_id=task_id,
        mode="unaided",
        loss="votes",
        weighting="paper",
        experts=["P3", "P4"],
        set_name="first:2",
        params={},
        history=[],
        best_val_accuracy=0.85,
        best_epoch=3,
        device="cpu",
        weights_init="random",
        seconds=1.0,
        samples_per_s=10.0,
        train_samples=10,
        val_samples=10,
        status="succeeded",
    )


def test_plots_without_values_say_no_data_and_colour_caught_and_missed_apart() -> None:
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
    colours = {
        *plots.MODE_COLOURS.values(),
        plots.CAUGHT_COLOUR,
        plots.MISSED_COLOUR,
        plots.SUGGESTIONS_COLOUR,
    }
    assert len(colours) == 5
