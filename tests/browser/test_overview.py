"""The admin lands on the study overview, follows a next step, sees flash messages after actions and
sorts tables; writes the overview screenshot for the README."""

import pytest
from playwright.async_api import expect

from tests.browser.conftest import SCREENSHOTS
from tests.browser.test_admin import login
from tests.factories import make_study, make_user

pytestmark = pytest.mark.browser


async def test_overview_is_the_admin_landing_page(app, live_server, page, client_for):
    setup = await make_study(
        app, experts=("alice", "bob", "carol"), modes=("unaided", "aided"), image_count=3
    )
    for name in ("alice", "carol"):
        expert = await client_for(name)
        for image in setup.images[: 3 if name == "alice" else 1]:
            assert (await expert.post(f"/api/v1/images/{image.id}/done?mode=unaided")).status_code == 200
    alice = await client_for("alice")
    unaided = next(a for a in (await alice.get("/api/v1/assignments")).json() if a["mode"] == "unaided")
    assert (await alice.post(f"/api/v1/assignments/{unaided['id']}/finish")).status_code == 200

    await login(page, live_server, "admin")
    assert page.url == f"{live_server}/admin"
    await expect(page.get_by_role("heading", name="Study overview")).to_be_visible()
    summary = page.locator(f"#study-summary-{setup.study.id}")
    await expect(summary.locator('tr[data-mode="unaided"]')).to_contain_text("1 / 3")
    await expect(summary.locator('tr[data-mode="unaided"]')).to_contain_text("4 / 9")
    await expect(summary.locator(".washouts li")).to_have_count(3)
    await expect(summary.locator(".washouts li").first).to_contain_text("alice · task aided: opens")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / "overview.png"))

    await summary.get_by_role("link", name="Follow progress").click()
    await expect(page.get_by_role("heading", name=setup.study.name)).to_be_visible()
    crumbs = page.get_by_role("navigation", name="Breadcrumb")
    await expect(crumbs).to_contain_text("Overview")
    await expect(crumbs.locator('[aria-current="page"]')).to_have_text(setup.study.name)

    # Sortable: the progress table by expert, descending, then by images done, ascending.
    table = page.locator("#progress")
    experts = table.locator("tbody tr td:first-child")
    await table.get_by_role("button", name="Expert").click()
    await expect(table.locator("th").first).to_have_attribute("aria-sort", "ascending")
    await table.get_by_role("button", name="Expert").click()
    await expect(table.locator("th").first).to_have_attribute("aria-sort", "descending")
    assert (await experts.all_text_contents())[:2] == ["carol", "carol"]
    await table.get_by_role("button", name="Images done").click()
    done = [
        int(text.split("/")[0])
        for text in await table.locator("tbody tr td:nth-child(4)").all_text_contents()
    ]
    assert done == sorted(done)
    assert done[-1] == 3

    # Flash after an in-place action (an HTMX event shown as a toast) ...
    await page.fill("#expert-name", "dave")
    await page.fill("#expert-password", "long-password-1")
    await page.get_by_role("button", name="Add expert").click()
    await expect(page.locator("#toasts .toast-ok")).to_contain_text("Expert dave added")
    # ... and after a redirect (a cookie read once by the next page).
    await page.goto(f"{live_server}/admin/studies")
    await page.fill("#study-name", "Second study")
    await page.get_by_role("button", name="Create study").click()
    await expect(page.locator("#flash")).to_have_text("Study Second study created.")
    await page.reload()
    await expect(page.locator("#flash")).to_have_count(0)


async def test_empty_overview_leads_to_a_new_study(app, live_server, page):
    await make_user(app, "admin", "admin")
    await login(page, live_server, "admin")
    await expect(page.locator("#overview-empty")).to_contain_text("No studies yet")
    await page.get_by_role("link", name="Create the first study").click()
    await expect(page.locator("#study-name")).to_be_visible()
