"""Pages over httpx: login, redirects, CSRF, roles, validation errors, blinding of the workspace page."""

import re

from httpx import ASGITransport, AsyncClient

from app.models import Assignment, Suggestion, SuggestionSet
from tests.factories import PASSWORD, make_study, make_user, png_bytes


class _LoggedIn(AsyncClient):
    """Already used for the login; `async with` only closes it at the end."""

    async def __aenter__(self) -> "_LoggedIn":
        return self


async def browser_client(app: object, name: str) -> tuple[AsyncClient, str]:
    """A cookie-authenticated client and its CSRF token, logged in through the login form."""
    client = _LoggedIn(transport=ASGITransport(app=app), base_url="http://test")  # type: ignore[arg-type]
    response = await client.post("/login", data={"name": name, "password": PASSWORD, "next": "/dashboard"})
    assert response.status_code == 303, response.text
    page = await client.get("/dashboard")
    match = re.search(r'data-csrf="([^"]+)"', page.text)
    assert match
    return client, match.group(1)


async def test_root_and_pages_redirect_anonymous_to_login(app, anonymous):
    assert (await anonymous.get("/")).headers["location"] == "/login"
    response = await anonymous.get("/dashboard")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/dashboard"


async def test_expired_session_redirects_with_a_message(app, anonymous):
    anonymous.cookies.set("concord_session", "stale-token")
    response = await anonymous.get("/work/1")
    assert response.headers["location"] == "/login?next=/work/1&expired=1"
    page = await anonymous.get(response.headers["location"])
    assert "Your session has expired" in page.text


async def test_htmx_request_for_expired_session_gets_hx_redirect(app, anonymous):
    response = await anonymous.get("/dashboard", headers={"HX-Request": "true"})
    assert response.status_code == 204
    assert response.headers["HX-Redirect"].startswith("/login?next=/dashboard")


async def test_wrong_password_is_shown_next_to_the_field(app, anonymous):
    await make_user(app, "alice")
    response = await anonymous.post("/login", data={"name": "alice", "password": "nope-nope"})
    assert response.status_code == 422
    assert 'id="login-error"' in response.text
    assert "wrong user name or password" in response.text
    assert 'value="alice"' in response.text


async def test_login_does_not_redirect_off_site(app, anonymous):
    await make_user(app, "alice")
    response = await anonymous.post(
        "/login", data={"name": "alice", "password": PASSWORD, "next": "//evil.example/x"}
    )
    assert response.headers["location"] == "/dashboard"


async def test_dashboard_lists_own_assignments_with_progress_and_washout(app):
    setup = await make_study(app, experts=("alice", "bob"), modes=("unaided", "aided"), image_count=3)
    client, _ = await browser_client(app, "alice")
    async with client:
        page = await client.get("/dashboard")
    assert page.status_code == 200
    assert page.headers["vary"] == "HX-Request"
    assert page.text.count("0 / 3 images") == 2
    assert "after the unaided assignment is finished" in page.text or "opens" in page.text
    assert setup.task.name in page.text
    assert "bob" not in page.text


async def test_unsafe_request_without_csrf_token_is_refused(app):
    await make_user(app, "admin", "admin")
    client, csrf = await browser_client(app, "admin")
    async with client:
        refused = await client.post("/admin/studies", data={"name": "S1"})
        assert refused.status_code == 403
        accepted = await client.post("/admin/studies", data={"name": "S1", "csrf_token": csrf})
        assert accepted.status_code == 303
        assert re.fullmatch(r"/admin/studies/\d+", accepted.headers["location"])
        listing = await client.get("/admin/studies")
    assert "S1" in listing.text


async def test_admin_pages_need_the_admin_role(app):
    await make_user(app, "alice")
    client, csrf = await browser_client(app, "alice")
    async with client:
        assert (await client.get("/admin/studies")).status_code == 403
        posted = await client.post("/admin/studies", data={"name": "x"}, headers={"X-CSRF-Token": csrf})
        assert posted.status_code == 403
    assert 'href="/admin/studies"' not in (await _dashboard_as(app, "alice"))


async def _dashboard_as(app: object, name: str) -> str:
    client, _ = await browser_client(app, name)
    async with client:
        return (await client.get("/dashboard")).text


async def test_task_form_errors_are_shown_next_to_the_fields(app):
    setup = await make_study(app)
    client, csrf = await browser_client(app, "admin")
    async with client:
        response = await client.post(
            f"/admin/studies/{setup.study.id}/tasks",
            data={"name": "cells", "kind": "classify", "default_box_size": "1", "labels": ""},
            headers={"X-CSRF-Token": csrf, "HX-Request": "true"},
        )
    assert response.status_code == 422
    assert "<html" not in response.text
    assert 'id="task-labels-error"' in response.text
    assert 'id="task-box-error"' in response.text


