"""The load-or-404 dependencies of app.deps: one row per object a path names, through the real routes,
and the viewer rule (401 for the API, the login page for pages) on probe routes that declare nothing else."""

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import AsyncClient

from app.deps import ImageDep, StudyDep, SuggestionSetDep, TaskDep
from app.suggestions.schemas import SuggestionIn
from app.suggestions.service import create_suggestion_set
from tests.conftest import ClientFactory
from tests.factories import make_study, make_user

MISSING = 2**31 - 1
MISSING_AS_ADMIN = [
    "/api/v1/studies/{missing}",
    "/api/v1/studies/{missing}/tasks",
    "/api/v1/tasks/{missing}",
    "/api/v1/tasks/{missing}/labels",
    "/api/v1/tasks/{missing}/suggestion-sets",
    "/api/v1/suggestion-sets/{missing}",
    "/api/v1/suggestion-sets/{missing}/register",
    "/api/v1/jobs/{missing}",
    "/admin/studies/{missing}",
    "/admin/tasks/{missing}/suggestions",
    "/admin/suggestion-sets/{missing}/register",
    "/admin/jobs/{missing}/progress",
]


@pytest.mark.parametrize("path", MISSING_AS_ADMIN)
async def test_a_missing_object_answers_404(app: object, client_for: ClientFactory, path: str) -> None:
    await make_user(app, "admin", "admin")
    admin = await client_for("admin")
    response = await admin.get(path.format(missing=MISSING))
    assert response.status_code == 404, response.text


def _probe(value: Any) -> dict[str, int]:
    return {"id": value.id}


async def _probe_study(study: StudyDep) -> dict[str, int]:
    return _probe(study)


async def _probe_task(task: TaskDep) -> dict[str, int]:
    return _probe(task)


async def _probe_image(image: ImageDep) -> dict[str, int]:
    return _probe(image)


async def _probe_set(suggestion_set: SuggestionSetDep) -> dict[str, int]:
    return _probe(suggestion_set)


PROBES: dict[str, Callable[..., Awaitable[dict[str, int]]]] = {
    "studies/{study_id}": _probe_study,
    "tasks/{task_id}": _probe_task,
    "images/{image_id}": _probe_image,
    "suggestion-sets/{set_id}": _probe_set,
}


@pytest.fixture
async def probed(app: FastAPI) -> FastAPI:
    for path, endpoint in PROBES.items():
        app.router.add_api_route(f"/api/v1/probe/{path}", endpoint)
        app.router.add_api_route(f"/probe/{path}", endpoint)
    return app


async def _paths(app: FastAPI) -> tuple[dict[str, str], Any]:
    setup = await make_study(app, experts=("alice",))
    await make_user(app, "carol")
    async with app.state.sessionmaker() as session, session.begin():
        box = SuggestionIn(image="img0.png", label="tumor", x1=1, y1=1, x2=9, y2=9, score=0.9)
        created = await create_suggestion_set(session, setup.task, "set", "import", [box])
    ids = {"study_id": setup.study.id, "task_id": setup.task.id, "image_id": setup.images[0].id}
    ids["set_id"] = created.id
    return {path: path.format(**ids) for path in PROBES}, setup


async def test_the_loaded_object_is_shown_to_whom_it_belongs(
    probed: FastAPI, client_for: ClientFactory
) -> None:
    paths, _ = await _paths(probed)
    admin, alice, carol = [await client_for(name) for name in ("admin", "alice", "carol")]
    for template, path in paths.items():
        assert (await admin.get(f"/api/v1/probe/{path}")).status_code == 200, template
        assert (await carol.get(f"/api/v1/probe/{path}")).status_code == 404, template
        expected = 404 if template.startswith("suggestion-sets") else 200
        assert (await alice.get(f"/api/v1/probe/{path}")).status_code == expected, template


async def test_without_a_login_the_api_answers_401_and_a_page_sends_to_the_login(
    probed: FastAPI, anonymous: AsyncClient
) -> None:
    paths, _ = await _paths(probed)
    for path in paths.values():
        assert (await anonymous.get(f"/api/v1/probe/{path}")).status_code == 401
        page = await anonymous.get(f"/probe/{path}")
        assert page.status_code == 303
        assert page.headers["location"] == f"/login?next=/probe/{path}"
