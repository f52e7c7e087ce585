"""GET /metrics: admin only, the documented shape, thresholds validated."""

from __future__ import annotations

from typing import Any

from app.evaluation.importer import ImportRequest
from tests.conftest import ClientFactory
from tests.evaluation.test_exports import MORE
from tests.evaluation.test_import import GT_FILE, _import
from tests.factories import make_user


async def test_metrics_shape_and_access(app: Any, client_for: ClientFactory) -> None:
    await make_user(app, "admin", "admin")
    report = await _import(app, ImportRequest("S", "T", "classify", "ground-truth"), GT_FILE)
    await _import(app, ImportRequest("S", "T", "classify", "expert", mode="unaided"), MORE)
    await _import(
        app, ImportRequest("S", "T", "classify", "injected", error_kind="removed", group=1), GT_FILE
    )
    url = f"/api/v1/studies/{report.study_id}/metrics"

    assert (await (await client_for("alice")).get(url)).status_code == 403
    admin = await client_for("admin")
    body = (await admin.get(url, params={"iou": 0.5, "error_iou": 0.3})).json()
    assert (body["study"], body["iou"], body["error_iou"]) == ("S", 0.5, 0.3)
    alice = body["tasks"]["T"]["modes"]["unaided"]["experts"]["alice"]
    # a.png matches its reference exactly; b.png (22,20,60,61) vs (20,20,60,60) IoU ≈ 0.93: both found.
    assert alice["objects"] == 2
    assert alice["concordance"] == 1.0
    # one counted object per image (the other on a.png is deleted): no gaps, 0 s over the 3 images seen
    assert alice["seconds_per_image"] == 0.0
    removed = body["tasks"]["T"]["injected_errors"]["removed"]
    assert removed["all"]["unaided"]["pooled"] == {
        "total": 2,
        "caught": 2,
        "missed": 0,
        "caught_rate": 1.0,
        "matched": 2,
        "rate": 1.0,
    }
    assert set(removed) == {"all", "1"}
    assert body["tasks"]["T"]["statistics"]["concordance"]["anova_F"] is None
    assert set(body["timing"]) == {"load_s", "compute_s"}
    assert (await admin.get(url, params={"iou": 0})).status_code == 422
