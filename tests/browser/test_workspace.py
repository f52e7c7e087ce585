"""An expert draws, relabels, moves and deletes boxes in a real browser; the API shows exactly that."""

import asyncio
import io
import re
from typing import Any

import numpy as np
import pytest
from httpx import AsyncClient
from PIL import Image as PILImage
from playwright.async_api import Page, expect

from tests.browser.conftest import SCREENSHOTS
from tests.browser.test_admin import login
from tests.factories import make_user, png_bytes

pytestmark = pytest.mark.browser

LABELS = ["neutrophil", "eosinophil", "mast_cell", "macrophage", "lymphocyte"]
FREE = (20, 20, 150, 140)  # no seeded object touches this region, where the test draws and moves
SIZE = 480


def _patch(seed: int) -> tuple[bytes, list[dict[str, Any]]]:
    """A phantom cytology patch and its cells (when the phantom module is there), else noise."""
    try:
        from app.phantoms.classify import classify_patch
    except ImportError:
        return png_bytes(SIZE, SIZE, seed=seed), []
    phantom = classify_patch(seed, size=SIZE)
    buffer = io.BytesIO()
    PILImage.fromarray(np.asarray(phantom.image, dtype=np.uint8)).save(buffer, format="PNG")
    cells = [
        {"label": o.label, "x1": o.x1, "y1": o.y1, "x2": o.x2, "y2": o.y2}
        for o in phantom.objects
        if o.label in LABELS and (o.x1 > FREE[2] or o.y1 > FREE[3])
    ]
    return buffer.getvalue(), cells


async def _setup(app: object, client_for) -> tuple[int, list[int], list[dict[str, Any]]]:
    await make_user(app, "admin", "admin")
    await make_user(app, "alice")
    admin: AsyncClient = await client_for("admin")
    study = (await admin.post("/api/v1/studies", json={"name": "BAL"})).json()
    labels = [{"name": name} for name in LABELS]
    task = (
        await admin.post(
            f"/api/v1/studies/{study['id']}/tasks",
            json={"name": "cytology", "kind": "classify", "default_box_size": 40, "labels": labels},
        )
    ).json()
    patches = [_patch(seed) for seed in (1, 2)]
    files = [("files", (f"bal-{i}.png", data, "image/png")) for i, (data, _) in enumerate(patches)]
    images = (await admin.post(f"/api/v1/tasks/{task['id']}/images", files=files)).json()
    assignment = (
        await admin.post(
            "/api/v1/assignments", json={"task_id": task["id"], "expert": "alice", "mode": "unaided"}
        )
    ).json()
    alice: AsyncClient = await client_for("alice")
    seeded = patches[0][1] or [{"label": "neutrophil", "x1": 300, "y1": 300, "x2": 340, "y2": 340}]
    url = f"/api/v1/images/{images[0]['id']}/annotations?mode=unaided"
    created = [(await alice.post(url, json=cell)).json() for cell in seeded]
    assert all("id" in item for item in created), created
    return assignment["id"], [image["id"] for image in images], created


async def _screen(page: Page, x: float, y: float) -> tuple[float, float]:
    """Screen coordinates of an image pixel, from the workspace's current pan and zoom."""
    mapping = await page.evaluate(
        """() => { const r = document.getElementById('viewer').getBoundingClientRect();
                   const v = window.concordWorkspace.view;
                   return {left: r.left + v.tx, top: r.top + v.ty, scale: v.scale}; }"""
    )
    return mapping["left"] + x * mapping["scale"], mapping["top"] + y * mapping["scale"]


async def _drag(page: Page, start: tuple[float, float], end: tuple[float, float]) -> None:
    await page.mouse.move(*await _screen(page, *start))
    await page.mouse.down()
    await page.mouse.move(*await _screen(page, *end), steps=8)
    await page.mouse.up()


async def _saved(page: Page) -> None:
    await page.wait_for_function(
        "() => document.getElementById('save-status').dataset.state === 'ok' "
        "&& !document.querySelector('#overlay g.pending')"
    )


async def _objects(page: Page) -> list[dict[str, Any]]:
    script = "() => [...window.concordWorkspace.objects.values()].map(o => ({...o}))"
    found: list[dict[str, Any]] = await page.evaluate(script)
    return found


