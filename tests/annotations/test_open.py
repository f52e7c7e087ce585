"""Opening an image is an explicit POST: no GET route changes anything, opening twice changes nothing more,
and an aided expert's suggestions become their objects only when the image is opened (or first edited)."""

from dataclasses import dataclass, replace
from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.models import Assignment, Base, SuggestionSet
from tests.conftest import ClientFactory
from tests.factories import make_study
from tests.test_route_roles import ACCESS, ALLOWED, Ids, _routes, _url

BOXES = [
    {"label": "tumor", "x1": 5, "y1": 5, "x2": 25, "y2": 25},
    {"label": "normal", "x1": 60, "y1": 40, "x2": 90, "y2": 70},
]
NOTHING = 999_999  # the id of an object the fresh study does not have
# Authentication's own bookkeeping, not the request's doing: a token's last use (at most once a minute).
NOT_COMPARED = {("api_token", "last_used_at")}
Dump = dict[str, list[tuple[Any, ...]]]


@dataclass(frozen=True)
class Fresh:
    """An expert with an unaided and an aided assignment (washout overridden, suggestions on image 0),
    neither opened yet, and the ids to fill in every route's path."""

    ids: Ids
    aided_ids: Ids
    set_id: int
    suggestions: int


async def _fresh(app: object, client_for: ClientFactory) -> Fresh:
    setup = await make_study(app, experts=("alice",), modes=("unaided",))
    admin = await client_for("admin")
    task = setup.task.id
    suggestion_set = {"name": "s", "suggestions": [{"image": "img0.png", **box} for box in BOXES]}
    set_id = (await admin.post(f"/api/v1/tasks/{task}/suggestion-sets", json=suggestion_set)).json()["id"]
    aided_assignment = {"task_id": task, "expert": "alice", "mode": "aided", "suggestion_set_id": set_id}
    aided = (await admin.post("/api/v1/assignments", json=aided_assignment)).json()["id"]
    override = {"reason": "pilot run"}
    assert (
        await admin.post(f"/api/v1/assignments/{aided}/washout-override", json=override)
    ).status_code == 200
    alice = await client_for("alice")
    unaided = next(a["id"] for a in (await alice.get("/api/v1/assignments")).json() if a["mode"] == "unaided")
    ids = Ids(
        study_id=setup.study.id,
        task_id=task,
        image_id=setup.images[0].id,
        assignment_id=unaided,
        aided_assignment_id=aided,
        annotation_id=NOTHING,
        visit_id=NOTHING,
        set_id=set_id,
        job_id=NOTHING,
    )
    return Fresh(ids, replace(ids, assignment_id=aided), set_id, len(BOXES))


async def _dump(sessionmaker: async_sessionmaker[AsyncSession]) -> Dump:
    """Every row of every table, in primary-key order (all columns but NOT_COMPARED)."""
    dump = {}
    async with sessionmaker() as session:
        for table in Base.metadata.sorted_tables:
            columns = [column for column in table.columns if (table.name, column.name) not in NOT_COMPARED]
            rows = await session.execute(select(*columns).order_by(*table.primary_key.columns))
            dump[table.name] = [tuple(row) for row in rows]
    return dump


def _changes(before: Dump, after: Dump) -> dict[str, tuple[int, int]]:
    """The tables that changed, with their row counts before and after."""
    return {name: (len(before[name]), len(after[name])) for name in before if before[name] != after[name]}


def _get_routes() -> list[str]:
    return sorted(route for route in _routes() if route.startswith("GET "))


async def _get_everything(alice: AsyncClient, fresh: Fresh) -> dict[str, int]:
    """Every GET route of the app, as the expert, in both modes where a route takes one."""
    statuses = {}
    for route in _get_routes():
        rule = ACCESS[route]
        for mode, ids in (("unaided", fresh.ids), ("aided", fresh.aided_ids)):
            rule_of_mode = replace(rule, query=rule.query.replace("mode=unaided", f"mode={mode}"))
            response = await alice.get(_url(route, rule_of_mode, ids))
            assert response.status_code < 500, f"{route} ({mode}): {response.status_code}"
            statuses[f"{route} ({mode})"] = response.status_code
    return statuses


