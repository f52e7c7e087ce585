"""Workspace tools in a real browser: handle resizing, nudging, undo and zoom; the whole workspace by
keyboard alone; labels on boxes, help overlay, dark background; the save indicator and the retry banner
when the network drops (no edit lost, none doubled); the minimap of a large region."""

import io
import re
from typing import Any

import numpy as np
import pytest
from httpx import AsyncClient
from PIL import Image as PILImage
from playwright.async_api import Page, Route, expect

from tests.browser.test_admin import login
from tests.browser.test_workspace import _drag, _objects, _saved, _screen, _setup
from tests.factories import make_user

pytestmark = pytest.mark.browser

CREATE = re.compile(r"/api/v1/images/\d+/annotations\?")
EDIT = re.compile(r"/api/v1/annotations/\d+")


async def _events(client: AsyncClient, image_id: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = (await client.get(f"/api/v1/images/{image_id}/events?mode=unaided")).json()
    return events


async def _server_objects(client: AsyncClient, image_id: int) -> dict[int, dict[str, Any]]:
    found = (await client.get(f"/api/v1/images/{image_id}/annotations?mode=unaided")).json()
    return {item["id"]: item for item in found}


def _box(item: dict[str, Any]) -> tuple[int, int, int, int]:
    return (item["x1"], item["y1"], item["x2"], item["y2"])


async def _state(page: Page) -> str:
    state: str = await page.eval_on_selector("#save-status", "el => el.dataset.state")
    return state


async def test_handle_resize_nudge_undo_and_zoom(app, live_server, page, client_for):
    assignment_id, image_ids, seeded = await _setup(app, client_for)
    await login(page, live_server, "alice")
    await page.goto(f"{live_server}/work/{assignment_id}/images/{image_ids[0]}")
    await expect(page.locator("#overlay g.box")).to_have_count(len(seeded))

    await _drag(page, (40, 40), (90, 80))
    await _saved(page)
    drawn = next(o for o in await _objects(page) if o["id"] not in {s["id"] for s in seeded})
    assert _box(drawn) == (40, 40, 90, 80)

    handle = page.locator(f'#overlay g.box.selected[data-id="{drawn["id"]}"] .handle-se')
    await expect(handle).to_have_count(1)
    await _drag(page, (90, 80), (120, 110))  # the south-east handle
    await _saved(page)
    resized = next(o for o in await _objects(page) if o["id"] == drawn["id"])
    assert _box(resized) == (40, 40, 120, 110)

    # Arrow keys move the selected box on the page at once; one edit is sent after the last key, and
    # until then the indicator says so (read in the same task as the key, so no timer can run between).
    state_after_key = await page.evaluate(
        """() => { document.getElementById('viewer').focus();
                   document.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowRight', bubbles: true}));
                   return document.getElementById('save-status').dataset.state; }"""
    )
    assert state_after_key == "dirty"
    for key in ("ArrowRight", "ArrowRight", "ArrowDown", "ArrowDown"):
        await page.keyboard.press(key)
    await _saved(page)
    nudged = next(o for o in await _objects(page) if o["id"] == drawn["id"])
    assert _box(nudged) == (43, 42, 123, 112)

    await page.keyboard.press("Control+z")  # undo the last nudge (all nudges, when they were one edit)
    await _saved(page)
    alice = await client_for("alice")
    events = await _events(alice, image_ids[0])
    moves = [e for e in events if e["kind"] == "move" and e["annotation_id"] == drawn["id"]]
    undone = await _server_objects(alice, image_ids[0])
    # Undo restores the box as it was before the last move edit that the page sent (moves[-1] is the undo).
    assert _box(undone[drawn["id"]]) == tuple(moves[-3]["after"][k] for k in ("x1", "y1", "x2", "y2"))
    assert moves[0]["after"] == {**moves[0]["after"], "x1": 40, "y1": 40, "x2": 120, "y2": 110}

    scale = await page.evaluate("() => window.concordWorkspace.view.scale")
    await page.keyboard.press("+")
    zoomed = await page.evaluate("() => window.concordWorkspace.view.scale")
    assert zoomed == pytest.approx(scale * 1.25)
    await expect(page.locator("#zoom-status")).to_have_text(f"zoom {round(zoomed * 100)} %")
    before = await _screen(page, 300, 200)
    await page.mouse.move(*before)
    await page.mouse.wheel(0, -240)
    await page.wait_for_function(f"() => window.concordWorkspace.view.scale > {zoomed}")
    after = await _screen(page, 300, 200)
    assert after == pytest.approx(before, abs=1.0)  # the pixel under the pointer stays under it
    await page.keyboard.press("0")
    fitted = await page.evaluate("() => window.concordWorkspace.view.scale")
    assert fitted == pytest.approx(scale)


async def _tab_to(page: Page, element_id: str) -> int:
    for presses in range(1, 60):
        await page.keyboard.press("Tab")
        if await page.evaluate(
            f"() => document.activeElement && document.activeElement.id === '{element_id}'"
        ):
            return presses
    raise AssertionError(f"Tab never reached #{element_id}")


async def test_whole_workspace_by_keyboard_alone(app, live_server, page, client_for):
    assignment_id, image_ids, seeded = await _setup(app, client_for)
    await login(page, live_server, "alice")
    await page.goto(f"{live_server}/work/{assignment_id}/images/{image_ids[0]}")
    await expect(page.locator("#overlay g.box")).to_have_count(len(seeded))
    await page.evaluate("() => document.activeElement && document.activeElement.blur()")
    await _tab_to(page, "viewer")

    await page.keyboard.press("b")  # a box of the default size at the centre of the view
    await page.keyboard.press("2")  # its label
    for _ in range(3):
        await page.keyboard.press("Control+ArrowRight")  # wider by 3 px
    await page.keyboard.press("Control+ArrowDown")  # taller by 1 px
    await _saved(page)
    made = next(o for o in await _objects(page) if o["id"] not in {s["id"] for s in seeded})
    assert (made["label"], made["x2"] - made["x1"], made["y2"] - made["y1"]) == ("eosinophil", 43, 41)
    await expect(page.locator("#label-total")).to_have_text(f"{len(seeded) + 1} objects on this image")
    await expect(page.locator('[data-count-for="eosinophil"]')).to_have_text(
        str(1 + sum(s["label"] == "eosinophil" for s in seeded))
    )

    await expect(page.locator("#overlay .box-label")).to_have_count(len(seeded) + 1)
    await page.keyboard.press("l")
    await expect(page.locator("#overlay .box-label")).to_have_count(0)
    await expect(page.locator("#show-labels")).not_to_be_checked()
    await page.keyboard.press("l")
    await expect(page.locator("#overlay .box-label")).to_have_count(len(seeded) + 1)

    await page.keyboard.press("?")
    dialog = page.locator("#help-dialog")
    await expect(dialog).to_be_visible()
    await expect(dialog).to_contain_text("resize the selected box")
    await page.keyboard.press("d")  # inside the dialog: does nothing to the image
    await page.keyboard.press("Escape")
    await expect(dialog).to_be_hidden()
    await expect(page.locator("#done-button")).to_be_enabled()

    await page.keyboard.press("Escape")  # select none, then the first box again by keyboard
    await page.keyboard.press("]")
    await expect(page.locator("#overlay g.box.selected")).to_have_count(1)
    victim = await page.eval_on_selector("#overlay g.box.selected", "g => Number(g.dataset.id)")
    await page.keyboard.press("Delete")
    await _saved(page)
    await page.keyboard.press("Control+z")  # restores it
    await _saved(page)
    await page.keyboard.press("d")  # done, then on to the next image not done yet
    await page.wait_for_url(f"{live_server}/work/{assignment_id}/images/{image_ids[1]}")

    alice = await client_for("alice")
    final = await _server_objects(alice, image_ids[0])
    assert final[made["id"]]["label"] == "eosinophil"
    assert victim in final
    kinds = [(e["kind"], e["annotation_id"]) for e in (await _events(alice, image_ids[0]))[len(seeded) :]]
    assert kinds[:2] == [("create", made["id"]), ("relabel", made["id"])]
    assert kinds[-2:] == [("delete", victim), ("restore", victim)]
    assignments = {a["id"]: a for a in (await alice.get("/api/v1/assignments")).json()}
    assert assignments[assignment_id]["images_done"] == 1


async def test_dark_background_is_remembered(app, live_server, page, client_for):
    assignment_id, image_ids, _ = await _setup(app, client_for)
    await login(page, live_server, "alice")
    url = f"{live_server}/work/{assignment_id}/images/{image_ids[0]}"
    await page.goto(url)
    await page.get_by_label("Dark background").check()
    await expect(page.locator("body")).to_have_class("workspace-page workspace-dark")
    viewer_colour = await page.eval_on_selector("#viewer", "el => getComputedStyle(el).backgroundColor")
    assert viewer_colour == "rgb(0, 0, 0)"
    await page.goto(url)
    await expect(page.locator("#dark-background")).to_be_checked()
    await expect(page.locator("body")).to_have_class("workspace-page workspace-dark")


async def test_retry_banner_when_the_network_drops_keeps_every_edit(app, live_server, page, client_for):
    assignment_id, image_ids, seeded = await _setup(app, client_for)
    await login(page, live_server, "alice")
    await page.goto(f"{live_server}/work/{assignment_id}/images/{image_ids[0]}")
    await expect(page.locator("#overlay g.box")).to_have_count(len(seeded))

    # First the answer is lost after the server committed the edit: the page retries with the same
    # idempotency key and must not create a second box.
    answers_dropped = 0

    async def drop_the_answer(route: Route) -> None:
        nonlocal answers_dropped
        if route.request.method == "POST" and answers_dropped == 0:
            answers_dropped += 1
            await route.fetch()
            await route.abort("connectionreset")
        else:
            await route.continue_()

    await page.route(CREATE, drop_the_answer)
    await _drag(page, (30, 30), (70, 70))
    await _saved(page)
    await page.unroute(CREATE)
    assert answers_dropped == 1
    alice = await client_for("alice")
    created = [e for e in await _events(alice, image_ids[0]) if e["kind"] == "create"]
    assert len(created) == len(seeded) + 1

    # Then the network is down: retries fail, the banner shows, edits made meanwhile wait in order.
    async def offline(route: Route) -> None:
        await route.abort("internetdisconnected")

    await page.route(EDIT, offline)
    await page.route(CREATE, offline)
    await page.keyboard.press("3")  # relabel the new box (selected)
    await expect(page.locator("#error-box")).to_be_visible(timeout=15000)
    assert await _state(page) == "error"
    await expect(page.locator("#save-status")).to_contain_text("Not saved")
    await _drag(page, (100, 30), (140, 70))  # a second box while offline
    await expect(page.locator("#save-status")).to_have_text("Not saved: 2 edit(s) waiting")
    await expect(page.locator("#overlay g.box.pending")).to_have_count(1)

    await page.unroute(EDIT)
    await page.unroute(CREATE)
    await page.get_by_role("button", name="Retry").click()
    await _saved(page)
    await expect(page.locator("#error-box")).to_be_hidden()

    shown = {o["id"]: o for o in await _objects(page) if not o["deleted"]}
    final = await _server_objects(alice, image_ids[0])
    assert {i: _box(o) for i, o in final.items()} == {i: _box(o) for i, o in shown.items()}
    assert {i: o["label"] for i, o in final.items()} == {i: o["label"] for i, o in shown.items()}
    events = (await _events(alice, image_ids[0]))[len(seeded) :]
    assert [e["kind"] for e in events] == ["create", "relabel", "create"]
    assert events[1]["after"]["label"] == "mast_cell"


def _large_png(width: int, height: int) -> bytes:
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([(x * 255 // width), (y * 255 // height), np.full_like(x, 120)], axis=-1).astype(
        np.uint8
    )
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


async def test_minimap_of_a_large_region_moves_the_view(app, live_server, page, client_for):
    await make_user(app, "admin", "admin")
    await make_user(app, "alice")
    admin = await client_for("admin")
    study = (await admin.post("/api/v1/studies", json={"name": "MF"})).json()
    task = (
        await admin.post(
            f"/api/v1/studies/{study['id']}/tasks",
            json={
                "name": "mitosis",
                "kind": "detect",
                "default_box_size": 50,
                "labels": [{"name": "mitosis"}],
            },
        )
    ).json()
    files = [
        ("files", ("region.png", _large_png(4000, 3000), "image/png")),
        ("files", ("small.png", _large_png(400, 300), "image/png")),
    ]
    images = (await admin.post(f"/api/v1/tasks/{task['id']}/images", files=files)).json()
    assignment = (
        await admin.post(
            "/api/v1/assignments", json={"task_id": task["id"], "expert": "alice", "mode": "unaided"}
        )
    ).json()
    await login(page, live_server, "alice")
    await page.goto(f"{live_server}/work/{assignment['id']}/images/{images[0]['id']}")
    minimap = page.locator("#minimap")
    await expect(minimap).to_be_visible()
    assert await minimap.get_attribute("data-view") == "0,0,4000,3000"  # fitted: the whole image

    for _ in range(6):
        await page.keyboard.press("+")
    frame = await page.eval_on_selector("#minimap", "el => el.dataset.view.split(',').map(Number)")
    assert frame[2] - frame[0] < 1500  # zoomed in: a part of the image
    box = await minimap.bounding_box()
    assert box
    await page.mouse.click(box["x"] + box["width"] * 0.75, box["y"] + box["height"] * 0.25)
    x1, y1, x2, y2 = await page.eval_on_selector("#minimap", "el => el.dataset.view.split(',').map(Number)")
    assert abs((x1 + x2) / 2 - 3000) < 60
    assert abs((y1 + y2) / 2 - 750) < 60
    assert not await page.locator("#overlay g.box").count()  # the click did not draw a box

    await page.goto(f"{live_server}/work/{assignment['id']}/images/{images[1]['id']}")
    await expect(page.locator("#viewer")).to_be_visible()
    await expect(page.locator("#minimap")).to_have_count(0)  # small images need none