async def test_expert_annotates_in_the_browser(app, live_server, page, client_for):
    assignment_id, image_ids, seeded = await _setup(app, client_for)
    await login(page, live_server, "alice")
    await page.get_by_role("link", name="Start").click()
    await page.wait_for_url(f"{live_server}/work/{assignment_id}/images/{image_ids[0]}")
    await expect(page.locator("#overlay g.box")).to_have_count(len(seeded))
    await expect(page.locator(".mode-banner")).to_contain_text("Unaided mode")
    # Tiles come by the page's grant, and the browser decodes them.
    tile = page.locator("#tiles img").first
    await expect(tile).to_have_attribute("src", re.compile(r"/granted-tiles/"))
    await page.wait_for_function(
        "() => { const img = document.querySelector('#tiles img'); return img.complete && img.naturalWidth > 0; }"
    )
    assert "/granted-tiles/" in (await tile.get_attribute("src") or "")  # not the fallback

    await _drag(page, (40, 40), (90, 80))  # draw box A
    await _saved(page)
    drawn = next(o for o in await _objects(page) if o["id"] not in {s["id"] for s in seeded})
    assert abs(drawn["x1"] - 40) <= 1
    assert abs(drawn["y1"] - 40) <= 1
    assert abs(drawn["x2"] - 90) <= 1
    assert abs(drawn["y2"] - 80) <= 1

    await page.keyboard.press("2")  # label of the selected box A
    await _saved(page)
    await _drag(page, (65, 60), (95, 80))  # move A by about (30, 20)
    await _saved(page)
    victim = seeded[0]
    await page.mouse.click(
        *await _screen(page, (victim["x1"] + victim["x2"]) / 2, (victim["y1"] + victim["y2"]) / 2)
    )
    await expect(page.locator(f'#overlay g.box.selected[data-id="{victim["id"]}"]')).to_have_count(1)
    await page.keyboard.press("Delete")
    await _saved(page)
    await expect(page.locator("#overlay g.box")).to_have_count(len(seeded))
    shown = {o["id"]: o for o in await _objects(page)}
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / "workspace.png"))

    await page.keyboard.press("n")
    await page.wait_for_url(f"{live_server}/work/{assignment_id}/images/{image_ids[1]}")

    alice: AsyncClient = await client_for("alice")
    query = f"/api/v1/images/{image_ids[0]}"
    final = (await alice.get(f"{query}/annotations?mode=unaided&include_deleted=true")).json()
    by_id = {o["id"]: o for o in final}
    a = by_id[drawn["id"]]
    moved_a = shown[drawn["id"]]
    assert a["label"] == "eosinophil"
    assert not a["deleted"]
    assert (a["x1"], a["y1"], a["x2"], a["y2"]) == (
        moved_a["x1"],
        moved_a["y1"],
        moved_a["x2"],
        moved_a["y2"],
    )
    assert (a["x2"] - a["x1"], a["y2"] - a["y1"]) == (drawn["x2"] - drawn["x1"], drawn["y2"] - drawn["y1"])
    assert abs(a["x1"] - drawn["x1"] - 30) <= 1
    assert abs(a["y1"] - drawn["y1"] - 20) <= 1
    assert by_id[victim["id"]]["deleted"] is True
    assert sorted(o["id"] for o in final if not o["deleted"]) == sorted(
        [drawn["id"]] + [s["id"] for s in seeded[1:]]
    )

    events = (await alice.get(f"{query}/events?mode=unaided")).json()
    browser_events = [(e["kind"], e["annotation_id"]) for e in events[len(seeded) :]]
    assert [e["kind"] for e in events[: len(seeded)]] == ["create"] * len(seeded)
    assert browser_events == [
        ("create", drawn["id"]),
        ("relabel", drawn["id"]),
        ("move", drawn["id"]),
        ("delete", victim["id"]),
    ]
    create, relabel, move, delete = events[len(seeded) :]
    assert create["before"] is None
    assert create["after"]["label"] == "neutrophil"
    assert [create["after"][k] for k in ("x1", "y1", "x2", "y2")] == [
        drawn[k] for k in ("x1", "y1", "x2", "y2")
    ]
    assert (relabel["before"]["label"], relabel["after"]["label"]) == ("neutrophil", "eosinophil")
    assert [move["after"][k] for k in ("x1", "y1", "x2", "y2")] == [a[k] for k in ("x1", "y1", "x2", "y2")]
    assert delete["before"]["deleted"] is False
    assert delete["after"]["deleted"] is True
    assert all(e["idempotency_key"] for e in events[len(seeded) :])
    assert len({e["idempotency_key"] for e in events[len(seeded) :]}) == 4

    visit = await _closed_visit(alice, f"{query}/visits?mode=unaided")
    span = _seconds(visit["closed_at"]) - _seconds(visit["opened_at"])
    assert 0 < visit["active_seconds"] <= span + 1e-6


def _seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()


async def _closed_visit(client: AsyncClient, url: str) -> dict[str, Any]:
    """The single visit of the first image, once the page's close request (on pagehide) has landed."""
    for _ in range(100):
        visits = (await client.get(url)).json()
        if visits and visits[0]["closed_at"]:
            assert len(visits) == 1
            visit: dict[str, Any] = visits[0]
            return visit
        await asyncio.sleep(0.1)
    raise AssertionError(f"the visit was not closed: {visits}")


