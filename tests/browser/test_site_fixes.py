"""Issue 13's list of broken pages, each in a real browser: local times on error pages, the assignment
grid, the injection form, a multi-file upload with a corrupt file, the detect banner, the done hint, the
studies list, job rows and the favicon."""

import asyncio
import re
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from httpx import AsyncClient
from playwright.async_api import Browser, Page, Route, expect

from app.models import Job, JobStatus
from tests.browser.conftest import VIEWPORT
from tests.browser.test_admin import login
from tests.browser.test_workspace import _drag, _saved
from tests.factories import make_study, png_bytes
from tests.suggestions.test_injection_api import CELLS, synthetic_task

pytestmark = pytest.mark.browser

TOKYO = "Asia/Tokyo"


@pytest.fixture
async def tokyo_page(browser: Browser) -> AsyncIterator[Page]:
    """A page whose browser lives in Tokyo (UTC+9, no daylight saving), in US English."""
    context = await browser.new_context(viewport=VIEWPORT, timezone_id=TOKYO, locale="en-US")  # type: ignore[arg-type]
    opened = await context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    yield opened
    await context.close()
    assert not errors, errors


async def test_washout_error_page_shows_the_date_in_the_browsers_time_zone(
    app, live_server, tokyo_page: Page, client_for
):
    setup = await make_study(app, experts=("alice",), modes=("unaided", "aided"), image_count=1)
    alice: AsyncClient = await client_for("alice")
    modes = {item["mode"]: item["id"] for item in (await alice.get("/api/v1/assignments")).json()}
    assert (await alice.post(f"/api/v1/assignments/{modes['unaided']}/finish")).status_code == 200
    await login(tokyo_page, live_server, "alice")
    await tokyo_page.goto(f"{live_server}/work/{modes['aided']}/images/{setup.images[0].id}")
    stamp = tokyo_page.locator(".error-message time.local-time")
    await expect(stamp).not_to_have_text(re.compile(r"\d{4}-\d{2}-\d{2}T"))
    opens = datetime.fromisoformat(await stamp.get_attribute("datetime") or "").astimezone(ZoneInfo(TOKYO))
    shown = await stamp.text_content() or ""
    assert f"{opens:%b} {opens.day}, {opens.year}" in shown, shown
    assert f"{int(opens.strftime('%I'))}:{opens:%M} {opens:%p}" in shown, shown
    await expect(tokyo_page.get_by_role("link", name="Dashboard", exact=True).last).to_be_visible()


async def test_assignment_grid_fits_its_card_and_shows_the_assigned_sets(
    app, live_server, page: Page, client_for
):
    setup = await make_study(app, experts=("alice", "bob", "carol"), image_count=1)
    admin: AsyncClient = await client_for("admin")
    labels = [{"name": "tumor"}, {"name": "normal"}]
    task_ids = [setup.task.id]
    for name in ("second task with a long name", "third task with a longer name"):
        body = {"name": name, "kind": "classify", "labels": labels}
        task_ids.append((await admin.post(f"/api/v1/studies/{setup.study.id}/tasks", json=body)).json()["id"])
    set_ids = {}
    for task_id in task_ids:
        files = [("files", ("img0.png", png_bytes(seed=task_id), "image/png"))]
        if task_id != setup.task.id:
            assert (await admin.post(f"/api/v1/tasks/{task_id}/images", files=files)).status_code == 201
        box = {"image": "img0.png", "label": "tumor", "x1": 5, "y1": 5, "x2": 30, "y2": 30}
        suggestions = {"name": "suggestions of the detector", "suggestions": [box]}
        set_ids[task_id] = (
            await admin.post(f"/api/v1/tasks/{task_id}/suggestion-sets", json=suggestions)
        ).json()["id"]
        assignment = {
            "task_id": task_id,
            "expert": "alice",
            "mode": "aided",
            "suggestion_set_id": set_ids[task_id],
        }
        assert (await admin.post("/api/v1/assignments", json=assignment)).status_code == 201

    await login(page, live_server, "admin")
    await page.goto(f"{live_server}/admin/studies/{setup.study.id}")
    grid_card = page.locator("section.card").filter(has=page.locator("#assignment-grid"))
    expert_card = page.locator("section.card").filter(has_text="Add an expert")
    card, scroller, other = (
        await grid_card.bounding_box(),
        await page.locator(".grid-scroll").bounding_box(),
        await expert_card.bounding_box(),
    )
    assert card
    assert scroller
    assert other
    assert scroller["x"] + scroller["width"] <= card["x"] + card["width"] + 0.5
    assert card["x"] + card["width"] <= other["x"] + 0.5  # nothing slides under "Add an expert"
    for task_id, set_id in set_ids.items():
        choice = page.locator(f'select[name="suggestion_set-{task_id}"]')
        await expect(choice).to_have_value(str(set_id))
        width = await choice.evaluate("select => select.getBoundingClientRect().width")
        assert width >= 140, width  # "#N suggestions…" readable, not cut to "n"
    await expect(page.locator("#assignment-grid .set-of")).to_have_text(
        [f"set #{i}" for i in set_ids.values()]
    )


