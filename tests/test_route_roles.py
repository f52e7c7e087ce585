"""Every core API route × role: anonymous, assigned expert, other expert, admin."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from httpx import AsyncClient

from tests.conftest import ClientFactory
from tests.factories import make_study, make_user, png_bytes

ROLES = ("anonymous", "expert", "other", "admin")


@dataclass(frozen=True)
class Ids:
    study: int
    task: int
    image: int
    assignment: int
    aided_assignment: int
    annotation: int
    visit: int


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    expected: tuple[int, int, int, int]
    body: Callable[[Ids], Any] | None = None
    files: bool = False


BOX = {"label": "tumor", "x1": 5, "y1": 5, "x2": 25, "y2": 25}

CASES = [
    Case("GET", "/api/v1/me", (401, 200, 200, 200)),
    Case("GET", "/api/v1/users", (401, 403, 403, 200)),
    Case("POST", "/api/v1/users", (401, 403, 403, 201), lambda ids: {"name": "newbie", "role": "expert"}),
    Case("POST", "/api/v1/me/tokens", (401, 201, 201, 201)),
    Case("GET", "/api/v1/studies", (401, 200, 200, 200)),
    Case("POST", "/api/v1/studies", (401, 403, 403, 201), lambda ids: {"name": "another study"}),
    Case("GET", "/api/v1/studies/{study}", (401, 200, 404, 200)),
    Case("GET", "/api/v1/studies/{study}/tasks", (401, 200, 404, 200)),
    Case(
        "POST",
        "/api/v1/studies/{study}/tasks",
        (401, 403, 403, 201),
        lambda ids: {"name": "t2", "kind": "detect", "labels": [{"name": "mitosis"}]},
    ),
    Case("GET", "/api/v1/tasks/{task}", (401, 200, 404, 200)),
    Case("GET", "/api/v1/tasks/{task}/labels", (401, 200, 404, 200)),
    Case("GET", "/api/v1/tasks/{task}/images", (401, 200, 404, 200)),
    Case("POST", "/api/v1/tasks/{task}/images", (401, 403, 403, 201), files=True),
    Case("GET", "/api/v1/images/{image}", (401, 200, 404, 200)),
    Case("GET", "/api/v1/images/{image}/region?x=0&y=0&w=50&h=40", (401, 200, 404, 200)),
    Case("GET", "/api/v1/images/{image}/tiles/0/0/0", (401, 200, 404, 200)),
    Case("GET", "/api/v1/images/{image}/thumbnail", (401, 200, 404, 200)),
    Case("GET", "/api/v1/tasks/{task}/ground-truth", (401, 403, 403, 200)),
    Case(
        "POST",
        "/api/v1/tasks/{task}/ground-truth",
        (401, 403, 403, 201),
        lambda ids: {"objects": [{"image": "img0.png", **BOX}]},
    ),
    Case("GET", "/api/v1/assignments", (401, 200, 200, 200)),
    Case(
        "POST",
        "/api/v1/assignments",
        (401, 403, 403, 201),
        lambda ids: {"task_id": ids.task, "expert": "carol", "mode": "training"},
    ),
    Case("POST", "/api/v1/assignments/{assignment}/finish", (401, 200, 404, 404)),
    Case(
        "POST",
        "/api/v1/assignments/{aided_assignment}/washout-override",
        (401, 403, 403, 200),
        lambda ids: {"reason": "pilot run"},
    ),
    Case("GET", "/api/v1/images/{image}/annotations?mode=unaided", (401, 200, 404, 404)),
    Case("POST", "/api/v1/images/{image}/annotations?mode=unaided", (401, 201, 404, 404), lambda ids: BOX),
    Case(
        "POST",
        "/api/v1/images/{image}/annotations/bulk?mode=unaided",
        (401, 201, 404, 404),
        lambda ids: [BOX],
    ),
    Case(
        "PATCH",
        "/api/v1/annotations/{annotation}",
        (401, 200, 404, 404),
        lambda ids: {"version": 1, "label": "normal"},
    ),
    Case("POST", "/api/v1/annotations/{annotation}/delete", (401, 200, 404, 404), lambda ids: {"version": 1}),
    Case("GET", "/api/v1/images/{image}/events?mode=unaided", (401, 200, 404, 404)),
    Case("POST", "/api/v1/images/{image}/visits?mode=unaided", (401, 201, 404, 404)),
    Case("GET", "/api/v1/images/{image}/visits?mode=unaided", (401, 200, 404, 404)),
    Case("POST", "/api/v1/visits/{visit}/heartbeat", (401, 200, 404, 404)),
    Case("POST", "/api/v1/visits/{visit}/close", (401, 200, 404, 404)),
    Case("POST", "/api/v1/images/{image}/done?mode=unaided", (401, 200, 404, 404)),
    Case("GET", "/api/v1/studies/{study}/training-runs", (401, 403, 403, 200)),
    Case("GET", "/api/v1/studies/{study}/training-runs.csv", (401, 403, 403, 200)),
    Case("GET", "/api/v1/studies/{study}/training-runs/figure.svg", (401, 403, 403, 200)),
]


async def _prepare(app: object, client_for: ClientFactory) -> Ids:
    setup = await make_study(app, experts=("alice",), modes=("unaided", "aided"))
    await make_user(app, "carol")
    alice = await client_for("alice")
    image = setup.images[0].id
    annotation = (await alice.post(f"/api/v1/images/{image}/annotations?mode=unaided", json=BOX)).json()
    visit = (await alice.post(f"/api/v1/images/{image}/visits?mode=unaided")).json()
    assignments = {item["mode"]: item["id"] for item in (await alice.get("/api/v1/assignments")).json()}
    return Ids(
        study=setup.study.id,
        task=setup.task.id,
        image=image,
        assignment=assignments["unaided"],
        aided_assignment=assignments["aided"],
        annotation=annotation["id"],
        visit=visit["id"],
    )


async def _send(client: AsyncClient, case: Case, ids: Ids) -> int:
    path = case.path.format(**ids.__dict__)
    if case.files:
        files = [("files", ("upload.png", png_bytes(seed=9), "image/png"))]
        return (await client.post(path, files=files)).status_code
    body = case.body(ids) if case.body else None
    return (await client.request(case.method, path, json=body)).status_code


@pytest.mark.parametrize("case", CASES, ids=lambda case: f"{case.method} {case.path}")
async def test_route_answers_each_role_as_specified(
    app: object, client_for: ClientFactory, anonymous: AsyncClient, case: Case
) -> None:
    ids = await _prepare(app, client_for)
    clients: dict[str, Callable[[], Awaitable[AsyncClient]]] = {
        "expert": lambda: client_for("alice"),
        "other": lambda: client_for("carol"),
        "admin": lambda: client_for("admin"),
    }
    for role, expected in zip(ROLES, case.expected, strict=True):
        client = anonymous if role == "anonymous" else await clients[role]()
        status = await _send(client, case, ids)
        assert status == expected, f"{role}: {case.method} {case.path} gave {status}, expected {expected}"
        if 200 <= status < 300 and case.method != "GET":
            ids = await _prepare_again(app, client_for, ids)


async def _prepare_again(app: object, client_for: ClientFactory, ids: Ids) -> Ids:
    """A write succeeded: later roles get fresh objects where the write consumed them."""
    alice = await client_for("alice")
    annotation = (await alice.post(f"/api/v1/images/{ids.image}/annotations?mode=unaided", json=BOX)).json()
    visit = (await alice.post(f"/api/v1/images/{ids.image}/visits?mode=unaided")).json()
    return Ids(
        **{
            **ids.__dict__,
            "annotation": annotation.get("id", ids.annotation),
            "visit": visit.get("id", ids.visit),
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