async def test_conflicting_edit_reloads_the_image_objects(app, live_server, page, client_for):
    assignment_id, image_ids, seeded = await _setup(app, client_for)
    await login(page, live_server, "alice")
    await page.goto(f"{live_server}/work/{assignment_id}/images/{image_ids[0]}")
    await expect(page.locator("#overlay g.box")).to_have_count(len(seeded))
    target = seeded[0]
    alice: AsyncClient = await client_for("alice")
    elsewhere = await alice.patch(
        f"/api/v1/annotations/{target['id']}", json={"version": target["version"], "label": "lymphocyte"}
    )
    assert elsewhere.status_code == 200
    centre = ((target["x1"] + target["x2"]) / 2, (target["y1"] + target["y2"]) / 2)
    await page.mouse.click(*await _screen(page, *centre))
    await page.keyboard.press("3")  # sent with the old version: 409
    await expect(page.locator("#toasts .toast")).to_contain_text("changed elsewhere")
    await expect(page.locator(f'#overlay g.box[data-id="{target["id"]}"]')).to_have_attribute(
        "data-label", "lymphocyte"
    )
    events = (await alice.get(f"/api/v1/images/{image_ids[0]}/events?mode=unaided")).json()
    assert [e["kind"] for e in events] == ["create"] * len(seeded) + ["relabel"]
    assert events[-1]["after"]["label"] == "lymphocyte"


async def _aided_setup(app: object, client_for) -> tuple[int, int, list[dict[str, Any]]]:
    """Alice's aided assignment (washout overridden) whose first image has two suggestions, not opened."""
    await make_user(app, "admin", "admin")
    await make_user(app, "alice")
    admin: AsyncClient = await client_for("admin")
    study = (await admin.post("/api/v1/studies", json={"name": "aided"})).json()
    labels = [{"name": name} for name in LABELS]
    task = (
        await admin.post(
            f"/api/v1/studies/{study['id']}/tasks",
            json={"name": "cytology", "kind": "classify", "default_box_size": 40, "labels": labels},
        )
    ).json()
    files = [("files", ("bal-0.png", png_bytes(SIZE, SIZE, seed=3), "image/png"))]
    image = (await admin.post(f"/api/v1/tasks/{task['id']}/images", files=files)).json()[0]
    suggestions = [
        {"image": "bal-0.png", "label": "eosinophil", "x1": 300, "y1": 300, "x2": 340, "y2": 340},
        {"image": "bal-0.png", "label": "neutrophil", "x1": 380, "y1": 200, "x2": 420, "y2": 240},
    ]
    made = await admin.post(
        f"/api/v1/tasks/{task['id']}/suggestion-sets", json={"name": "run", "suggestions": suggestions}
    )
    assignment = (
        await admin.post(
            "/api/v1/assignments",
            json={
                "task_id": task["id"],
                "expert": "alice",
                "mode": "aided",
                "suggestion_set_id": made.json()["id"],
            },
        )
    ).json()
    override = await admin.post(
        f"/api/v1/assignments/{assignment['id']}/washout-override", json={"reason": "test"}
    )
    assert override.status_code == 200, override.text
    return assignment["id"], image["id"], suggestions


async def test_aided_workspace_opens_the_image_and_keeps_a_box_drawn_meanwhile(
    app, live_server, page, client_for
):
    """The page alone changes nothing; annotate.js opens the image (POST) and shows the suggestions it
    answers. A box drawn while the open is on its way waits and is saved after it, next to them."""
    assignment_id, image_id, suggestions = await _aided_setup(app, client_for)
    alice: AsyncClient = await client_for("alice")
    listing = f"/api/v1/images/{image_id}/annotations?mode=aided"
    await login(page, live_server, "alice")
    held: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def hold_open(route: Any) -> None:
        held.set_result(route)

    await page.route("**/api/v1/images/*/open?*", hold_open)
    await page.goto(f"{live_server}/work/{assignment_id}/images/{image_id}")
    route = await asyncio.wait_for(held, 20)
    await expect(page.locator("#save-status")).to_have_text("Opening the image…")
    assert (await alice.get(listing)).json() == []  # the page's GET wrote nothing

    await _drag(page, (40, 40), (90, 80))
    await expect(page.locator("#save-status")).to_have_text("Saving… (1)")
    await route.continue_()
    await _saved(page)

    await expect(page.locator("#overlay g.box")).to_have_count(len(suggestions) + 1)
    stored = (await alice.get(listing)).json()
    assert sorted(o["label"] for o in stored) == sorted([s["label"] for s in suggestions] + ["neutrophil"])
    assert sorted(o["id"] for o in await _objects(page)) == sorted(o["id"] for o in stored)
