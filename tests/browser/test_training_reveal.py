"""Training mode in a real browser: the reference of a practice image shows only once the image is done,
drawn over the expert's own boxes with what was missed and what was added."""

from typing import Any

import pytest
from playwright.async_api import expect

from tests.browser.test_admin import login
from tests.browser.test_workspace import _drag, _saved
from tests.factories import make_study

pytestmark = pytest.mark.browser

FOUND: dict[str, Any] = {"label": "tumor", "x1": 140, "y1": 30, "x2": 180, "y2": 70}  # the patch is 200 × 150
MISSED: dict[str, Any] = {"label": "normal", "x1": 60, "y1": 90, "x2": 100, "y2": 130}


async def test_reference_is_revealed_after_done(app, live_server, page, client_for):
    setup = await make_study(app, experts=("alice",), modes=("training",), image_count=1, practice_count=1)
    practice = setup.practice[0]
    admin = await client_for("admin")
    truth = [{**box, "image": practice.name} for box in (FOUND, MISSED)]
    assert (
        await admin.post(f"/api/v1/tasks/{setup.task.id}/ground-truth", json={"objects": truth})
    ).status_code == 201
    alice = await client_for("alice")
    assignment_id = next(
        a["id"] for a in (await alice.get("/api/v1/assignments")).json() if a["mode"] == "training"
    )

    await login(page, live_server, "alice")
    await page.goto(f"{live_server}/work/{assignment_id}/images/{practice.id}")
    await expect(page.locator(".mode-banner")).to_contain_text("Training mode")
    reveal = page.get_by_role("button", name="Show reference")
    await expect(reveal).to_be_disabled()
    early = await page.request.get(f"{live_server}/work/{assignment_id}/images/{practice.id}/reference")
    assert early.status == 403, early.status  # not before the image is done, by no route

    await _drag(page, (FOUND["x1"] + 1, FOUND["y1"]), (FOUND["x2"] + 1, FOUND["y2"]))  # matches FOUND
    await _saved(page)
    await _drag(page, (10, 10), (40, 40))  # in no reference object: "added"
    await _saved(page)
    await page.keyboard.press("d")
    await expect(reveal).to_be_enabled()
    await reveal.click()

    layer = page.locator("#reference-layer")
    await expect(layer.locator("rect.ref")).to_have_count(2)
    await expect(layer.locator("rect.ref.missed")).to_have_count(1)
    missed = layer.locator("rect.ref.missed")
    shown = [float(await missed.get_attribute(k) or "nan") for k in ("x", "y", "width", "height")]
    assert shown == [60, 90, 40, 40]
    await expect(layer.locator("rect.added")).to_have_count(1)
    await expect(page.locator("#reference-summary")).to_have_text(
        "Reference: 2 objects · 1 missed (dashed) · 1 added (dotted)"
    )
