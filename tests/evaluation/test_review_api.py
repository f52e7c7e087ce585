"""The reviewer's statistics through GET /metrics and `concord evaluate`'s tables."""

from __future__ import annotations

from typing import Any

from app.evaluation.cli import describe_metrics
from app.evaluation.importer import ImportRequest
from app.evaluation.schemas import StudyMetricsOut
from tests.conftest import ClientFactory
from tests.evaluation.test_exports import MORE
from tests.evaluation.test_import import GT_FILE, _import
from tests.factories import make_user


async def test_metrics_route_reports_agreement_and_bootstrap_on_request(
    app: Any, client_for: ClientFactory
) -> None:
    await make_user(app, "admin", "admin")
    report = await _import(app, ImportRequest("S", "T", "detect", "ground-truth"), GT_FILE)
    await _import(app, ImportRequest("S", "T", "detect", "expert", mode="unaided"), MORE)
    url = f"/api/v1/studies/{report.study_id}/metrics"
    admin = await client_for("admin")

    plain = (await admin.get(url)).json()["tasks"]["T"]
    assert plain["uncertainty"] is None
    agreement = plain["agreement"]
    assert agreement["count_threshold"] == 7.0
    assert agreement["label_kappa_weights"] == "none"
    alice = agreement["modes"]["unaided"]["experts"]["alice"]
    assert alice["matched_cells"] == 2
    assert alice["threshold_over"] == 0

    asked = await admin.get(url, params={"bootstrap": 50, "seed": 1, "count_threshold": 1})
    assert asked.status_code == 200, asked.text
    task = asked.json()["tasks"]["T"]
    assert task["uncertainty"]["replicates"] == 50
    assert "concordance" in task["uncertainty"]["measures"]
    threshold = task["agreement"]["modes"]["unaided"]["threshold"]
    assert threshold["threshold"] == 1
    assert threshold["cases"] == 3

    text = describe_metrics(StudyMetricsOut.model_validate(asked.json()))
    for title in (
        "experts:",
        "tests (aided − unaided",
        "agreement (",
        "across experts",
        "bootstrap 95% intervals",
    ):
        assert title in text

    for bad in ({"bootstrap": -1}, {"bootstrap": 10**6}, {"count_threshold": -2}, {"seed": -1}):
        assert (await admin.get(url, params=bad)).status_code == 422, bad
    assert (await (await client_for("alice")).get(url, params={"bootstrap": 10})).status_code == 403
