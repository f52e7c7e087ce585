"""The evaluation dashboard: admin page, HTMX results block, plots as PNG and SVG."""

from __future__ import annotations

from typing import Any

from app.evaluation.importer import ImportRequest
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
    assert full.status_code == 200 and "<html" in full.text.lower() and "Concordance" not in full.text[:50]
    block = await admin.get(page, params={"iou": 0.5}, headers={"HX-Request": "true"})
    assert block.status_code == 200 and block.text.lstrip().startswith('<section id="results">')
    assert "IoU 0.5" in block.text and block.headers["Vary"] == "HX-Request"
    png = await admin.get(f"{page}/plots/T/concordance.png")
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"
    svg = await admin.get(f"{page}/plots/T/seconds.svg")
    assert svg.headers["content-type"].startswith("image/svg+xml") and b"<svg" in svg.content
    assert (await (await client_for("alice")).get(page)).status_code == 403
