"""A whole study through the pages: an admin sets it up, two experts annotate unaided and finish, the
admin overrides one washout with a reason, that expert annotates aided and finishes, and the admin
reaches the evaluation dashboard from the menu. Error pages are checked on the way."""

import re
from pathlib import Path

import pytest
from httpx import AsyncClient
from playwright.async_api import Page, expect

from tests.browser.test_admin import login
from tests.browser.test_workspace import _drag, _saved
from tests.factories import PASSWORD, make_user, png_bytes

pytestmark = pytest.mark.browser

EXPERTS = ("alice", "bob")
REASON = "pilot run: alice travels next month"


async def _logout(page: Page, base: str) -> None:
    await page.get_by_role("button", name="Log out").click()
    await page.wait_for_url(re.compile(rf"{re.escape(base)}/login.*"))


async def _admin_sets_up_the_study(page: Page, base: str, admin: AsyncClient, tmp_path: Path) -> int:
    await login(page, base, "admin")
    await page.get_by_role("link", name="Studies", exact=True).click()
    await page.fill("#study-name", "Flow study")
    await page.get_by_role("button", name="Create study").click()
    await expect(page.get_by_role("heading", name="Flow study")).to_be_visible()
    await page.fill("#task-name", "cells")
    await page.fill("#task-labels", "neutrophil\neosinophil")
    await page.get_by_role("button", name="Create task").click()
    task = page.locator("section.task").filter(has_text="cells")
    files = []
    for index in range(2):
        path = tmp_path / f"cells-{index}.png"
        path.write_bytes(png_bytes(320, 240, seed=index))
        files.append(path)
    await task.locator("input[type=file]").set_input_files(files)
    await task.get_by_role("button", name="Upload").click()
    await expect(task.locator(".image-count")).to_contain_text("2 images for the study")
    for name in EXPERTS:
        await page.fill("#expert-name", name)
        await page.fill("#expert-password", PASSWORD)
        await page.get_by_role("button", name="Add expert").click()
        await expect(page.locator("#assignment-grid")).to_contain_text(name)

    study_id = int(page.url.rstrip("/").rsplit("/", 1)[1])
    task_id = (await admin.get(f"/api/v1/studies/{study_id}/tasks")).json()[0]["id"]
    box = {"label": "neutrophil", "x1": 200, "y1": 120, "x2": 240, "y2": 160}
    suggestions = [{"image": f"cells-{index}.png", **box} for index in range(2)]
    made = await admin.post(
        f"/api/v1/tasks/{task_id}/suggestion-sets", json={"name": "detector", "suggestions": suggestions}
    )
    assert made.status_code == 201, made.text
    set_id = made.json()["id"]
    await page.reload()
    await page.select_option(f'select[name="suggestion_set-{task_id}"]', str(set_id))
    for name in EXPERTS:
        await page.get_by_label(f"{name} cells unaided").check()
        await page.get_by_label(f"{name} cells aided").check()
    await page.get_by_role("button", name="Create ticked assignments").click()
    await expect(page.locator("#progress tbody tr")).to_have_count(4)
    await expect(page.locator("#assignment-grid .set-of")).to_have_text([f"set #{set_id}"] * 2)
    # The set stays chosen for the next aided assignments instead of showing "none".
    await expect(page.locator(f'select[name="suggestion_set-{task_id}"]')).to_have_value(str(set_id))
    await _logout(page, base)
    return study_id


async def _annotate_every_image_and_finish(page: Page, base: str, mode: str, draw: bool) -> None:
    """From the dashboard: start, (draw a box,) D on each image, then finish from the workspace."""
    row = page.locator("#assignments tbody tr").filter(has_text=mode)
    await row.get_by_role("link", name="Start").click()
    await page.wait_for_url(re.compile(r".*/work/\d+/images/\d+"))
    first = page.url
    if draw:
        await _drag(page, (30, 30), (80, 70))
        await _saved(page)
    await page.keyboard.press("d")
    await page.wait_for_url(lambda url: url != first)  # D marks the image done and moves on
    await expect(page.locator("#finish-box")).to_be_hidden()
    await page.keyboard.press("d")
    await expect(page.locator("#finish-box")).to_be_visible()
    await expect(page.locator("#finish-box")).to_contain_text("All 2 images are done.")
    await page.get_by_role("link", name="Finish assignment…").click()
    await expect(page.get_by_role("heading", name=re.compile(f"Finish {mode} assignment"))).to_be_visible()


async def _finish_unaided(page: Page, base: str, name: str) -> None:
    await login(page, base, name)
    await _annotate_every_image_and_finish(page, base, "unaided", draw=name == "alice")
    washout = page.locator("#washout-date")
    await expect(washout).to_be_visible()
    shown = await washout.text_content() or ""
    assert "T" not in shown, shown
    assert "UTC" not in shown, shown  # written in the browser's time zone
    await page.get_by_role("button", name="Finish assignment").click()
    await page.wait_for_url(f"{base}/dashboard")
    rows = page.locator("#assignments tbody tr")
    await expect(rows.filter(has_text="unaided")).to_contain_text("finished")
    await expect(rows.filter(has_text="aided").last).to_contain_text("opens")
    await expect(rows.filter(has_text="aided").last.get_by_role("link")).to_have_count(0)


