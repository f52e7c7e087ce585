"""Issue 13 over httpx: error pages in the site layout, the evaluation index, finishing an assignment and
the washout override in the pages, the studies list, favicon."""

import re

from httpx import ASGITransport, AsyncClient

from app.config import Settings
from app.main import create_app
from tests.factories import make_study, make_user
from tests.pages.test_pages import browser_client

HTML = {"Accept": "text/html,application/xhtml+xml"}


async def _api_ids(client_for, name: str) -> dict[str, int]:
    api = await client_for(name)
    return {item["mode"]: item["id"] for item in (await api.get("/api/v1/assignments")).json()}


async def test_unknown_page_is_a_page_in_the_layout_and_the_api_stays_json(app, anonymous):
    await make_user(app, "alice")
    client, _ = await browser_client(app, "alice")
    async with client:
        page = await client.get("/no/such/page", headers=HTML)
        api = await client.get("/api/v1/no/such/route", headers=HTML)
        script = await client.get("/no/such/page")
    assert page.status_code == 404
    assert page.headers["content-type"].startswith("text/html")
    assert 'class="topbar"' in page.text
    assert "Log out" in page.text
    assert "There is no such page." in page.text
    assert 'href="/dashboard" data-history-back' in page.text
    assert api.status_code == 404
    assert api.json() == {"detail": "Not Found"}
    assert script.status_code == 404
    assert script.json() == {"detail": "Not Found"}
    visitor = await anonymous.get("/no/such/page", headers=HTML)
    assert visitor.status_code == 404
    assert 'href="/login"' in visitor.text
    assert "Log out" not in visitor.text


async def test_washout_refusal_page_shows_the_date_as_a_local_time_element(app, client_for):
    setup = await make_study(app, experts=("alice",), modes=("unaided", "aided"), image_count=1)
    ids = await _api_ids(client_for, "alice")
    alice = await client_for("alice")
    assert (await alice.post(f"/api/v1/assignments/{ids['unaided']}/finish")).status_code == 200
    client, _ = await browser_client(app, "alice")
    async with client:
        resumed = await client.get(f"/work/{ids['aided']}", headers=HTML, follow_redirects=True)
        api = await alice.get(f"/api/v1/images/{setup.images[0].id}/annotations?mode=aided", headers=HTML)
    assert resumed.status_code == 403
    stamp = re.search(r'<time class="local-time" datetime="([^"]+)">\1</time>', resumed.text)
    assert stamp, resumed.text
    assert stamp.group(1)[:4].isdigit()
    assert "+00:00" in stamp.group(1)
    assert "(washout period)" in resumed.text
    assert 'class="topbar"' in resumed.text
    assert api.status_code == 403
    assert "(washout period)" in api.json()["detail"]


async def test_a_malformed_page_address_answers_a_page(app):
    await make_user(app, "admin", "admin")
    client, _ = await browser_client(app, "admin")
    async with client:
        bad_query = await client.get("/studies/1/evaluation?iou=banana", headers=HTML)
        out_of_range = await client.get("/admin/studies/99999999999999999999", headers=HTML)
        api = await client.get("/api/v1/studies/1/metrics?iou=banana", headers=HTML)
    assert bad_query.status_code == 422
    assert "invalid value in: iou" in bad_query.text
    assert out_of_range.status_code == 404
    assert 'class="topbar"' in out_of_range.text
    assert api.status_code == 422
    assert isinstance(api.json()["detail"], list)