async def test_injection_form_offers_fitting_presets_and_outlines_only_the_field_in_error(
    app, live_server, page: Page, client_for
):
    synthetic = await synthetic_task(app, client_for, kind="classify", images=12, per_image=4, labels=CELLS)
    set_id = synthetic.source_set_id
    await login(page, live_server, "admin")
    await page.goto(f"{live_server}/admin/tasks/{synthetic.setup.task.id}/suggestions")
    form = page.locator(f"#injection-{set_id}")
    await form.locator("summary").click()
    options = await form.locator(f"#preset-{set_id} option").evaluate_all("os => os.map(o => o.value)")
    assert options == ["paper-classify"]
    await form.locator(f"#overrides-{set_id}").fill('{"steps": {"9": {"count": 1}}}')
    await form.get_by_role("button", name="Preview").click()
    form = page.locator(f"#injection-{set_id}")
    await expect(form.locator(".field-error")).to_contain_text("override of step '9'")
    await expect(form.locator(f"#overrides-{set_id}")).to_have_attribute("aria-invalid", "true")
    for other in (f"#preset-{set_id}", f"#seed-{set_id}", f"#inject-name-{set_id}"):
        await expect(form.locator(other)).not_to_have_attribute("aria-invalid", "true")
    outlined = await form.locator(f"#overrides-{set_id}").evaluate("e => getComputedStyle(e).borderTopColor")
    plain = await form.locator(f"#seed-{set_id}").evaluate("e => getComputedStyle(e).borderTopColor")
    assert outlined != plain


async def test_upload_with_a_corrupt_file_says_nothing_was_added_and_why(
    app, live_server, page: Page, client_for, tmp_path: Path
):
    setup = await make_study(app, experts=("alice",), image_count=1)
    good, corrupt = tmp_path / "good.png", tmp_path / "corrupt.png"
    good.write_bytes(png_bytes(seed=3))
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    await login(page, live_server, "admin")
    await page.goto(f"{live_server}/admin/studies/{setup.study.id}")
    task = page.locator("section.task").first
    await task.locator("input[type=file]").set_input_files([good, corrupt])
    await task.get_by_role("button", name="Upload").click()
    toast = page.locator("#toasts .toast")
    await expect(toast).to_contain_text("nothing was added: 1 of 2 files refused (corrupt.png: ")
    await expect(toast).to_contain_text("upload the other 1 again without it")
    await expect(task.locator(".image-count")).to_contain_text("1 image for the study")
    admin: AsyncClient = await client_for("admin")
    names = [image["name"] for image in (await admin.get(f"/api/v1/tasks/{setup.task.id}/images")).json()]
    assert names == ["img0.png"]


