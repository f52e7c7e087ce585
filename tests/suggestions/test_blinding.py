"""Blinding of the register for every expert route: no GET an expert can reach shows register-only facts.

An aided study with injected errors is set up; the expert opens every image, edits a little, then every
GET route of the app (JSON and pages, found from the mounted routers and checked against the OpenAPI
paths) is called with the expert's credentials, path parameters filled with real ids. No body may hold
the error kinds, the words of the register, the suggestion scores, a removed object's box on its image,
or the correct label at a class-changed box. The leak detector is checked on the admin's register first,
so a detector that finds nothing cannot pass silently.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from httpx import ASGITransport, AsyncClient

from app.images.api import add_granted_tile_route
from app.main import API_PREFIX, api_routers, health_router, page_routers
from app.observability.routes import router as observability_router
from tests.conftest import ClientFactory
from tests.factories import PASSWORD
from tests.suggestions.test_injection_api import (
    CELLS,
    register_of,
    synthetic_task,
)

FORBIDDEN_WORDS = (
    "class_changed",
    "false_positive",
    "grade_shifted",
    '"duplicate"',
    '"removed"',
    "injected",
    "injected_error",
    "ref_label",
    "shown_label",
    "ref_box",
    "shown_box",
    "register",
    "paper-classify",
    "difficulty",
)
FORBIDDEN_KEYS = frozenset(
    {"score", "group", "ref_box", "shown_box", "ref_label", "shown_label", "difficulty"}
)
ERROR_KINDS = frozenset({"class_changed", "removed", "duplicate", "false_positive", "grade_shifted"})
BOX_KEYS = ("x1", "y1", "x2", "y2")


@dataclass
class Secrets:
    """What only the register knows, per image id."""

    scores: set[float]
    removed: dict[int, set[tuple[float, ...]]] = field(default_factory=dict)
    relabelled: dict[int, dict[tuple[float, ...], str]] = field(default_factory=dict)


def secrets_of(register: list[dict[str, Any]], scores: set[float]) -> Secrets:
    secrets = Secrets(scores={score for score in scores if score not in (0.0, 1.0)})
    for entry in register:
        if entry["kind"] == "removed":
            secrets.removed.setdefault(entry["image_id"], set()).add(tuple(entry["ref_box"]))
        if entry["kind"] == "class_changed":
            secrets.relabelled.setdefault(entry["image_id"], {})[tuple(entry["shown_box"])] = entry[
                "ref_label"
            ]
    return secrets


def leaks(body: str, secrets: Secrets, image_id: int | None) -> list[str]:
    """Every register-only fact found in a response body."""
    found = [f"word {word}" for word in FORBIDDEN_WORDS if word in body]
    for score in secrets.scores:
        if re.search(rf"(?<![\d.]){re.escape(repr(score))}(?!\d)", body):
            found.append(f"score {score}")
    try:
        document = json.loads(body)
    except ValueError:
        return found
    found.extend(_json_leaks(document, secrets, image_id))
    return found


def _json_leaks(node: Any, secrets: Secrets, image_id: int | None) -> Iterator[str]:
    if isinstance(node, list):
        for item in node:
            yield from _json_leaks(item, secrets, image_id)
        return
    if not isinstance(node, dict):
        return
    image_id = node.get("image_id", image_id)
    yield from (f"key {key}" for key in FORBIDDEN_KEYS & node.keys())
    if node.get("kind") in ERROR_KINDS:
        yield f"kind {node['kind']}"
    if all(isinstance(node.get(key), int | float) for key in BOX_KEYS) and image_id is not None:
        box = tuple(float(node[key]) for key in BOX_KEYS)
        if box in secrets.removed.get(image_id, set()):
            yield f"removed object {box} on image {image_id}"
        true_label = secrets.relabelled.get(image_id, {}).get(box)
        if true_label is not None and node.get("label") == true_label:
            yield f"correct label {true_label!r} at class-changed box {box} on image {image_id}"
    for value in node.values():
        yield from _json_leaks(value, secrets, image_id)


def _app_level_routes() -> APIRouter:
    """Routes create_app adds to the app's own router rather than by a router of its own (granted tiles)."""
    app = FastAPI()
    add_granted_tile_route(app, "")
    router = APIRouter()
    router.routes.extend(route for route in app.router.routes if isinstance(route, APIRoute))
    return router