async def _washout_page_is_a_styled_page(page: Page, base: str, aided_id: int) -> None:
    await page.goto(f"{base}/work/{aided_id}")
    await expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    await expect(page.get_by_role("navigation", name="Main")).to_be_visible()
    stamp = page.locator(".error-message time.local-time")
    await expect(stamp).to_have_count(1)
    assert not re.search(r"\d{4}-\d{2}-\d{2}T", await stamp.text_content() or "")
    await page.get_by_role("link", name="← Back").click()
    await page.wait_for_url(f"{base}/dashboard")


async def _admin_overrides_alices_washout(page: Page, base: str, study_id: int) -> None:
    await login(page, base, "admin")
    await page.get_by_role("link", name="Studies", exact=True).click()
    await page.get_by_role("link", name="Flow study").click()
    row = page.locator("#progress tbody tr").filter(has_text="alice").filter(has_text="aided").last
    await expect(row).to_contain_text("washout until")
    await row.get_by_text("Open now (override washout)…").click()
    await row.get_by_role("button", name="Open now").click()  # no reason: refused, the field outlined
    row = page.locator("#progress tbody tr").filter(has_text="alice").filter(has_text="aided").last
    await expect(row.locator(".field-error")).to_contain_text("The reason is needed")
    await expect(row.locator('input[name="reason"]')).to_have_attribute("aria-invalid", "true")
    await row.locator('input[name="reason"]').fill(REASON)
    await row.get_by_role("button", name="Open now").click()
    row = page.locator("#progress tbody tr").filter(has_text="alice").filter(has_text="aided").last
    await expect(row).to_contain_text(f"opened early: “{REASON}”")
    bob = page.locator("#progress tbody tr").filter(has_text="bob").filter(has_text="aided").last
    await expect(bob).to_contain_text("washout until")
    await _logout(page, base)


async def _admin_reaches_the_evaluation_from_the_menu(page: Page, base: str, study_id: int) -> None:
    await login(page, base, "admin")
    await page.get_by_role("navigation", name="Main").get_by_role("link", name="Evaluation").click()
    await page.wait_for_url(f"{base}/admin/evaluation")
    await expect(page.get_by_role("heading", name="Evaluation", exact=True)).to_be_visible()
    row = page.locator("#evaluation-studies tbody tr").filter(has_text="Flow study")
    await expect(row).to_contain_text("3 / 4")  # assignments finished
    await row.get_by_role("link", name="Evaluation dashboard of Flow study").click()
    await page.wait_for_url(f"{base}/studies/{study_id}/evaluation")
    await expect(page.get_by_role("heading", name="Evaluation of Flow study")).to_be_visible()
    await expect(page.locator(".breadcrumb")).to_contain_text("Evaluation / Flow study")
    await expect(page.get_by_role("button", name="Log out")).to_be_visible()
    menu = page.get_by_role("navigation", name="Main").get_by_role("link", name="Evaluation")
    await expect(menu).to_have_attribute("aria-current", "page")
    plots = page.locator("#results .plots img")
    await expect(plots.first).to_be_visible()
    await expect(plots.first).to_have_class(re.compile(r"\bloaded\b"))


async def test_a_whole_study_through_the_pages(app, live_server, page: Page, client_for, tmp_path):
    base = live_server
    await make_user(app, "admin", "admin")
    admin: AsyncClient = await client_for("admin")
    study_id = await _admin_sets_up_the_study(page, base, admin, tmp_path)

    for name in EXPERTS:
        await _finish_unaided(page, base, name)
        if name == "alice":
            alice: AsyncClient = await client_for("alice")
            modes = {item["mode"]: item for item in (await alice.get("/api/v1/assignments")).json()}
            await _washout_page_is_a_styled_page(page, base, modes["aided"]["id"])
        await _logout(page, base)

    await _admin_overrides_alices_washout(page, base, study_id)

    await login(page, base, "alice")
    await _annotate_every_image_and_finish(page, base, "aided", draw=False)
    await expect(page.locator(".next-steps")).to_contain_text("appears as finished on your dashboard")
    await page.get_by_role("button", name="Finish assignment").click()
    await page.wait_for_url(f"{base}/dashboard")
    await expect(page.locator("#assignments tbody tr").filter(has_text="aided").last).to_contain_text(
        "finished"
    )
    await _logout(page, base)

    await _admin_reaches_the_evaluation_from_the_menu(page, base, study_id)

    assignments = (await admin.get("/api/v1/assignments")).json()
    by_key = {(item["expert"], item["mode"]): item for item in assignments}
    assert {key: item["status"] for key, item in by_key.items()} == {
        ("alice", "unaided"): "finished",
        ("alice", "aided"): "finished",
        ("bob", "unaided"): "finished",
        ("bob", "aided"): "open",
    }
    assert by_key[("alice", "aided")]["washout_override_reason"] == REASON
    assert by_key[("bob", "aided")]["is_open"] is False
    task_id = (await admin.get(f"/api/v1/studies/{study_id}/tasks")).json()[0]["id"]
    first_image = (await admin.get(f"/api/v1/tasks/{task_id}/images")).json()[0]["id"]
    drawn = (await alice.get(f"/api/v1/images/{first_image}/annotations?mode=unaided")).json()
    assert len(drawn) == 1
    corners = (drawn[0]["x1"], drawn[0]["y1"], drawn[0]["x2"], drawn[0]["y2"])
    assert all(abs(got - want) <= 1 for got, want in zip(corners, (30, 30, 80, 70), strict=True)), corners