async def test_server_error_on_a_page_is_a_page_and_stays_plain_for_scripts(settings: Settings):
    app = create_app(settings)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("kaputt")

    transport = ASGITransport(app=app, raise_app_exceptions=False)
    async with (
        app.router.lifespan_context(app),
        AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        page = await client.get("/boom", headers=HTML)
        plain = await client.get("/boom")
    assert page.status_code == 500
    assert 'class="topbar"' in page.text
    assert "Something went wrong on the server" in page.text
    assert "kaputt" not in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert plain.status_code == 500
    assert plain.text == "Internal Server Error"


async def test_evaluation_menu_leads_to_an_index_of_dashboards(app):
    setup = await make_study(app, experts=("alice",), image_count=2)
    client, _ = await browser_client(app, "admin")
    async with client:
        dashboard = await client.get("/dashboard")
        index = await client.get("/admin/evaluation")
        board = await client.get(f"/studies/{setup.study.id}/evaluation")
    assert 'href="/admin/evaluation"' in dashboard.text
    assert index.status_code == 200
    assert f'href="/studies/{setup.study.id}/evaluation"' in index.text
    assert re.search(r"<td>\s*0 / 1\s*</td>", index.text)  # assignments finished
    assert 'aria-current="page">Evaluation' in board.text
    assert "Log out" in board.text
    assert '<a href="/admin/evaluation">Evaluation</a>' in board.text  # breadcrumb


async def test_finish_page_says_what_happens_next_and_refuses_while_images_are_left(app, client_for):
    setup = await make_study(app, experts=("alice",), modes=("unaided", "aided"), image_count=2)
    ids = await _api_ids(client_for, "alice")
    alice = await client_for("alice")
    first, second = (image.id for image in setup.images)
    client, csrf = await browser_client(app, "alice")
    async with client:
        assert (await alice.post(f"/api/v1/images/{first}/done?mode=unaided")).status_code == 200
        waiting = await client.get(f"/work/{ids['unaided']}/finish")
        refused = await client.post(f"/work/{ids['unaided']}/finish", data={"csrf_token": csrf}, headers=HTML)
        dashboard_before = await client.get("/dashboard")
        assert (await alice.post(f"/api/v1/images/{second}/done?mode=unaided")).status_code == 200
        dashboard_ready = await client.get("/dashboard")
        ready = await client.get(f"/work/{ids['unaided']}/finish")
        finished = await client.post(f"/work/{ids['unaided']}/finish", data={"csrf_token": csrf})
        again = await client.post(f"/work/{ids['unaided']}/finish", data={"csrf_token": csrf})
        dashboard_after = await client.get("/dashboard")
    assert "1 of 2 images are not marked done" in waiting.text
    assert "Finish assignment</button>" not in waiting.text
    assert refused.status_code == 409
    assert "1 image of this assignment not marked done yet" in refused.text
    assert f'href="/work/{ids["unaided"]}/finish"' not in dashboard_before.text
    assert f'href="/work/{ids["unaided"]}/finish"' in dashboard_ready.text
    assert "The washout period of 14 days starts" in ready.text
    assert re.search(r'<time class="local-time" id="washout-date" datetime="[^"]+">', ready.text)
    assert finished.status_code == 303
    assert finished.headers["location"] == "/dashboard"
    assert again.status_code == 303  # a retry whose answer was lost finds it finished
    statuses = {item["mode"]: item for item in (await alice.get("/api/v1/assignments")).json()}
    assert statuses["unaided"]["status"] == "finished"
    assert statuses["aided"]["is_open"] is False
    assert statuses["aided"]["opens_at"]
    assert '<time class="local-time" datetime="' in dashboard_after.text


async def test_another_expert_cannot_finish_or_read_the_finish_page(app, client_for):
    await make_study(app, experts=("alice", "bob"), image_count=1)
    ids = await _api_ids(client_for, "alice")
    client, csrf = await browser_client(app, "bob")
    async with client:
        page = await client.get(f"/work/{ids['unaided']}/finish", headers=HTML)
        posted = await client.post(f"/work/{ids['unaided']}/finish", data={"csrf_token": csrf})
    assert page.status_code == 404
    assert posted.status_code == 404


async def test_admin_overrides_the_washout_with_a_reason_in_the_study_page(app, client_for):
    setup = await make_study(app, experts=("alice",), modes=("unaided", "aided"), image_count=1)
    ids = await _api_ids(client_for, "alice")
    client, csrf = await browser_client(app, "admin")
    url = f"/admin/assignments/{ids['aided']}/washout-override"
    hx = {"HX-Request": "true", "X-CSRF-Token": csrf}
    async with client:
        before = await client.get(f"/admin/studies/{setup.study.id}")
        short = await client.post(url, data={"reason": " x "}, headers=hx)
        unaided = await client.post(
            f"/admin/assignments/{ids['unaided']}/washout-override",
            data={"reason": "pilot run", "csrf_token": csrf},
            headers=HTML,
        )
        recorded = await client.post(url, data={"reason": "pilot run, expert travels"}, headers=hx)
    assert f'action="{url}"' in before.text
    assert short.status_code == 422
    assert 'id="override-error-' in short.text
    assert 'aria-invalid="true"' in short.text
    assert short.text.count('aria-invalid="true"') == 1
    assert recorded.status_code == 200
    assert "opened early: “pilot run, expert travels”" in recorded.text
    assert f'action="{url}"' not in recorded.text
    admin = await client_for("admin")
    aided = next(a for a in (await admin.get("/api/v1/assignments")).json() if a["id"] == ids["aided"])
    assert aided["is_open"] is True
    assert aided["washout_override_reason"] == "pilot run, expert travels"
    assert unaided.status_code == 422
    assert "only aided assignments" in unaided.text


async def test_studies_list_shows_counts_progress_and_dates(app, client_for):
    setup = await make_study(app, experts=("alice", "bob"), modes=("unaided",), image_count=3)
    alice = await client_for("alice")
    assert (await alice.post(f"/api/v1/images/{setup.images[0].id}/done?mode=unaided")).status_code == 200
    client, _ = await browser_client(app, "admin")
    async with client:
        page = await client.get("/admin/studies")
    row = re.search(r"<tr>\s*<td><a href=\"/admin/studies/\d+\">[^<]+</a></td>(.*?)</tr>", page.text, re.S)
    assert row, page.text
    cells = [
        re.sub(r"<[^>]+>|\s+", " ", cell).strip()
        for cell in re.findall(r"<td>(.*?)</td>", row.group(1), re.S)
    ]
    assert cells[:3] == ["1", "3", "2"]  # tasks, study images, experts
    assert cells[3].startswith("1 / 6 images · 0 / 2 assignments finished")
    assert cells[4] == "14 days"
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", cells[5])


async def test_favicon_is_served(anonymous):
    response = await anonymous.get("/favicon.ico")
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/svg+xml"
    assert response.text.startswith("<svg")


async def test_injection_form_offers_the_presets_of_the_task_kind_and_outlines_the_field_in_error(
    app, client_for
):
    from tests.suggestions.test_injection_api import CELLS, synthetic_task

    synthetic = await synthetic_task(app, client_for, kind="classify", images=12, per_image=4, labels=CELLS)
    set_id = synthetic.source_set_id
    client, csrf = await browser_client(app, "admin")
    hx = {"X-CSRF-Token": csrf, "HX-Request": "true"}
    async with client:
        page = await client.get(f"/admin/tasks/{synthetic.setup.task.id}/suggestions")
        bad_seed = await client.post(
            f"/admin/suggestion-sets/{set_id}/preview",
            data={"preset": "paper-classify", "seed": "x1"},
            headers=hx,
        )
        bad_overrides = await client.post(
            f"/admin/suggestion-sets/{set_id}/preview",
            data={"preset": "paper-classify", "seed": "1", "overrides": "{not json"},
            headers=hx,
        )
    options = re.findall(rf'<select id="preset-{set_id}" name="preset".*?</select>', page.text, re.S)[0]
    assert re.findall(r'<option value="([^"]+)"', options) == ["paper-classify"]
    assert bad_seed.status_code == 422
    assert "the seed must be a whole number" in bad_seed.text
    invalid = re.findall(
        r'<(?:input|textarea|select) id="([a-z-]+)-\d+"[^>]*aria-invalid="true"', bad_seed.text
    )
    assert invalid == ["seed"]
    invalid = re.findall(
        r'<(?:input|textarea|select) id="([a-z-]+)-\d+"[^>]*aria-invalid="true"', bad_overrides.text
    )
    assert invalid == ["overrides"]


def test_presets_fit_their_task_kinds():
    from app.suggestions.protocols import presets_for

    assert presets_for("classify") == ["paper-classify"]
    assert presets_for("grade") == ["paper-grade"]
    assert presets_for("detect") == ["paper-detect"]


async def test_upload_with_a_corrupt_file_adds_nothing_and_names_each_refused_file(app, client_for):
    from tests.factories import png_bytes

    setup = await make_study(app, experts=("alice",), image_count=1)
    client, csrf = await browser_client(app, "admin")
    files = [
        ("files", ("good-1.png", png_bytes(seed=11), "image/png")),
        ("files", ("broken.png", b"not a picture at all\n" * 20, "image/png")),
        ("files", ("good-2.png", png_bytes(seed=12), "image/png")),
        ("files", ("also-broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "image/png")),
    ]
    headers = {"X-CSRF-Token": csrf, "HX-Request": "true"}
    async with client:
        response = await client.post(f"/admin/tasks/{setup.task.id}/images", files=files, headers=headers)
    assert 400 <= response.status_code < 500
    assert "nothing was added: 2 of 4 files refused (broken.png: " in response.text
    assert "also-broken.png: " in response.text
    assert "upload the other 2 again without them" in response.text
    admin = await client_for("admin")
    images = (await admin.get(f"/api/v1/tasks/{setup.task.id}/images")).json()
    assert [image["name"] for image in images] == ["img0.png"]


async def test_job_rows_name_their_task_and_link_to_the_result(app, sessionmaker):
    from app.models import Job, JobStatus

    setup = await make_study(app, experts=("alice",), image_count=1)
    async with sessionmaker() as session, session.begin():
        job = Job(
            kind="detect",
            params={"task_id": setup.task.id, "detector_id": 1},
            status=JobStatus.succeeded,
            progress=1.0,
            result={"suggestion_set_id": 77},
        )
        session.add(job)
    client, _ = await browser_client(app, "admin")
    async with client:
        page = await client.get("/admin/jobs")
    task_link = f'<a class="job-task" href="/admin/tasks/{setup.task.id}/suggestions">task task</a>'
    assert task_link in page.text
    result_link = f'href="/admin/tasks/{setup.task.id}/suggestions#set-77">suggestion set #77</a>'
    assert result_link in page.text


async def test_workspace_offers_finishing_once_every_image_is_done(app, client_for):
    setup = await make_study(app, experts=("alice",), image_count=2)
    ids = await _api_ids(client_for, "alice")
    alice = await client_for("alice")
    first, second = (image.id for image in setup.images)
    client, _ = await browser_client(app, "alice")
    async with client:
        assert (await alice.post(f"/api/v1/images/{first}/done?mode=unaided")).status_code == 200
        one_left = await client.get(f"/work/{ids['unaided']}/images/{first}")
        assert (await alice.post(f"/api/v1/images/{second}/done?mode=unaided")).status_code == 200
        all_done = await client.get(f"/work/{ids['unaided']}/images/{first}")
    assert '<div class="finish-box" id="finish-box" role="status" hidden>' in one_left.text
    assert f'"nextOpenUrl": "/work/{ids["unaided"]}/images/{second}"' in one_left.text
    assert '"othersLeft": 1' in one_left.text
    assert '<div class="finish-box" id="finish-box" role="status">' in all_done.text
    assert f'href="/work/{ids["unaided"]}/finish">Finish assignment…</a>' in all_done.text
    assert '"nextOpenUrl": null' in all_done.text
    assert '"othersLeft": 0' in all_done.text