def mounted_routes() -> Iterator[tuple[str, APIRoute]]:
    routers: list[tuple[str, APIRouter]] = [(API_PREFIX, router) for router in api_routers()]
    routers += [(API_PREFIX, _app_level_routes())]
    routers += [("", router) for router in page_routers()] + [(API_PREFIX, health_router)]
    routers += [("", observability_router)]
    for prefix, router in routers:
        for route in router.routes:
            assert isinstance(route, APIRoute), f"{route!r}: teach the blinding test about nested routers"
            # /metrics (not in the schema) lists route templates, "register" among them, as /openapi.json
            # does: names of routes, no register data.
            if router is not observability_router or route.include_in_schema:
                yield prefix + route.path, route


async def browser_login(app: object, name: str) -> AsyncClient:
    client = AsyncClient(transport=ASGITransport(app=app), base_url="http://test")  # type: ignore[arg-type]
    response = await client.post("/login", data={"name": name, "password": PASSWORD, "next": "/dashboard"})
    assert response.status_code == 303, response.text
    return client


async def test_no_expert_route_shows_register_information(app: object, client_for: ClientFactory) -> None:
    task = await synthetic_task(app, client_for, kind="classify", images=12, per_image=6, labels=CELLS)
    admin, setup = task.admin, task.setup
    injected = await admin.post(
        f"/api/v1/suggestion-sets/{task.source_set_id}/inject",
        json={"preset": "paper-classify", "name": "Bundle A"},
    )
    set_id = injected.json()["suggestion_set"]["id"]
    assignment = await admin.post(
        "/api/v1/assignments",
        json={"task_id": setup.task.id, "expert": "alice", "mode": "aided", "suggestion_set_id": set_id},
    )
    assert assignment.status_code == 201, assignment.text
    register = await register_of(admin, set_id)
    shown = (await admin.get(f"/api/v1/suggestion-sets/{set_id}")).json()["suggestions"]
    secrets = secrets_of(
        register, {item["score"] for item in shown} | {e["score"] for e in register if e["score"]}
    )
    assert secrets.removed
    assert secrets.relabelled
    assert secrets.scores

    admin_view = (await admin.get(f"/api/v1/suggestion-sets/{set_id}/register")).text
    first_removed = next(entry for entry in register if entry["kind"] == "removed")
    assert leaks(admin_view, secrets, None), "the leak detector must notice the register itself"
    assert leaks(
        json.dumps(
            [
                {
                    "image_id": first_removed["image_id"],
                    **dict(zip(BOX_KEYS, first_removed["ref_box"], strict=True)),
                }
            ]
        ),
        secrets,
        None,
    )

    alice = await client_for("alice")
    ids = await _expert_activity(alice, setup.images, setup.task.id)
    ids.update(
        study_id=setup.study.id, task_id=setup.task.id, set_id=set_id, assignment_id=assignment.json()["id"]
    )
    browser = await browser_login(app, "alice")
    try:
        checked = await _call_every_get_route(
            app, alice, browser, ids, [image.id for image in setup.images], secrets
        )
    finally:
        await browser.aclose()
    assert checked >= 30, f"only {checked} expert responses were checked"