async def test_no_get_route_changes_the_database(
    app: object, client_for: ClientFactory, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    fresh = await _fresh(app, client_for)
    alice = await client_for("alice")
    before = await _dump(sessionmaker)

    statuses = await _get_everything(alice, fresh)

    assert _changes(before, await _dump(sessionmaker)) == {}
    # The expert's own routes really ran (not refused), the workspace page in both modes included.
    for route in _get_routes():
        rule = ACCESS[route]
        if "expert" in ALLOWED[rule.who] and rule.ok == 200:
            assert statuses[f"{route} (unaided)"] == statuses[f"{route} (aided)"] == 200, route
    assert "GET /work/{assignment_id}/images/{image_id} (aided)" in statuses


async def test_the_route_list_covers_the_expert_routes() -> None:
    routes = _get_routes()
    assert "GET /api/v1/images/{image_id}/annotations" in routes
    assert "GET /api/v1/images/{image_id}/events" in routes
    assert "GET /api/v1/images/{image_id}/visits" in routes
    assert "GET /work/{assignment_id}/images/{image_id}" in routes


async def test_aided_suggestions_appear_only_after_the_open(
    app: object, client_for: ClientFactory, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    fresh = await _fresh(app, client_for)
    alice = await client_for("alice")
    image = f"/api/v1/images/{fresh.ids.image_id}"

    assert (await alice.get(f"{image}/annotations?mode=aided")).json() == []
    assert (await alice.get(f"{image}/events?mode=aided")).json() == []
    assert await _opened_and_locked(sessionmaker, fresh) == (False, False)

    opened = await alice.post(f"{image}/open?mode=aided")
    assert opened.status_code == 200
    objects = opened.json()
    assert len(objects) == fresh.suggestions
    assert {(o["label"], o["x1"], o["y1"]) for o in objects} == {
        (b["label"], b["x1"], b["y1"]) for b in BOXES
    }
    assert (await alice.get(f"{image}/annotations?mode=aided")).json() == objects
    assert await _opened_and_locked(sessionmaker, fresh) == (True, True)


async def _opened_and_locked(
    sessionmaker: async_sessionmaker[AsyncSession], fresh: Fresh
) -> tuple[bool, bool]:
    async with sessionmaker() as session:
        assignment = await session.get(Assignment, fresh.aided_ids.assignment_id)
        suggestion_set = await session.get(SuggestionSet, fresh.set_id)
        assert assignment is not None and suggestion_set is not None
        return assignment.opened_at is not None, suggestion_set.locked_at is not None


@pytest.mark.parametrize("mode", ["aided", "unaided"])
async def test_opening_again_changes_nothing_and_answers_the_same(
    app: object, client_for: ClientFactory, sessionmaker: async_sessionmaker[AsyncSession], mode: str
) -> None:
    fresh = await _fresh(app, client_for)
    alice = await client_for("alice")
    url = f"/api/v1/images/{fresh.ids.image_id}/open?mode={mode}"
    first = await alice.post(url)
    assert first.status_code == 200
    before = await _dump(sessionmaker)

    second = await alice.post(url)

    assert second.status_code == 200 and second.json() == first.json()
    assert _changes(before, await _dump(sessionmaker)) == {}
    assert len(first.json()) == (fresh.suggestions if mode == "aided" else 0)


async def test_an_edit_opens_the_image_without_an_explicit_open(
    app: object, client_for: ClientFactory
) -> None:
    fresh = await _fresh(app, client_for)
    alice = await client_for("alice")
    image = f"/api/v1/images/{fresh.ids.image_id}"
    created = await alice.post(f"{image}/annotations?mode=aided", json=BOXES[0])
    assert created.status_code == 201
    objects = (await alice.get(f"{image}/annotations?mode=aided")).json()
    assert len(objects) == fresh.suggestions + 1
    assert (await alice.post(f"{image}/open?mode=aided")).json() == objects


async def test_a_finished_assignment_is_not_opened(
    app: object, client_for: ClientFactory, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    fresh = await _fresh(app, client_for)
    alice = await client_for("alice")
    finished = await alice.post(f"/api/v1/assignments/{fresh.aided_ids.assignment_id}/finish")
    assert finished.status_code == 200
    before = await _dump(sessionmaker)

    opened = await alice.post(f"/api/v1/images/{fresh.ids.image_id}/open?mode=aided")

    assert opened.status_code == 200 and opened.json() == []
    assert _changes(before, await _dump(sessionmaker)) == {}


async def test_open_is_refused_like_the_other_routes_of_the_workspace(
    app: object, client_for: ClientFactory
) -> None:
    fresh = await _fresh(app, client_for)
    await make_study(app, experts=("carol", "dave"))
    alice, carol = await client_for("alice"), await client_for("carol")
    image = fresh.ids.image_id
    assert (await alice.post(f"/api/v1/images/{image}/open?mode=training")).status_code == 404
    assert (await alice.post(f"/api/v1/images/{image}/open?mode=sideways")).status_code == 422
    assert (await alice.post(f"/api/v1/images/{NOTHING}/open?mode=unaided")).status_code == 404
    assert (await carol.post(f"/api/v1/images/{image}/open?mode=unaided")).status_code == 404
