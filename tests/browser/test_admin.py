"""An admin creates a study with a task and uploads two images through the pages."""

import re

import pytest
from playwright.async_api import Page, expect

from tests.browser.conftest import SCREENSHOTS
from tests.factories import PASSWORD, make_user, png_bytes

pytestmark = pytest.mark.browser


async def login(page: Page, base: str, name: str) -> None:
    await page.goto(f"{base}/login")
    await page.fill("#name", name)
    await page.fill("#password", PASSWORD)
    await page.press("#password", "Enter")
    await page.wait_for_url(re.compile(f"^{re.escape(base)}/(dashboard|admin)$"))  # experts, admins


async def test_admin_creates_study_task_and_uploads_two_images(app, live_server, page, client_for, tmp_path):
    await make_user(app, "admin", "admin")
    await make_user(app, "alice")
    await login(page, live_server, "admin")
    await page.get_by_role("link", name="Studies", exact=True).click()
    await page.fill("#study-name", "Equine asthma")
    await page.fill("#study-washout", "14")
    await page.get_by_role("button", name="Create study").click()
    await expect(page.get_by_role("heading", name="Equine asthma")).to_be_visible()

    await page.fill("#task-name", "cytology")
    await page.select_option("#task-kind", "classify")
    await page.fill("#task-box", "40")
    await page.fill("#task-labels", "neutrophil\neosinophil\nmast cell\nmacrophage\nlymphocyte")
    await page.get_by_role("button", name="Create task").click()
    task = page.locator("section.task").filter(has_text="cytology")
    await expect(task.locator(".chip")).to_have_count(5)

    files = []
    for index in range(2):
        path = tmp_path / f"patch-{index}.png"
        path.write_bytes(png_bytes(320, 240, seed=index))
        files.append(path)
    await task.locator("input[type=file]").set_input_files(files)
    await task.get_by_role("button", name="Upload").click()
    counts = page.locator("section.task .image-count")
    await expect(counts).to_have_text("2 images for the study · 0 practice images for training mode")
    practice = tmp_path / "practice-0.png"
    practice.write_bytes(png_bytes(320, 240, seed=7))
    await task.locator("input[type=file]").set_input_files([practice])
    await task.get_by_label("practice (training mode only; its reference is shown)").check()
    await task.get_by_role("button", name="Upload").click()
    await expect(counts).to_have_text("2 images for the study · 1 practice image for training mode")
    await expect(page.locator("#assignment-grid .practice-note")).to_have_text("1 practice")

    await page.get_by_label("alice cytology training").check()
    await page.get_by_label("alice cytology unaided").check()
    await page.get_by_label("alice cytology aided").check()
    await page.get_by_role("button", name="Create ticked assignments").click()
    await expect(page.locator("#progress tbody tr")).to_have_count(3)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.evaluate("window.scrollTo(0, 0)")
    await page.screenshot(path=str(SCREENSHOTS / "admin.png"))

    api = await client_for("admin")
    studies = (await api.get("/api/v1/studies")).json()
    assert [study["name"] for study in studies] == ["Equine asthma"]
    tasks = (await api.get(f"/api/v1/studies/{studies[0]['id']}/tasks")).json()
    assert [(t["name"], t["kind"], t["default_box_size"]) for t in tasks] == [("cytology", "classify", 40)]
    assert [label["name"] for label in tasks[0]["labels"]] == [
        "neutrophil",
        "eosinophil",
        "mast cell",
        "macrophage",
        "lymphocyte",
    ]
    images = (await api.get(f"/api/v1/tasks/{tasks[0]['id']}/images")).json()
    assert [(image["name"], image["width"], image["height"], image["purpose"]) for image in images] == [
        ("patch-0.png", 320, 240, "study"),
        ("patch-1.png", 320, 240, "study"),
        ("practice-0.png", 320, 240, "practice"),
    ]
    assignments = (await api.get("/api/v1/assignments")).json()
    assert sorted((a["expert"], a["mode"], a["images_total"]) for a in assignments) == [
        ("alice", "aided", 2),
        ("alice", "training", 1),
        ("alice", "unaided", 2),
    ]
