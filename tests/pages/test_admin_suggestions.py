"""The admin suggestion-set page over httpx: roles, injection preview and apply, detector runs, the grid."""

import re

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.detectors import service as detectors
from app.models import Assignment, InjectedError, Job, Suggestion, SuggestionSet
from tests.conftest import ClientFactory
from tests.factories import make_study, make_user
from tests.pages.test_pages import browser_client
from tests.suggestions.test_injection_api import CELLS, SyntheticTask, synthetic_task

Maker = async_sessionmaker[AsyncSession]


async def _classify_task(
    app: object, client_for: ClientFactory, modes: tuple[str, ...] = ()
) -> SyntheticTask:
    return await synthetic_task(
        app, client_for, kind="classify", images=12, per_image=4, labels=CELLS, modes=modes
    )


async def _row_counts(sessionmaker: Maker) -> tuple[int, int, int]:
    async with sessionmaker() as session:
        sets = await session.scalar(select(func.count()).select_from(SuggestionSet))
        shown = await session.scalar(select(func.count()).select_from(Suggestion))
        register = await session.scalar(select(func.count()).select_from(InjectedError))
    return int(sets or 0), int(shown or 0), int(register or 0)


def _htmx(csrf: str) -> dict[str, str]:
    return {"X-CSRF-Token": csrf, "HX-Request": "true"}


async def test_experts_get_403_on_every_suggestion_page(
    app: object, client_for: ClientFactory, sessionmaker: Maker
) -> None:
    synthetic = await _classify_task(app, client_for, modes=("aided",))
    task_id, set_id = synthetic.setup.task.id, synthetic.source_set_id
    before = await _row_counts(sessionmaker)
    client, csrf = await browser_client(app, "alice")
    form = {"preset": "paper-classify", "seed": "1", "csrf_token": csrf}
    async with client:
        assert (await client.get(f"/admin/tasks/{task_id}/suggestions")).status_code == 403
        assert (await client.get(f"/admin/suggestion-sets/{set_id}/register")).status_code == 403
        assert (await client.post(f"/admin/suggestion-sets/{set_id}/preview", data=form)).status_code == 403
        assert (await client.post(f"/admin/suggestion-sets/{set_id}/inject", data=form)).status_code == 403
        detect = await client.post(
            f"/admin/tasks/{task_id}/detect", data={"detector_id": "1", "csrf_token": csrf}
        )
        assert detect.status_code == 403
    assert await _row_counts(sessionmaker) == before


async def test_page_lists_sets_with_their_origin_and_lock(app: object, client_for: ClientFactory) -> None:
    synthetic = await _classify_task(app, client_for)
    client, _ = await browser_client(app, "admin")
    async with client:
        page = await client.get(f"/admin/tasks/{synthetic.setup.task.id}/suggestions")
        fragment = await client.get(
            f"/admin/tasks/{synthetic.setup.task.id}/suggestions", headers={"HX-Request": "true"}
        )
    assert page.status_code == 200
    assert page.headers["vary"] == "HX-Request"
    row = re.search(rf'<tr id="set-{synthetic.source_set_id}">.*?</tr>', page.text, re.S)
    assert row
    assert "<td>source</td>" in row.group(0)
    assert "<td>48</td>" in row.group(0)
    assert "not yet" in row.group(0)
    assert "No detector is registered yet" in page.text
    assert '<option value="paper-classify" selected>' in page.text
    assert "<html" not in fragment.text
    assert 'id="suggestion-sets"' in fragment.text


async def test_preview_shows_counts_per_kind_and_group_and_writes_nothing(
    app: object, client_for: ClientFactory, sessionmaker: Maker
) -> None:
    synthetic = await _classify_task(app, client_for)
    before = await _row_counts(sessionmaker)
    client, csrf = await browser_client(app, "admin")
    form = {"preset": "paper-classify", "seed": "3", "overrides": '{"steps": {"0": {"count": 10}}}'}
    async with client:
        response = await client.post(
            f"/admin/suggestion-sets/{synthetic.source_set_id}/preview", data=form, headers=_htmx(csrf)
        )
    assert response.status_code == 200, response.text
    assert "<html" not in response.text
    assert response.text.lstrip().startswith(
        f'<details class="card injection" id="injection-{synthetic.source_set_id}" open>'
    )
    counts = dict(re.findall(r"<tr><td>(\w+)</td><td>–</td><td>(\d+)</td></tr>", response.text))
    assert counts == {"class_changed": "10", "duplicate": "4", "false_positive": "4", "removed": "5"}
    assert "Preview: 23 errors" in response.text
    assert "(seed 3)" in response.text
    assert 'value="3"' in response.text
    assert "{&#34;steps&#34;" in response.text
    assert await _row_counts(sessionmaker) == before


async def test_bad_overrides_are_shown_in_the_form(
    app: object, client_for: ClientFactory, sessionmaker: Maker
) -> None:
    synthetic = await _classify_task(app, client_for)
    before = await _row_counts(sessionmaker)
    client, csrf = await browser_client(app, "admin")
    url = f"/admin/suggestion-sets/{synthetic.source_set_id}"
    async with client:
        not_json = await client.post(
            f"{url}/preview", data={"preset": "paper-classify", "overrides": "{"}, headers=_htmx(csrf)
        )
        bad_step = await client.post(
            f"{url}/inject",
            data={"preset": "paper-classify", "overrides": '{"steps": {"9": {"count": 1}}}'},
            headers=_htmx(csrf),
        )
    assert not_json.status_code == 422
    assert "overrides are not valid JSON" in not_json.text
    assert bad_step.status_code == 422
    assert "the protocol has steps 0 to 3" in bad_step.text
    assert bad_step.headers["HX-Retarget"] == f"#injection-{synthetic.source_set_id}"
    assert await _row_counts(sessionmaker) == before


