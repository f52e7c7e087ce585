"""/docs and /redoc render from the vendored files under the Content-Security-Policy (the page fixture
fails on any CSP violation or JavaScript error)."""

import pytest
from playwright.async_api import Page, expect

pytestmark = pytest.mark.browser


async def test_swagger_ui_renders_the_api(app, live_server, page: Page):
    outside: list[str] = []
    page.on(
        "request",
        lambda request: outside.append(request.url) if not request.url.startswith(live_server) else None,
    )
    await page.goto(f"{live_server}/docs")
    tokens_route = page.locator(".opblock-summary-path", has_text="/api/v1/me/tokens").first
    await expect(tokens_route).to_be_visible(timeout=90_000)
    assert [url for url in outside if not url.startswith(("data:", "blob:"))] == []


async def test_redoc_renders_the_api(app, live_server, page: Page):
    outside: list[str] = []
    page.on(
        "request",
        lambda request: outside.append(request.url) if not request.url.startswith(live_server) else None,
    )
    await page.goto(f"{live_server}/redoc")
    await expect(page.get_by_role("heading", name="Concord").first).to_be_visible(timeout=90_000)
    await expect(page.get_by_text("Revoke one of the own API tokens").first).to_be_attached()
    assert [url for url in outside if not url.startswith(("data:", "blob:"))] == []
