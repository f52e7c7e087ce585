"""The upload form sends its CSRF token in the header, and does not send files over the server's limit."""

import pytest
from playwright.async_api import Page, Request, expect

from app.config import Settings
from tests.browser.test_admin import login
from tests.factories import make_study, png_bytes

pytestmark = pytest.mark.browser


async def test_the_upload_form_refuses_files_over_the_limit_without_sending_them(
    app: object, live_server: str, page: Page, settings: Settings, tmp_path: object
) -> None:
    setup = await make_study(app, image_count=1)
    await login(page, live_server, "admin")
    sent: list[Request] = []
    page.on("request", lambda request: sent.append(request) if request.method == "POST" else None)
    await page.goto(f"{live_server}/admin/studies/{setup.study.id}")
    task = page.locator("section.task").first

    small = png_bytes(64, 64, seed=1)
    settings.max_upload_bytes = len(small) + 10
    await page.reload()
    big = png_bytes(400, 400, seed=2)
    await task.locator("input[type=file]").set_input_files(
        {"name": "big.png", "mimeType": "image/png", "buffer": big}
    )
    await task.get_by_role("button", name="Upload").click()
    await expect(page.locator(".toast")).to_contain_text("uploads are limited to")
    assert sent == []

    await task.locator("input[type=file]").set_input_files(
        {"name": "small.png", "mimeType": "image/png", "buffer": small}
    )
    await task.get_by_role("button", name="Upload").click()
    await expect(page.locator("section.task .image-count")).to_contain_text("2 images for the study")
    [upload] = [request for request in sent if request.url.endswith(f"/admin/tasks/{setup.task.id}/images")]
    assert upload.headers["x-csrf-token"]
    assert b'name="csrf_token"' not in (upload.post_data_buffer or b"")