async def test_apply_creates_exactly_one_injected_set(
    app: object, client_for: ClientFactory, sessionmaker: Maker
) -> None:
    synthetic = await _classify_task(app, client_for)
    sets_before, _, register_before = await _row_counts(sessionmaker)
    client, csrf = await browser_client(app, "admin")
    form = {"preset": "paper-classify", "seed": "5", "name": "aided set"}
    async with client:
        response = await client.post(
            f"/admin/suggestion-sets/{synthetic.source_set_id}/inject", data=form, headers=_htmx(csrf)
        )
        assert response.status_code == 200, response.text
        created_id = int(re.search(r"Created set #(\d+)", response.text).group(1))  # type: ignore[union-attr]
        register = await client.get(
            f"/admin/suggestion-sets/{created_id}/register", headers={"HX-Request": "true"}
        )
    sets_after, _, register_after = await _row_counts(sessionmaker)
    assert sets_after == sets_before + 1
    assert register_after - register_before == 28
    assert response.text.lstrip().startswith('<section id="suggestion-sets"')
    row = re.search(rf'<tr id="set-{created_id}" class="created">.*?</tr>', response.text, re.S)
    assert row
    assert "aided set" in row.group(0)
    assert f"from #{synthetic.source_set_id}" in row.group(0)
    assert "<td>28</td>" in row.group(0)
    assert register.status_code == 200
    assert register.text.lstrip().startswith('<section id="register"')
    assert register.text.count("<tr>") == 1 + 28
    async with sessionmaker() as session:
        created = await session.get(SuggestionSet, created_id)
        assert created is not None
        assert created.source == "injected"
        assert created.protocol is not None
        assert created.protocol["seed"] == 5


async def test_plain_form_apply_redirects_to_the_page(
    app: object, client_for: ClientFactory, sessionmaker: Maker
) -> None:
    synthetic = await _classify_task(app, client_for)
    sets_before = (await _row_counts(sessionmaker))[0]
    client, csrf = await browser_client(app, "admin")
    async with client:
        response = await client.post(
            f"/admin/suggestion-sets/{synthetic.source_set_id}/inject",
            data={"preset": "paper-classify", "seed": "0", "csrf_token": csrf},
        )
    assert response.status_code == 303
    assert response.headers["location"] == f"/admin/tasks/{synthetic.setup.task.id}/suggestions"
    assert (await _row_counts(sessionmaker))[0] == sets_before + 1


async def test_run_detector_queues_a_job_and_shows_its_polling_progress(
    app: object, sessionmaker: Maker
) -> None:
    setup = await make_study(
        app, labels=("neutrophil", "eosinophil", "mast_cell", "macrophage", "lymphocyte")
    )
    async with sessionmaker() as session, session.begin():
        builtin = await detectors.ensure_builtin_detectors(session, app.state.settings)  # type: ignore[attr-defined]
    client, csrf = await browser_client(app, "admin")
    url = f"/admin/tasks/{setup.task.id}/detect"
    async with client:
        page = await client.get(f"/admin/tasks/{setup.task.id}/suggestions")
        unfit = await client.post(url, data={"detector_id": str(builtin["grade"].id)}, headers=_htmx(csrf))
        response = await client.post(
            url, data={"detector_id": str(builtin["classify"].id)}, headers=_htmx(csrf)
        )
    assert f'<option value="{builtin["classify"].id}">' in page.text
    assert f'<option value="{builtin["grade"].id}" disabled' in page.text
    assert unfit.status_code == 422
    assert "does not fit task" in unfit.text
    assert response.status_code == 200, response.text
    assert response.text.lstrip().startswith('<div id="detect-job"')
    async with sessionmaker() as session:
        jobs = (await session.scalars(select(Job))).all()
    assert [(job.kind, job.params["task_id"], job.params["detector_id"]) for job in jobs] == [
        ("detect", setup.task.id, builtin["classify"].id)
    ]
    assert f'hx-get="/admin/jobs/{jobs[0].id}/progress"' in response.text
    assert 'hx-trigger="every 1s"' in response.text


async def test_grid_creates_an_aided_assignment_with_the_chosen_set(
    app: object, client_for: ClientFactory, sessionmaker: Maker
) -> None:
    synthetic = await _classify_task(app, client_for)
    task_id, set_id = synthetic.setup.task.id, synthetic.source_set_id
    await make_user(app, "carol")
    client, csrf = await browser_client(app, "admin")
    study_url = f"/admin/studies/{synthetic.setup.study.id}"
    async with client:
        page = await client.get(study_url)
        grid = await client.post(
            f"{study_url}/assignments",
            data={
                "cell": [f"carol|{task_id}|aided", f"carol|{task_id}|unaided"],
                f"suggestion_set-{task_id}": str(set_id),
            },
            headers=_htmx(csrf),
        )
    assert f'href="/admin/tasks/{task_id}/suggestions"' in page.text
    assert f'<select name="suggestion_set-{task_id}"' in page.text
    assert f'<option value="{set_id}">#{set_id} source</option>' in page.text
    assert grid.status_code == 200, grid.text
    async with sessionmaker() as session:
        rows = (await session.scalars(select(Assignment).where(Assignment.task_id == task_id))).all()
    chosen = {row.mode: row.suggestion_set_id for row in rows}
    assert chosen == {"aided": set_id, "unaided": None}
