"""Defect 5 of issue 9: non-finite floats and ids beyond the database's integer range are 4xx, never 500.

The routes are read from the application, so a new route with an id in its path is checked too.
"""

import json
import re
from typing import Any

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from httpx import AsyncClient

from tests.conftest import ClientFactory
from tests.factories import make_study, make_user

BEYOND_INT32 = 2**31
BEYOND_INT64 = 2**63
HUGE = 10**30
NON_FINITE = ("NaN", "Infinity", "-Infinity", "1e400")
BOX = {"label": "tumor", "x1": 5, "y1": 5, "x2": 25, "y2": 25}


def _id_routes() -> list[tuple[str, str]]:
    from app.main import create_app

    routes: list[tuple[str, str]] = []
    for context in iter_route_contexts(create_app().routes):
        path = context.path or ""
        if isinstance(context.original_route, APIRoute) and re.search(r"\{\w*id\}", path):
            routes.extend((method, path) for method in sorted(context.methods or ()))
    return routes


ID_ROUTES = _id_routes()


def _fill(path: str, value: int) -> str:
    return re.sub(r"\{\w*id\}", str(value), path).format(
        level=0, col=0, row=0, grant="1-1-0", table="experts", task="t", plot="p", fmt="png"
    )


@pytest.mark.parametrize(("method", "path"), ID_ROUTES, ids=[f"{m} {p}" for m, p in ID_ROUTES])
async def test_an_id_beyond_the_database_range_in_the_path_is_404(
    app: object, client_for: ClientFactory, method: str, path: str
) -> None:
    await make_user(app, "admin", "admin")
    admin = await client_for("admin")
    for value in (BEYOND_INT32, BEYOND_INT64, HUGE, 0, -1):
        response = await admin.request(method, _fill(path, value) + "?mode=unaided", json={})
        assert response.status_code == 404, f"{method} {path} with id {value}: {response.status_code}"


async def _raw(client: AsyncClient, method: str, url: str, body: str) -> Any:
    response = await client.request(method, url, content=body, headers={"Content-Type": "application/json"})
    return response


@pytest.mark.parametrize("value", NON_FINITE)
async def test_non_finite_floats_in_bodies_are_422_with_a_json_answer(
    app: object, client_for: ClientFactory, value: str
) -> None:
    setup = await make_study(app, experts=("alice",))
    admin, alice = await client_for("admin"), await client_for("alice")
    image, task = setup.images[0].id, setup.task.id
    sends = [
        (
            alice,
            "POST",
            f"/api/v1/images/{image}/annotations?mode=unaided",
            f'{{"label": "tumor", "x1": {value}, "y1": 1, "x2": 9, "y2": 9}}',
        ),
        (
            alice,
            "POST",
            f"/api/v1/images/{image}/annotations/bulk?mode=unaided",
            f'[{{"label": "tumor", "x1": 1, "y1": 1, "x2": {value}, "y2": 9}}]',
        ),
        (
            admin,
            "POST",
            f"/api/v1/tasks/{task}/ground-truth",
            f'{{"objects": [{{"image": "img0.png", "label": "tumor", "x1": 1, "y1": 1, "x2": 9, "y2": 9, "difficulty": {value}}}]}}',
        ),
        (
            admin,
            "POST",
            f"/api/v1/tasks/{task}/suggestion-sets",
            f'{{"name": "s", "suggestions": [{{"image": "img0.png", "label": "tumor", "x1": 1, "y1": 1, "x2": 9, "y2": 9, "score": {value}}}]}}',
        ),
        (admin, "POST", "/api/v1/jobs", f'{{"kind": "sleep", "timeout_s": {value}}}'),
    ]
    for client, method, url, body in sends:
        response = await _raw(client, method, url, body)
        assert response.status_code == 422, f"{url} with {value}: {response.status_code}"
        assert isinstance(json.loads(response.text)["detail"], list)
    assert (await alice.get(f"/api/v1/images/{image}/annotations?mode=unaided")).json() == []


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400"])
async def test_non_finite_floats_in_query_strings_are_422(
    app: object, client_for: ClientFactory, value: str
) -> None:
    setup = await make_study(app, experts=("alice",))
    admin = await client_for("admin")
    study = setup.study.id
    for url in (
        f"/api/v1/studies/{study}/metrics?iou={value}",
        f"/api/v1/studies/{study}/metrics?consensus_radius={value}",
        f"/api/v1/studies/{study}/metrics?error_iou={value}",
        f"/api/v1/studies/{study}/metrics/experts.csv?iou={value}",
    ):
        response = await admin.get(url)
        assert response.status_code == 422, f"{url}: {response.status_code}"


@pytest.mark.parametrize("value", [BEYOND_INT32, BEYOND_INT64, HUGE])
async def test_an_id_beyond_the_database_range_in_a_body_or_query_is_422(
    app: object, client_for: ClientFactory, value: int
) -> None:
    setup = await make_study(app, experts=("alice",))
    admin = await client_for("admin")
    task = setup.task.id
    sends: list[tuple[str, str, Any]] = [
        ("POST", "/api/v1/assignments", {"task_id": value, "expert": "alice", "mode": "aided"}),
        (
            "POST",
            "/api/v1/assignments",
            {"task_id": task, "expert": "alice", "mode": "aided", "suggestion_set_id": value},
        ),
        ("POST", f"/api/v1/tasks/{task}/detect", {"detector_id": value}),
        ("GET", f"/api/v1/assignments?task_id={value}", None),
        ("GET", f"/api/v1/jobs?before_id={value}", None),
    ]
    for method, url, body in sends:
        response = await admin.request(method, url, json=body)
        assert response.status_code == 422, f"{method} {url} {body}: {response.status_code}"
    assert len((await admin.get("/api/v1/assignments")).json()) == 1
