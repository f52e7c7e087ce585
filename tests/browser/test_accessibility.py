"""Accessibility and layout of every page, as admin and as expert: axe-core finds no serious or critical
violation, keyboard focus is visible, and no main container overflows sideways at 1366×768, 1920×1080
and a tablet width (where the workspace says that it wants a wide screen).

axe-core is test tooling, vendored from npm (tests/browser/vendor, MPL-2.0) and injected into a test
context that bypasses the pages' Content-Security-Policy; the app never serves it."""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, Page

from tests.browser.test_admin import login
from tests.factories import make_study

pytestmark = pytest.mark.browser

AXE = Path(__file__).resolve().parent / "vendor" / "axe-core-4.14.1.min.js"
SIZES = {"laptop": (1366, 768), "desktop": (1920, 1080), "tablet": (820, 1180)}
BLOCKING = ("serious", "critical")


async def _pages(app: object, client_for: Any) -> dict[str, list[str]]:
    """The pages to check per role, on a study with every mode, a practice image and its reference."""
    setup = await make_study(
        app, experts=("alice",), modes=("training", "unaided", "aided"), image_count=2, practice_count=1
    )
    admin = await client_for("admin")
    truth = [{"label": "tumor", "x1": 10, "y1": 10, "x2": 50, "y2": 50, "image": setup.practice[0].name}]
    assert (
        await admin.post(f"/api/v1/tasks/{setup.task.id}/ground-truth", json={"objects": truth})
    ).status_code == 201
    alice = await client_for("alice")
    own = {a["mode"]: a["id"] for a in (await alice.get("/api/v1/assignments")).json()}
    box = {"label": "tumor", "x1": 20, "y1": 20, "x2": 60, "y2": 60}
    await alice.post(f"/api/v1/images/{setup.images[0].id}/annotations?mode=unaided", json=box)
    study, task = setup.study.id, setup.task.id
    return {
        "admin": [
            "/admin",
            "/admin/studies",
            f"/admin/studies/{study}",
            "/admin/jobs",
            f"/admin/tasks/{task}/suggestions",
            f"/admin/tasks/{task}/training",
            f"/studies/{study}/evaluation",
            "/dashboard",
        ],
        "alice": [
            "/dashboard",
            f"/work/{own['unaided']}/images/{setup.images[0].id}",
            f"/work/{own['training']}/images/{setup.practice[0].id}",
        ],
    }


@pytest.fixture
async def axe_context(browser: Browser) -> AsyncIterator[BrowserContext]:
    width, height = SIZES["laptop"]
    context = await browser.new_context(viewport={"width": width, "height": height}, bypass_csp=True)
    yield context
    await context.close()


async def _violations(page: Page) -> list[dict[str, Any]]:
    await page.add_script_tag(path=str(AXE))
    found: list[dict[str, Any]] = await page.evaluate(
        """async (blocking) => {
             const result = await axe.run(document, {resultTypes: ['violations']});
             return result.violations.filter(v => blocking.includes(v.impact)).map(v => ({
               id: v.id, impact: v.impact, help: v.help,
               nodes: v.nodes.slice(0, 4).map(n => n.target.join(' ') + ': ' + n.failureSummary)}));
           }""",
        list(BLOCKING),
    )
    return found


async def test_axe_finds_no_serious_violation_on_any_page(app, live_server, axe_context, client_for):
    pages = await _pages(app, client_for)
    found: dict[str, list[dict[str, Any]]] = {}
    page = await axe_context.new_page()
    await page.goto(f"{live_server}/login")
    found["anonymous /login"] = await _violations(page)
    for role, urls in pages.items():
        await login(page, live_server, role)
        for url in urls:
            await page.goto(f"{live_server}{url}")
            await page.wait_for_load_state("networkidle")
            found[f"{role} {url}"] = await _violations(page)
        if role == "alice":  # the last workspace with its dark background, then its help overlay open
            await page.get_by_label("Dark background").check()
            found[f"{role} dark background"] = await _violations(page)
            await page.keyboard.press("?")
            found[f"{role} help overlay"] = await _violations(page)
        await page.context.clear_cookies()
    blocking = {where: items for where, items in found.items() if items}
    assert not blocking, blocking


async def test_keyboard_focus_is_visible(app, live_server, page, client_for):
    pages = await _pages(app, client_for)
    unseen: list[str] = []
    for role, urls in pages.items():
        await login(page, live_server, role)
        for url in urls:
            await page.goto(f"{live_server}{url}")
            for _ in range(12):
                await page.keyboard.press("Tab")
                described = await page.evaluate(
                    """() => { const el = document.activeElement;
                               if (!el || el === document.body) return null;
                               const style = getComputedStyle(el);
                               const visible = style.outlineStyle !== 'none' && parseFloat(style.outlineWidth) >= 2;
                               return visible ? '' : `${el.tagName}#${el.id}.${el.className}`; }"""
                )
                if described:
                    unseen.append(f"{role} {url}: {described}")
        await page.context.clear_cookies()
    assert not unseen, unseen


async def _overflowing(page: Page) -> list[str]:
    found: list[str] = await page.evaluate(
        """() => {
             const wide = [];
             const root = document.documentElement;
             if (root.scrollWidth > window.innerWidth + 1) wide.push(`page ${root.scrollWidth} > ${window.innerWidth}`);
             for (const el of document.querySelectorAll('.topbar, main, .card, .workspace, .sidebar, .viewer-column, .overview, .columns, .grid-cards')) {
               if (el.scrollWidth > el.clientWidth + 1) wide.push(`${el.tagName}.${el.className}#${el.id} ${el.scrollWidth} > ${el.clientWidth}`);
             }
             return wide;
           }"""
    )
    return found


@pytest.mark.parametrize("size", list(SIZES))
async def test_layout_holds_without_sideways_overflow(app, live_server, browser, client_for, size):
    pages = await _pages(app, client_for)
    width, height = SIZES[size]
    context = await browser.new_context(viewport={"width": width, "height": height})
    page = await context.new_page()
    overflow: dict[str, list[str]] = {}
    try:
        for role, urls in pages.items():
            await login(page, live_server, role)
            for url in urls:
                await page.goto(f"{live_server}{url}")
                await page.wait_for_load_state("networkidle")
                wide = await _overflowing(page)
                if wide:
                    overflow[f"{role} {url}"] = wide
                if url.startswith("/work/"):
                    notice = await page.locator(".narrow-notice").is_visible()
                    assert notice == (size == "tablet"), (size, url)
            await context.clear_cookies()
    finally:
        await context.close()
    assert not overflow, overflow