async def test_admin_creates_task_uploads_images_and_assigns(app):
    setup = await make_study(app, experts=("alice",))
    client, csrf = await browser_client(app, "admin")
    headers = {"X-CSRF-Token": csrf, "HX-Request": "true"}
    study_id = setup.study.id
    async with client:
        created = await client.post(
            f"/admin/studies/{study_id}/tasks",
            data={"name": "grading", "kind": "grade", "default_box_size": "40", "labels": "0\n1 #00ff00\n2"},
            headers=headers,
        )
        assert created.status_code == 200
        task_id = int(re.findall(r'id="task-(\d+)"', created.text)[-1])
        files = [("files", (f"p{i}.png", png_bytes(seed=i), "image/png")) for i in range(2)]
        uploaded = await client.post(f"/admin/tasks/{task_id}/images", files=files, headers=headers)
        assert uploaded.status_code == 200
        assert uploaded.headers["HX-Trigger-After-Settle"] == "study-changed"
        practice = [("files", ("practice.png", png_bytes(seed=9), "image/png"))]
        uploaded = await client.post(
            f"/admin/tasks/{task_id}/images", files=practice, data={"purpose": "practice"}, headers=headers
        )
        assert uploaded.status_code == 200
        assert "Uploaded 1 practice image." in uploaded.text
        bad = [("files", ("other.png", png_bytes(seed=8), "image/png"))]
        refused = await client.post(
            f"/admin/tasks/{task_id}/images", files=bad, data={"purpose": "answers"}, headers=headers
        )
        assert refused.status_code == 422
        grid = await client.post(
            f"/admin/studies/{study_id}/assignments",
            data={"cell": [f"alice|{task_id}|training", f"alice|{task_id}|unaided"]},
            headers=headers,
        )
        assert grid.status_code == 200
        page = await client.get(f"/admin/studies/{study_id}", headers={"HX-Request": "true"})
    assert "<html" not in page.text
    assert "#00ff00" in page.text
    assert re.search(r"<strong>2</strong> images for the study", page.text)
    assert re.search(r'<strong class="practice-count">1</strong> practice image for training', page.text)
    assert page.text.count(f'value="alice|{task_id}|') == 3
    assert page.text.count("checked disabled") == 3  # make_study's unaided one plus the two new ones


async def test_workspace_page_hides_suggestion_origins_and_scores(app, db):
    setup = await make_study(app, experts=("alice",), modes=("aided",))
    suggestion_set = SuggestionSet(task_id=setup.task.id, name="run", source="import")
    db.add(suggestion_set)
    await db.flush()
    db.add(
        Suggestion(
            suggestion_set_id=suggestion_set.id,
            image_id=setup.images[0].id,
            label_id=setup.labels[1].id,
            x1=10,
            y1=10,
            x2=40,
            y2=40,
            score=0.123456,
        )
    )
    assignment = await db.get(Assignment, await _assignment_id(db, setup.experts[0].id))
    assert assignment is not None
    assignment.suggestion_set_id = suggestion_set.id
    await db.commit()
    client, csrf = await browser_client(app, "alice")
    async with client:
        page = await client.get(f"/work/{assignment.id}/images/{setup.images[0].id}")
        # The page changes nothing; annotate.js opens the image and shows the objects it answers.
        opened = await client.post(
            f"/api/v1/images/{setup.images[0].id}/open?mode=aided", headers={"X-CSRF-Token": csrf}
        )
    assert page.status_code == 200 and opened.status_code == 200
    assert '"objects"' not in page.text
    assert [item["label"] for item in opened.json()] == ["normal"]
    assert "0.123456" not in page.text and "0.123456" not in opened.text and "score" not in opened.text
    assert "origin" not in page.text
    assert "suggestion_edited" not in page.text
    assert "Aided mode" in page.text


async def _assignment_id(db, expert_id: int) -> int:
    from sqlalchemy import select

    return int(await db.scalar(select(Assignment.id).where(Assignment.expert_id == expert_id)))


async def test_reference_only_in_training_mode_after_done(app, client_for):
    setup = await make_study(app, experts=("alice",), modes=("training", "unaided"), practice_count=1)
    admin = await client_for("admin")
    image = setup.practice[0]
    truth = [
        {"image": image.name, "label": "tumor", "x1": 10, "y1": 10, "x2": 50, "y2": 50},
        {"image": image.name, "label": "normal", "x1": 100, "y1": 60, "x2": 140, "y2": 100},
    ]
    assert (
        await admin.post(f"/api/v1/tasks/{setup.task.id}/ground-truth", json={"objects": truth})
    ).status_code == 201
    alice_api = await client_for("alice")
    own = {"label": "tumor", "x1": 12, "y1": 11, "x2": 50, "y2": 49}
    assert (
        await alice_api.post(f"/api/v1/images/{image.id}/annotations?mode=training", json=own)
    ).status_code == 201
    extra = {"label": "normal", "x1": 150, "y1": 5, "x2": 190, "y2": 45}
    assert (
        await alice_api.post(f"/api/v1/images/{image.id}/annotations?mode=training", json=extra)
    ).status_code == 201
    assignments = {a["mode"]: a["id"] for a in (await alice_api.get("/api/v1/assignments")).json()}
    client, _ = await browser_client(app, "alice")
    async with client:
        url = f"/work/{assignments['training']}/images/{image.id}/reference"
        assert (await client.get(url)).status_code == 403
        study_image = setup.images[0].id
        assert (await alice_api.post(f"/api/v1/images/{image.id}/done?mode=training")).status_code == 200
        assert (await alice_api.post(f"/api/v1/images/{study_image}/done?mode=unaided")).status_code == 200
        shown = await client.get(url, headers={"HX-Request": "true"})
        unaided = await client.get(f"/work/{assignments['unaided']}/images/{study_image}/reference")
    assert shown.status_code == 200
    assert shown.text.count('class="ref found"') == 1
    assert shown.text.count('class="ref missed"') == 1
    assert shown.text.count('class="added"') == 1
    assert "1 missed" in shown.text
    assert unaided.status_code == 403


async def test_logout_ends_the_session(app):
    await make_user(app, "alice")
    client, csrf = await browser_client(app, "alice")
    async with client:
        response = await client.post("/logout", data={"csrf_token": csrf})
        assert response.headers["location"] == "/login"
        client.cookies.clear()
        client.cookies.set("concord_session", response.cookies.get("concord_session") or "old")
        assert (await client.get("/dashboard")).status_code == 303