async def test_detect_banner_and_the_hint_when_a_done_image_is_edited(
    app, live_server, page: Page, client_for
):
    setup = await make_study(app, experts=("alice",), image_count=2, kind="detect", labels=("mitosis",))
    await login(page, live_server, "alice")
    await page.get_by_role("link", name="Start").click()
    await page.wait_for_url(re.compile(rf".*/images/{setup.images[0].id}$"))
    banner = page.locator(".mode-banner")
    await expect(banner).to_contain_text("find and box every object of the labels below")
    await expect(banner).not_to_contain_text("cell")
    await page.keyboard.press("d")
    await page.wait_for_url(re.compile(rf".*/images/{setup.images[1].id}$"))
    await page.get_by_role("link", name="img0.png").click()
    await page.wait_for_url(re.compile(rf".*/images/{setup.images[0].id}$"))
    await expect(page.locator("#done-hint")).to_be_hidden()
    await _drag(page, (20, 20), (60, 60))
    await _saved(page)
    await expect(page.locator("#done-hint")).to_be_visible()
    await expect(page.locator("#toasts .toast")).to_contain_text("This image is marked done")
    alice: AsyncClient = await client_for("alice")
    kept = (await alice.get(f"/api/v1/images/{setup.images[0].id}/annotations?mode=unaided")).json()
    assert len(kept) == 1


async def test_studies_list_job_rows_and_favicon(app, live_server, page: Page, client_for, sessionmaker):
    setup = await make_study(app, experts=("alice", "bob"), image_count=3)
    admin: AsyncClient = await client_for("admin")
    box = {"image": "img0.png", "label": "tumor", "x1": 5, "y1": 5, "x2": 30, "y2": 30}
    made = await admin.post(
        f"/api/v1/tasks/{setup.task.id}/suggestion-sets", json={"name": "s", "suggestions": [box]}
    )
    set_id = made.json()["id"]
    async with sessionmaker() as session, session.begin():
        params = {"task_id": setup.task.id, "detector_id": 1}
        result = {"suggestion_set_id": set_id}
        session.add(
            Job(kind="detect", params=params, status=JobStatus.succeeded, progress=1.0, result=result)
        )
    await login(page, live_server, "admin")
    await page.get_by_role("link", name="Studies", exact=True).click()
    row = page.locator("#study-list tbody tr").first
    await expect(row).to_contain_text(setup.study.name)
    await expect(row.locator("td").nth(2)).to_have_text("3")
    await expect(row).to_contain_text("0 / 6 images · 0 / 2 assignments finished")
    await expect(row.locator("time")).not_to_have_text(re.compile("T"))

    await page.get_by_role("link", name="Jobs").click()
    job = page.locator("#jobs tbody tr").first
    await expect(job.locator(".job-task")).to_have_text("task task")
    await job.get_by_role("link", name=f"suggestion set #{set_id}").click()
    await page.wait_for_url(f"{live_server}/admin/tasks/{setup.task.id}/suggestions#set-{set_id}")
    await expect(page.locator(f"#set-{set_id}")).to_be_visible()

    icon = await page.locator('link[rel="icon"]').get_attribute("href")
    for url in (icon, "/favicon.ico"):
        response = await page.request.get(f"{live_server}{url}")
        assert response.status == 200
        assert response.headers["content-type"] == "image/svg+xml"


async def test_plots_show_a_placeholder_until_they_load(app, live_server, page: Page, client_for):
    setup = await make_study(app, experts=("alice",), image_count=1)
    alice: AsyncClient = await client_for("alice")
    box = {"label": "tumor", "x1": 5, "y1": 5, "x2": 30, "y2": 30}
    url = f"/api/v1/images/{setup.images[0].id}/annotations?mode=unaided"
    assert (await alice.post(url, json=box)).status_code == 201
    release = asyncio.Event()

    async def hold(route: Route) -> None:
        if route.request.headers.get("hx-request"):  # the results block, computed after the page shows
            await release.wait()
        await route.continue_()

    await page.route("**/studies/*/evaluation*", hold)
    await login(page, live_server, "admin")
    await page.goto(f"{live_server}/studies/{setup.study.id}/evaluation", wait_until="domcontentloaded")
    placeholder = page.locator("#results[aria-busy=true] .placeholder")
    await expect(placeholder).to_be_visible()
    await expect(placeholder).to_contain_text("Computing the evaluation")
    assert await page.locator("#results .plots img").count() == 0
    release.set()
    plot = page.locator("#results .plots img").first
    await expect(plot).to_be_visible()
    frame = await plot.bounding_box()
    assert frame, frame
    assert frame["height"] >= 199, frame  # a sized card, not a blank strip
    assert await plot.evaluate("image => image.complete && image.naturalWidth > 0")
    await expect(placeholder).to_have_count(0)
