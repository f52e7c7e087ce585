"""The access matrix: every route (OpenAPI document and page routes) × anonymous, expert, other expert, admin.

ACCESS is data, one entry per route: who may call it, and what to send so that an allowed caller gets
through. The routes are read from the application, and a route without an entry fails the test, so a new
route cannot go unchecked. Who may:

- public: everyone, logged in or not;
- user: any logged-in user;
- member: the expert assigned in the study and the admin; another expert gets 404 (it is not theirs);
- owner: only the assigned expert, for their own work; another expert and the admin get 404;
- admin: the admin only; an expert gets 403.

Anonymous callers get 401 from the API and a 303 to the login page from pages.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

import pytest
from fastapi.routing import APIRoute, iter_route_contexts
from httpx import AsyncClient, Response

from tests.conftest import ClientFactory
from tests.factories import make_study, make_user, png_bytes

ROLES = ("anonymous", "expert", "other", "admin")
Who = Literal["public", "user", "member", "owner", "admin"]
BOX = {"label": "tumor", "x1": 5, "y1": 5, "x2": 25, "y2": 25}
SMALL_PLAN = {"kind": "grade", "experts": [2], "images": [1], "repetitions": 20}
FRAMEWORK_PATHS = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}


@dataclass(frozen=True)
class Ids:
    study_id: int
    task_id: int
    image_id: int
    assignment_id: int
    aided_assignment_id: int
    annotation_id: int
    visit_id: int
    set_id: int
    job_id: int


@dataclass(frozen=True)
class Rule:
    who: Who
    ok: int | None = None  # the allowed callers' exact status; None: anything but a refusal or a 5xx
    body: Callable[[Ids], Any] | None = None
    query: str = ""
    files: bool = False
    form: dict[str, str] | None = None
    path_ids: dict[str, str] | None = None  # path parameter → Ids field, where the name alone is ambiguous


ACCESS: dict[str, Rule] = {
    "GET /api/v1/health": Rule("public", 200),
    "GET /healthz": Rule("public", 200),
    "GET /readyz": Rule("public", 200),
    "GET /metrics": Rule("public", 200),  # open by default, as Prometheus expects (CONCORD_METRICS_TOKEN)
    "GET /api/v1/me": Rule("user", 200),
    "GET /api/v1/users": Rule("admin", 200),
    "POST /api/v1/users": Rule("admin", 201, lambda ids: {"name": "newbie", "role": "expert"}),
    "POST /api/v1/me/tokens": Rule("user", 201),
    "GET /api/v1/me/tokens": Rule("user", 200),
    # Nobody's token: every user gets 404 (another user's token reads as missing too).
    "DELETE /api/v1/me/tokens/{token_id}": Rule("user", 404),
    "POST /api/v1/users/{user_id}/disable": Rule("admin", 404),
    "POST /api/v1/users/{user_id}/enable": Rule("admin", 404),
    "GET /api/v1/studies": Rule("user", 200),
    "POST /api/v1/studies": Rule("admin", 201, lambda ids: {"name": "another study"}),
    "GET /api/v1/studies/{study_id}": Rule("member", 200),
    "GET /api/v1/studies/{study_id}/tasks": Rule("member", 200),
    "POST /api/v1/studies/{study_id}/tasks": Rule(
        "admin", 201, lambda ids: {"name": "t2", "kind": "detect", "labels": [{"name": "mitosis"}]}
    ),
    "GET /api/v1/tasks/{task_id}": Rule("member", 200),
    "GET /api/v1/tasks/{task_id}/labels": Rule("member", 200),
    "GET /api/v1/tasks/{task_id}/images": Rule("member", 200),
    "POST /api/v1/tasks/{task_id}/images": Rule("admin", 201, files=True),
    "GET /api/v1/images/{image_id}": Rule("member", 200),
    "GET /api/v1/images/{image_id}/region": Rule("member", 200, query="x=0&y=0&w=50&h=40"),
    "GET /api/v1/images/{image_id}/tiles/{level}/{col}/{row}": Rule("member", 200),
    # A forged grant: every caller is refused (tests/images/test_tile_grants.py checks real ones).
    "GET /api/v1/images/{image_id}/granted-tiles/{grant}/{level}/{col}/{row}": Rule("user", 403),
    "GET /api/v1/images/{image_id}/thumbnail": Rule("member", 200),
    "GET /api/v1/tasks/{task_id}/ground-truth": Rule("admin", 200),
    # The matrix's upload sends `files`; a slide is one `file`: the admin gets through to 422.
    "POST /api/v1/studies/{study_id}/slides": Rule("admin", 422, files=True),
    "GET /api/v1/studies/{study_id}/slides": Rule("admin", 200),
    "GET /api/v1/slides/{slide_id}": Rule("admin", 404),  # no such slide
    "GET /api/v1/slides/{slide_id}/thumbnail": Rule("admin", 404),
    "GET /api/v1/slides/{slide_id}/regions": Rule("admin", 404),
    "POST /api/v1/tasks/{task_id}/slide-regions": Rule(
        "admin",
        404,
        lambda ids: {"slide_id": 999999, "regions": [{"name": "r", "x": 0, "y": 0, "width": 1, "height": 1}]},
    ),
    "POST /api/v1/tasks/{task_id}/ground-truth": Rule(
        "admin", 201, lambda ids: {"objects": [{"image": "img0.png", **BOX}]}
    ),
    "GET /api/v1/assignments": Rule("user", 200),
    "POST /api/v1/assignments": Rule(
        "admin", 201, lambda ids: {"task_id": ids.task_id, "expert": "carol", "mode": "training"}
    ),
    "POST /api/v1/assignments/{assignment_id}/finish": Rule("owner", 200),
    "POST /api/v1/assignments/{assignment_id}/washout-override": Rule(
        "admin", 200, lambda ids: {"reason": "pilot run"}, path_ids={"assignment_id": "aided_assignment_id"}
    ),
    "POST /api/v1/images/{image_id}/open": Rule("owner", 200, query="mode=unaided"),
    "GET /api/v1/images/{image_id}/annotations": Rule("owner", 200, query="mode=unaided"),
    "POST /api/v1/images/{image_id}/annotations": Rule("owner", 201, lambda ids: BOX, query="mode=unaided"),
    "POST /api/v1/images/{image_id}/annotations/bulk": Rule(
        "owner", 201, lambda ids: [BOX], query="mode=unaided"
    ),
    "PATCH /api/v1/annotations/{annotation_id}": Rule(
        "owner", 200, lambda ids: {"version": 1, "label": "normal"}
    ),
    "POST /api/v1/annotations/{annotation_id}/delete": Rule("owner", 200, lambda ids: {"version": 1}),
    "POST /api/v1/annotations/{annotation_id}/restore": Rule("owner", None, lambda ids: {"version": 1}),
    "POST /api/v1/annotations/{annotation_id}/accept": Rule("owner", None, lambda ids: {"version": 1}),
    "GET /api/v1/images/{image_id}/events": Rule("owner", 200, query="mode=unaided"),
    "POST /api/v1/images/{image_id}/visits": Rule("owner", 201, query="mode=unaided"),
    "GET /api/v1/images/{image_id}/visits": Rule("owner", 200, query="mode=unaided"),
    "POST /api/v1/visits/{visit_id}/heartbeat": Rule("owner", 200),
    "POST /api/v1/visits/{visit_id}/close": Rule("owner", 200),
    "POST /api/v1/images/{image_id}/done": Rule("owner", 200, query="mode=unaided"),
    "POST /api/v1/jobs": Rule("admin", 201, lambda ids: {"kind": "sleep", "params": {"seconds": 0}}),
    "GET /api/v1/jobs": Rule("admin", 200),
    "GET /api/v1/jobs/kinds": Rule("admin", 200),
    "GET /api/v1/jobs/{job_id}": Rule("admin", 200),
    "POST /api/v1/jobs/{job_id}/cancel": Rule("admin", 200),
    "GET /api/v1/tasks/{task_id}/suggestion-sets": Rule("admin", 200),
    "POST /api/v1/tasks/{task_id}/suggestion-sets": Rule(
        "admin", 201, lambda ids: {"name": "s2", "suggestions": [{"image": "img0.png", **BOX}]}
    ),
    "GET /api/v1/suggestion-sets/{set_id}": Rule("admin", 200),
    "GET /api/v1/suggestion-sets/{set_id}/register": Rule("admin", 200),
    "POST /api/v1/suggestion-sets/{set_id}/inject/preview": Rule(
        "admin", None, lambda ids: {"preset": "none"}
    ),
    "POST /api/v1/suggestion-sets/{set_id}/inject": Rule("admin", None, lambda ids: {"preset": "none"}),
    "GET /api/v1/injection-presets": Rule("admin", 200),
    "POST /api/v1/import/exact": Rule("admin", None, files=True),
    "GET /api/v1/studies/{study_id}/metrics": Rule("admin", 200),
    "GET /api/v1/studies/{study_id}/metrics/{table}.csv": Rule("admin", 200),
    "GET /api/v1/studies/{study_id}/export.zip": Rule("admin", 200),
    "GET /api/v1/tasks/{task_id}/annotations/export": Rule("admin", 200),
    "GET /api/v1/tasks/{task_id}/ground-truth/export": Rule("admin", 200),
    "GET /api/v1/tasks/{task_id}/consensus/export": Rule("admin", 200, query="mode=aided"),
    "POST /api/v1/detectors": Rule("admin", None, files=True),
    "GET /api/v1/detectors": Rule("admin", 200),
    "GET /api/v1/detectors/{detector_id}": Rule("admin", 404),  # none registered: the admin is let through
    "POST /api/v1/tasks/{task_id}/detect": Rule(
        "admin", 404, lambda ids: {"detector_id": 1}
    ),  # none registered
    "GET /": Rule("user"),  # a redirect: the dashboard, or the login page
    "GET /login": Rule("public"),  # the form, or a redirect when logged in
    "POST /login": Rule("public", form={"name": "nobody", "password": "wrong-password"}),
    "POST /logout": Rule("public", 303),
    "GET /dashboard": Rule("user", 200),
    "GET /admin": Rule("admin", 200),
    "GET /admin/studies": Rule("admin", 200),
    "POST /admin/studies": Rule("admin", form={"name": "page study"}),
    "GET /admin/studies/{study_id}": Rule("admin", 200),
    "POST /admin/studies/{study_id}/tasks": Rule("admin", form={"name": "t3", "labels": "a, b"}),
    "POST /admin/studies/{study_id}/experts": Rule(
        "admin", form={"name": "dave", "password": "long-password-1"}
    ),
    "POST /admin/studies/{study_id}/assignments": Rule("admin", form={}),
    "POST /admin/tasks/{task_id}/images": Rule("admin", files=True),
    "GET /work/{assignment_id}": Rule("owner"),
    "GET /work/{assignment_id}/images/{image_id}": Rule("owner", 200),
    # The reference is for training mode only: the owner of an unaided assignment is refused too.
    "GET /work/{assignment_id}/images/{image_id}/reference": Rule("owner", 403),
    "GET /studies/{study_id}/evaluation": Rule("admin", 200),
    "GET /admin/evaluation": Rule("admin", 200),
    # Finishing in the pages needs every image done: the owner gets 409 (an image is left), others 404.
    "GET /work/{assignment_id}/finish": Rule("owner", 200),
    "POST /work/{assignment_id}/finish": Rule("owner", 409, form={}),
    "POST /admin/assignments/{assignment_id}/washout-override": Rule(
        "admin", 303, form={"reason": "pilot run"}, path_ids={"assignment_id": "aided_assignment_id"}
    ),
    "GET /favicon.ico": Rule("public", 200),
    "GET /studies/{study_id}/evaluation/plots/{task}/{plot}.{fmt}": Rule("admin"),
    "GET /studies/{study_id}/evaluation/intervals/{task}": Rule("admin"),
    "GET /admin/jobs": Rule("admin", 200),
    "GET /admin/jobs/{job_id}/progress": Rule("admin", 200),
    "POST /admin/jobs/{job_id}/cancel": Rule("admin", form={}),
    "GET /admin/tasks/{task_id}/suggestions": Rule("admin", 200),
    "GET /admin/suggestion-sets/{set_id}/register": Rule("admin", 200),
    "POST /admin/suggestion-sets/{set_id}/preview": Rule("admin", form={"preset": "none"}),
    "POST /admin/suggestion-sets/{set_id}/inject": Rule("admin", form={"preset": "none"}),
    "POST /admin/tasks/{task_id}/detect": Rule("admin", form={"detector_id": ""}),
    "GET /admin/tasks/{task_id}/training": Rule("admin", 200),
    "POST /admin/tasks/{task_id}/training": Rule("admin", form={}),
    "GET /admin/training-runs/{run_id}/curves.svg": Rule("admin", 404),  # no such run
    "GET /api/v1/studies/{study_id}/training-runs": Rule("admin", 200),
    "GET /api/v1/studies/{study_id}/training-runs.csv": Rule("admin", 200),
    "GET /api/v1/studies/{study_id}/training-runs/figure.{fmt}": Rule("admin", 200),
    "GET /api/v1/training-runs/{run_id}/model.onnx": Rule("admin", 404),  # no such run
    # the prepared study already has an expert's visit: a study with real work cannot become simulated
    "POST /api/v1/studies/{study_id}/simulation": Rule("admin", 409, body=lambda ids: {"experts": 1}),
    "GET /api/v1/tasks/{task_id}/simulation-scene": Rule("admin", 200),
    "POST /api/v1/plan": Rule("admin", 200, body=lambda ids: SMALL_PLAN),
    "POST /api/v1/plan/figure.svg": Rule("admin", 200, body=lambda ids: SMALL_PLAN),
    "GET /admin/plan": Rule("admin", 200),
    "GET /admin/plan/figure.svg": Rule("admin", 200, query="kind=grade&experts=2&images=1&repetitions=20"),
    "POST /admin/plan/training-question": Rule("admin", 422, form={"experts": "2,3"}),  # refused: no job
    "GET /admin/plan/training-question": Rule("admin", 303),  # the page's section: HTMX only, else the page
    "GET /admin/plan/training-question/{job_id}/figure.svg": Rule("admin", 404),  # a sleep job, no question
}

ALLOWED: dict[Who, set[str]] = {
    "public": set(ROLES),
    "user": {"expert", "other", "admin"},
    "member": {"expert", "admin"},
    "owner": {"expert"},
    "admin": {"admin"},
}


def _routes() -> set[str]:
    """Every operation of the OpenAPI document and every other route of the app (pages)."""
    from app.main import create_app

    app = create_app()
    routes = {
        f"{method.upper()} {path}"
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    for context in iter_route_contexts(app.routes):
        if isinstance(context.original_route, APIRoute) and context.path not in FRAMEWORK_PATHS:
            routes.update(f"{method} {context.path}" for method in context.methods or ())
    return routes


def test_every_route_has_an_access_entry() -> None:
    routes = _routes()
    assert sorted(routes - ACCESS.keys()) == [], "routes without an entry in ACCESS"
    assert sorted(ACCESS.keys() - routes) == [], "entries in ACCESS for routes that do not exist"


async def _prepare(app: object, client_for: ClientFactory) -> Ids:
    setup = await make_study(app, experts=("alice",), modes=("unaided", "aided"))
    await make_user(app, "carol")
    alice, admin = await client_for("alice"), await client_for("admin")
    image = setup.images[0].id
    annotation = (await alice.post(f"/api/v1/images/{image}/annotations?mode=unaided", json=BOX)).json()
    visit = (await alice.post(f"/api/v1/images/{image}/visits?mode=unaided")).json()
    assignments = {item["mode"]: item["id"] for item in (await alice.get("/api/v1/assignments")).json()}
    suggestions = {"name": "s", "suggestions": [{"image": "img0.png", **BOX}]}
    suggestion_set = (
        await admin.post(f"/api/v1/tasks/{setup.task.id}/suggestion-sets", json=suggestions)
    ).json()
    job = (await admin.post("/api/v1/jobs", json={"kind": "sleep", "params": {"seconds": 0}})).json()
    return Ids(
        study_id=setup.study.id,
        task_id=setup.task.id,
        image_id=image,
        assignment_id=assignments["unaided"],
        aided_assignment_id=assignments["aided"],
        annotation_id=annotation["id"],
        visit_id=visit["id"],
        set_id=suggestion_set["id"],
        job_id=job["id"],
    )


def _url(route: str, rule: Rule, ids: Ids) -> str:
    path = route.split(" ", 1)[1]
    values: dict[str, Any] = {**ids.__dict__, "detector_id": 1, "level": 0, "col": 0, "row": 0}
    values |= {"token_id": 999999, "user_id": 999999, "run_id": 999999, "slide_id": 999999}
    values |= {"grant": "1-99999999999-forged"}
    values |= {"table": "experts", "task": "task", "plot": "concordance", "fmt": "png"}
    for name, field in (rule.path_ids or {}).items():
        values[name] = getattr(ids, field)
    url = path.format(**values)
    return f"{url}?{rule.query}" if rule.query else url


async def _send(client: AsyncClient, route: str, rule: Rule, ids: Ids) -> Response:
    method = route.split(" ", 1)[0]
    url = _url(route, rule, ids)
    if rule.files:
        files = [("files", ("upload.png", png_bytes(seed=9), "image/png"))]
        return await client.request(method, url, files=files)
    if rule.form is not None:
        return await client.request(method, url, data=rule.form)
    return await client.request(method, url, json=rule.body(ids) if rule.body else None)


def _refusal(route: str, role: str, rule: Rule) -> int:
    if role == "anonymous":
        # Uploads are refused before their body is read, pages included: no redirect to the login form.
        return 401 if route.split(" ", 1)[1].startswith("/api/") or rule.files else 303
    return 403 if rule.who == "admin" else 404


def _check(route: str, rule: Rule, role: str, response: Response) -> None:
    status = response.status_code
    said = f"{role}: {route} gave {status}"
    if role not in ALLOWED[rule.who]:
        assert status == _refusal(route, role, rule), said
        if status == 303:
            assert response.headers["location"].startswith("/login"), said
        return
    if rule.ok is not None:
        assert status == rule.ok, f"{said}, expected {rule.ok}"
        return
    assert status < 500, said
    assert status not in (401, 403), said
    assert not response.headers.get("location", "").startswith("/login"), said


@pytest.mark.parametrize("route", sorted(ACCESS))
async def test_route_answers_each_role_as_the_matrix_says(
    app: object, client_for: ClientFactory, anonymous: AsyncClient, route: str
) -> None:
    rule = ACCESS[route]
    ids = await _prepare(app, client_for)
    clients: dict[str, Callable[[], Awaitable[AsyncClient]]] = {
        "expert": lambda: client_for("alice"),
        "other": lambda: client_for("carol"),
        "admin": lambda: client_for("admin"),
    }
    for role in ROLES:
        client = anonymous if role == "anonymous" else await clients[role]()
        response = await _send(client, route, rule, ids)
        _check(route, rule, role, response)
        if 200 <= response.status_code < 300 and not route.startswith("GET"):
            ids = await _prepare_again(client_for, ids)


async def _prepare_again(client_for: ClientFactory, ids: Ids) -> Ids:
    """A write succeeded: later roles get fresh objects where the write consumed them."""
    alice = await client_for("alice")
    annotation = (
        await alice.post(f"/api/v1/images/{ids.image_id}/annotations?mode=unaided", json=BOX)
    ).json()
    visit = (await alice.post(f"/api/v1/images/{ids.image_id}/visits?mode=unaided")).json()
    return Ids(
        **{
            **ids.__dict__,
            "annotation_id": annotation.get("id", ids.annotation_id),
            "visit_id": visit.get("id", ids.visit_id),
        }
    )


async def test_experts_see_only_their_own_annotations_and_events(
    app: object, client_for: ClientFactory
) -> None:
    setup = await make_study(app, experts=("alice", "bob"))
    alice, bob = await client_for("alice"), await client_for("bob")
    image = setup.images[0].id
    created = (await alice.post(f"/api/v1/images/{image}/annotations?mode=unaided", json=BOX)).json()
    assert (
        await bob.get(f"/api/v1/images/{image}/annotations?mode=unaided&include_deleted=true")
    ).json() == []
    assert (await bob.get(f"/api/v1/images/{image}/events?mode=unaided")).json() == []
    assert (
        await bob.patch(f"/api/v1/annotations/{created['id']}", json={"version": 1, "label": "normal"})
    ).status_code == 404
    assert [item["expert"] for item in (await bob.get("/api/v1/assignments")).json()] == ["bob"]
    assert (await bob.get(f"/api/v1/tasks/{setup.task.id}/ground-truth")).status_code == 403


async def test_invalid_token_is_rejected(anonymous: AsyncClient) -> None:
    response = await anonymous.get("/api/v1/me", headers={"Authorization": "Bearer cc_not-a-token"})
    assert response.status_code == 401
