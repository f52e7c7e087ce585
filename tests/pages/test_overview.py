"""The admin's study overview (landing page), breadcrumbs, empty states and flash messages, over httpx."""

import json
import re
from datetime import datetime

from httpx import AsyncClient

from app.flash import FLASH_COOKIE, FLASH_EVENT
from tests.factories import PASSWORD, make_study, make_user
from tests.pages.test_pages import browser_client


def _section(page: str, study_id: int) -> str:
    match = re.search(
        rf'<section class="card study-summary" id="study-summary-{study_id}".*?</section>', page, re.S
    )
    assert match, page
    return match.group(0)


def _mode_row(section: str, mode: str) -> str:
    match = re.search(rf'<tr class="mode-row" data-mode="{mode}">.*?</tr>', section, re.S)
    assert match, section
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(0))).strip()


async def test_admin_lands_on_the_overview_and_experts_on_their_dashboard(app, anonymous: AsyncClient):
    await make_user(app, "admin", "admin")
    await make_user(app, "alice")
    admin = await anonymous.post("/login", data={"name": "admin", "password": PASSWORD, "next": "/dashboard"})
    assert admin.headers["location"] == "/admin"
    assert (await anonymous.get("/")).headers["location"] == "/admin"
    anonymous.cookies.clear()
    expert = await anonymous.post("/login", data={"name": "alice", "password": PASSWORD})
    assert expert.headers["location"] == "/dashboard"
    assert (await anonymous.get("/")).headers["location"] == "/dashboard"
    assert (await anonymous.get("/admin")).status_code == 403


async def test_admin_asked_for_a_page_still_gets_that_page(app, anonymous: AsyncClient):
    await make_user(app, "admin", "admin")
    response = await anonymous.post(
        "/login", data={"name": "admin", "password": PASSWORD, "next": "/admin/jobs"}
    )
    assert response.headers["location"] == "/admin/jobs"


async def test_overview_without_studies_says_what_to_do(app):
    await make_user(app, "admin", "admin")
    client, _ = await browser_client(app, "admin")
    async with client:
        page = (await client.get("/admin")).text
    assert 'id="overview-empty"' in page
    assert 'href="/admin/studies#study-name"' in page
    assert "concord demo" in page


async def test_overview_counts_progress_per_mode_washouts_and_next_steps(app, client_for):
    setup = await make_study(app, experts=("alice", "bob"), modes=("unaided", "aided"), image_count=3)
    alice = await client_for("alice")
    own = {a["mode"]: a for a in (await alice.get("/api/v1/assignments")).json()}
    for image in setup.images:
        done = await alice.post(f"/api/v1/images/{image.id}/done?mode=unaided")
        assert done.status_code == 200, done.text
    finished = await alice.post(f"/api/v1/assignments/{own['unaided']['id']}/finish")
    assert finished.status_code == 200, finished.text
    opens_at = (await alice.get("/api/v1/assignments")).json()
    alice_aided = next(a for a in opens_at if a["mode"] == "aided")

    client, _ = await browser_client(app, "admin")
    async with client:
        page = (await client.get("/admin")).text
    section = _section(page, setup.study.id)
    assert "1 task (task)" in re.sub(r"\s+", " ", section)
    assert "3 study images" in section
    assert "2 experts (alice, bob)" in section
    assert _mode_row(section, "unaided") == "unaided 1 / 2 3 / 6"
    assert _mode_row(section, "aided") == "aided 0 / 2 0 / 6"
    assert "training" not in re.findall(r'data-mode="(\w+)"', section)
    washouts = re.search(r'<ul class="list washouts">(.*?)</ul>', section, re.S)
    assert washouts
    items = re.findall(r"<li>(.*?)</li>", washouts.group(1), re.S)
    # alice's aided round opens on a date (first); bob's waits for his unaided round.
    assert items[0].startswith("alice · task aided: opens")
    shown = re.search(r'datetime="([^"]+)"', items[0])
    assert shown
    assert datetime.fromisoformat(shown.group(1)) == datetime.fromisoformat(alice_aided["opens_at"])
    assert items[1] == "bob · task aided: after the unaided assignment is finished"
    steps = re.findall(r"<li>(.*?) <a href=\"([^\"]+)\">(.*?)</a></li>", section)
    assert (
        "Aided assignments of task show no suggestions.",
        f"/admin/studies/{setup.study.id}",
        "Add a suggestion set",
    ) in steps
    assert any(text.startswith("1 open assignment(s) in progress: bob") for text, _, _ in steps)
    assert (
        "Some assignments are finished.",
        f"/studies/{setup.study.id}/evaluation",
        "See first results",
    ) in steps


async def test_study_without_tasks_asks_for_a_task(app):
    await make_user(app, "admin", "admin")
    client, csrf = await browser_client(app, "admin")
    async with client:
        created = await client.post("/admin/studies", data={"name": "Empty", "csrf_token": csrf})
        study_id = int(created.headers["location"].rsplit("/", 1)[1])
        page = (await client.get("/admin")).text
    steps = re.findall(r"<li>(.*?) <a href=\"([^\"]+)\">(.*?)</a></li>", _section(page, study_id))
    assert steps == [
        ("The study has no task yet.", f"/admin/studies/{study_id}#new-task-title", "Add a task")
    ]


async def test_flash_after_a_redirect_is_shown_once(app):
    await make_user(app, "admin", "admin")
    client, csrf = await browser_client(app, "admin")
    async with client:
        created = await client.post("/admin/studies", data={"name": "Asthma", "csrf_token": csrf})
        assert created.status_code == 303
        assert FLASH_COOKIE in created.cookies
        first = await client.get(created.headers["location"])
        assert '<p class="flash" id="flash" role="status">Study Asthma created.</p>' in first.text
        assert FLASH_COOKIE not in client.cookies
        second = await client.get(created.headers["location"])
    assert 'id="flash"' not in second.text


async def test_flash_of_an_in_place_action_is_an_htmx_event(app):
    setup = await make_study(app, experts=("alice",))
    client, csrf = await browser_client(app, "admin")
    headers = {"X-CSRF-Token": csrf, "HX-Request": "true"}
    async with client:
        response = await client.post(
            f"/admin/studies/{setup.study.id}/tasks",
            data={"name": "grading", "kind": "grade", "labels": "0\n1"},
            headers=headers,
        )
        refused = await client.post(
            f"/admin/studies/{setup.study.id}/tasks", data={"name": "", "labels": ""}, headers=headers
        )
    assert response.status_code == 200
    assert json.loads(response.headers["HX-Trigger"]) == {
        FLASH_EVENT: "Task grading created: add its images next."
    }
    assert refused.status_code == 422
    assert "HX-Trigger" not in refused.headers


async def test_admin_pages_have_breadcrumbs_back_to_the_overview(app):
    setup = await make_study(app, experts=("alice",))
    client, _ = await browser_client(app, "admin")
    async with client:
        pages = {
            url: (await client.get(url)).text
            for url in (
                "/admin/studies",
                f"/admin/studies/{setup.study.id}",
                "/admin/jobs",
                f"/admin/tasks/{setup.task.id}/suggestions",
                f"/admin/tasks/{setup.task.id}/training",
            )
        }
    for url, page in pages.items():
        crumbs = re.search(r'<nav class="breadcrumbs" aria-label="Breadcrumb">(.*?)</nav>', page, re.S)
        assert crumbs, url
        assert '<a href="/admin">Overview</a>' in crumbs.group(1), url
        assert crumbs.group(1).count('aria-current="page"') == 1, url