async def _expert_activity(alice: AsyncClient, images: list[Any], task_id: int) -> dict[str, int]:
    """Open every image in aided mode, accept, relabel and delete a suggestion, open a visit."""
    annotations: list[dict[str, Any]] = []
    for image in images:
        response = await alice.post(f"/api/v1/images/{image.id}/open?mode=aided")
        assert response.status_code == 200, response.text
        annotations.extend(response.json())
    assert all(item["origin"] == "suggestion" for item in annotations)
    first, second, third = annotations[:3]
    await alice.post(f"/api/v1/annotations/{first['id']}/accept", json={"version": first["version"]})
    await alice.patch(
        f"/api/v1/annotations/{second['id']}", json={"version": second["version"], "label": CELLS[0]}
    )
    await alice.post(f"/api/v1/annotations/{third['id']}/delete", json={"version": third["version"]})
    visit = await alice.post(f"/api/v1/images/{images[0].id}/visits?mode=aided")
    assert visit.status_code == 201, visit.text
    return {"annotation_id": first["id"], "visit_id": visit.json()["id"], "job_id": 1}


FIXED_PARAMS = {
    "level": "0",
    "col": "0",
    "row": "0",
    "table": "concordance",
    "task": "1",
    "plot": "concordance",
    "fmt": "svg",
    "detector_id": "1",
    "run_id": "1",
    "slide_id": "1",
    "grant": "1-1-forged",  # refused: a granted tile answers only pixels anyway
}


async def _call_every_get_route(
    app: object,
    alice: AsyncClient,
    browser: AsyncClient,
    ids: dict[str, int],
    image_ids: list[int],
    secrets: Secrets,
) -> int:
    routes = list(mounted_routes())
    openapi_paths = set(app.openapi()["paths"])  # type: ignore[attr-defined]
    missing = openapi_paths - {path for path, _ in routes}
    assert not missing, f"routes the blinding test does not reach: {missing}"
    checked = 0
    for path, route in routes:
        if "GET" not in (route.methods or set()):
            continue
        for url, image_id in _urls(path, route, ids, image_ids):
            for client in (alice, browser):
                response = await client.get(url, params={"mode": "aided", "include_deleted": "true"})
                assert response.status_code < 500, (url, response.text)
                if response.headers.get("content-type", "").startswith("image/"):
                    continue
                found = sorted(set(leaks(response.text, secrets, image_id)))
                assert not found, f"GET {url} shows register information to an expert: {found}"
                checked += 1
    return checked


def path_params(route: APIRoute) -> list[str]:
    """The parameters the path names (also those that only a dependency reads: StudyDep, TaskDep …)."""
    return list(route.param_convertors)


def _urls(
    path: str, route: APIRoute, ids: dict[str, int], image_ids: list[int]
) -> Iterator[tuple[str, int | None]]:
    names = path_params(route)
    unknown = [name for name in names if name not in ids and name not in FIXED_PARAMS and name != "image_id"]
    assert not unknown, f"{path}: give the blinding test a real value for {unknown}"
    values = {name: str(ids.get(name, FIXED_PARAMS.get(name))) for name in names if name != "image_id"}
    for image_id in image_ids if "image_id" in names else [None]:
        filled = path.format(**values, **({} if image_id is None else {"image_id": image_id}))
        yield filled, image_id


async def test_experts_get_403_on_every_suggestion_set_route(app: object, client_for: ClientFactory) -> None:
    task = await synthetic_task(app, client_for, kind="classify", images=12, per_image=6, labels=CELLS)
    injected = await task.admin.post(
        f"/api/v1/suggestion-sets/{task.source_set_id}/inject", json={"preset": "paper-classify"}
    )
    set_id = injected.json()["suggestion_set"]["id"]
    await task.admin.post(
        "/api/v1/assignments",
        json={"task_id": task.setup.task.id, "expert": "alice", "mode": "aided", "suggestion_set_id": set_id},
    )
    alice = await client_for("alice")
    values = {"set_id": set_id, "task_id": task.setup.task.id}
    guarded = [(p, r) for p, r in mounted_routes() if "suggestion-set" in p or "injection" in p]
    assert len(guarded) >= 7
    for path, route in guarded:
        url = path.format(**{name: values[name] for name in path_params(route)})
        for method in sorted(route.methods or set()):
            body = {"preset": "paper-classify"} if method == "POST" else None
            response = await alice.request(method, url, json=body)
            assert response.status_code == 403, (method, url, response.text)
            assert not leaks(response.text, secrets_of(await register_of(task.admin, set_id), set()), None)
