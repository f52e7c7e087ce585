"""An admin reads a study's evaluation dashboard and changes the IoU without leaving the page."""

import base64

import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import SCREENSHOTS
from tests.browser.test_admin import login
from tests.evaluation.test_reproduction_db import STUDY, import_asthma
from tests.evaluation.test_reproduction_pure import ASTHMA
from tests.factories import make_user

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not ASTHMA.is_dir(), reason=f"study data not present at {ASTHMA}"),
]
PARTICIPANT = "Participant_3"


async def test_dashboard_plots_and_settings_update_in_place(app, live_server, page: Page, client_for):
    await make_user(app, "admin", "admin")
    await import_asthma(app)
    api = await client_for("admin")
    study_id = next(
        study["id"] for study in (await api.get("/api/v1/studies")).json() if study["name"] == STUDY
    )

    await login(page, live_server, "admin")
    await page.goto(f"{live_server}/studies/{study_id}/evaluation")
    await _expect_plots_drawn(page)
    await _expect_error_bars(page)
    await _expect_concordance(page, api, study_id, 0.25)
    await page.evaluate("window.sameDocument = true")

    await page.fill("input[name=iou]", "0.5")
    await page.get_by_role("button", name="Update").click()
    await expect(page.locator("#results")).to_contain_text("IoU 0.5,")
    assert await page.evaluate("window.sameDocument === true"), "the settings reloaded the whole page"
    assert "iou=0.5" in page.url
    await _expect_plots_drawn(page)
    await _expect_concordance(page, api, study_id, 0.5)
    await _expect_error_bars(page)

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.evaluate("window.scrollTo(0, 0)")
    await page.screenshot(path=str(SCREENSHOTS / "evaluation.png"))


async def _expect_plots_drawn(page: Page) -> None:
    plots = page.locator("#results figure img")
    await expect(plots).to_have_count(3)
    for index in range(3):
        await expect(plots.nth(index)).to_have_js_property("complete", True)
        assert await plots.nth(index).evaluate("image => image.naturalWidth") > 0


async def _expect_error_bars(page: Page) -> None:
    """The bootstrap intervals load after the plots and replace them with plots carrying error bars."""
    await expect(page.locator("#results .task-plots[hx-get]")).to_have_count(0, timeout=120_000)
    await _expect_plots_drawn(page)
    source = await page.locator("#results figure img").nth(1).get_attribute("src") or ""
    assert 'id="ci-concordance-aided-mean"' in base64.b64decode(source.split(",", 1)[1]).decode()


async def _expect_concordance(page: Page, api, study_id: int, iou: float) -> None:
    """The experts table shows the API's concordance of the participant at this IoU."""
    metrics = (await api.get(f"/api/v1/studies/{study_id}/metrics", params={"iou": iou})).json()
    expected = metrics["tasks"]["asthma"]["modes"]["aided"]["experts"][PARTICIPANT]["concordance"]
    row = page.locator(f'table.data tr:has(td:text-is("aided")):has(td:text-is("{PARTICIPANT}"))').first
    await expect(row).to_contain_text(f"{expected:.4f}")
