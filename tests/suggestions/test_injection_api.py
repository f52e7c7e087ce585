"""Suggestion-set import and error injection over the API: counts, determinism, refusals, immutability."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from httpx import AsyncClient

from tests.conftest import ClientFactory
from tests.factories import StudySetup, make_study

GRADES = ("0", "1", "2", "3", "4")
CELLS = ("neutrophil", "eosinophil", "mast cell", "macrophage", "lymphocyte")


@dataclass
class SyntheticTask:
    setup: StudySetup
    admin: AsyncClient
    source_set_id: int
    truth: list[dict[str, Any]]
    suggestions: list[dict[str, Any]]


def cell_box(index: int) -> tuple[int, int, int, int]:
    """Cells of 20×20 px on a grid inside the factories' 200×150 images (rows at y = 10, 55)."""
    x1, y1 = 10 + (index % 4) * 45, 10 + (index // 4) * 45
    return x1, y1, x1 + 20, y1 + 20


def objects_for(
    setup: StudySetup, per_image: int, candidates: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    labels = [label.name for label in setup.labels]
    truth: list[dict[str, Any]] = []
    suggestions: list[dict[str, Any]] = []
    for image_index, image in enumerate(setup.images):
        for index in range(per_image):
            x1, y1, x2, y2 = cell_box(index)
            label = labels[(image_index + index) % len(labels)]
            obj = {"image": image.name, "label": label, "x1": x1, "y1": y1, "x2": x2, "y2": y2}
            truth.append(obj)
            score = round(((image_index * 7 + index * 13) % 100) / 100 + 0.003, 4)
            suggestions.append({**obj, "score": score})
        for index in range(candidates):
            x1 = 10 + index * 30
            score = round(((image_index * 11 + index * 17) % 97) / 97 + 0.001, 4)
            suggestions.append(
                {
                    "image": image.name,
                    "label": labels[0],
                    "x1": x1,
                    "y1": 110,
                    "x2": x1 + 20,
                    "y2": 130,
                    "score": score,
                }
            )
    return truth, suggestions


async def synthetic_task(
    app: object,
    client_for: ClientFactory,
    *,
    kind: str,
    images: int,
    per_image: int,
    labels: tuple[str, ...],
    candidates: int = 0,
    modes: tuple[str, ...] = (),
) -> SyntheticTask:
    """A task with ground truth and an imported source set that equals it (plus detector candidates)."""
    setup = await make_study(app, image_count=images, labels=labels, kind=kind, modes=modes)
    admin = await client_for("admin")
    truth, suggestions = objects_for(setup, per_image, candidates)
    uploaded = await admin.post(f"/api/v1/tasks/{setup.task.id}/ground-truth", json={"objects": truth})
    assert uploaded.status_code == 201, uploaded.text
    imported = await admin.post(
        f"/api/v1/tasks/{setup.task.id}/suggestion-sets", json={"name": "source", "suggestions": suggestions}
    )
    assert imported.status_code == 201, imported.text
    return SyntheticTask(setup, admin, imported.json()["id"], truth, suggestions)


async def register_of(client: AsyncClient, set_id: int) -> list[dict[str, Any]]:
    response = await client.get(f"/api/v1/suggestion-sets/{set_id}/register")
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()
    return entries


async def canonical_set(client: AsyncClient, set_id: int) -> bytes:
    """Suggestions and register of a set without database ids, as canonical JSON bytes."""
    detail = (await client.get(f"/api/v1/suggestion-sets/{set_id}")).json()
    positions = {item["id"]: item["position"] for item in detail["suggestions"]}
    shown = [{k: v for k, v in item.items() if k != "id"} for item in detail["suggestions"]]
    register = [
        {
            **{k: v for k, v in entry.items() if k not in ("id", "suggestion_id")},
            "shown": positions.get(entry["suggestion_id"]),
        }
        for entry in await register_of(client, set_id)
    ]
    return json.dumps({"shown": shown, "register": register}, sort_keys=True, separators=(",", ":")).encode()


async def table_counts(client: AsyncClient, task_id: int) -> list[tuple[int, int, int]]:
    sets = (await client.get(f"/api/v1/tasks/{task_id}/suggestion-sets")).json()
    return [(item["id"], item["suggestion_count"], item["error_count"]) for item in sets]


# --- import ----------------------------------------------------------------------------------------


async def test_import_is_all_or_nothing(app: object, client_for: ClientFactory) -> None:
    setup = await make_study(app, image_count=2)
    admin = await client_for("admin")
    url = f"/api/v1/tasks/{setup.task.id}/suggestion-sets"
    good = {"image": "img0.png", "label": "tumor", "x1": 10, "y1": 10, "x2": 40, "y2": 40, "score": 0.9}
    bad_cases = [
        ({**good, "image": "missing.png"}, "no image named 'missing.png'"),
        ({**good, "label": "unicorn"}, "unknown label 'unicorn'"),
        ({**good, "x2": 250}, "not a box inside the image"),
    ]
    for bad, message in bad_cases:
        response = await admin.post(url, json={"name": "broken", "suggestions": [good, bad]})
        assert response.status_code == 422 and message in response.json()["detail"]
        assert "suggestion 1" in response.json()["detail"]
    assert (await admin.get(url)).json() == []

    created = await admin.post(
        url, json={"name": "detector v1", "suggestions": [good, {**good, "x1": 50, "x2": 80}]}
    )
    assert created.status_code == 201
    assert created.json()["source"] == "import" and created.json()["suggestion_count"] == 2
    detail = (await admin.get(f"/api/v1/suggestion-sets/{created.json()['id']}")).json()
    assert [(item["image"], item["label"], item["x1"], item["score"]) for item in detail["suggestions"]] == [
        ("img0.png", "tumor", 10, 0.9),
        ("img0.png", "tumor", 50, 0.9),
    ]


# --- presets over the API -------------------------------------------------------------------------


async def test_paper_classify_preview_matches_the_applied_set_and_its_register(
    app: object, client_for: ClientFactory
) -> None:
    task = await synthetic_task(app, client_for, kind="classify", images=12, per_image=6, labels=CELLS)
    admin = task.admin
    body = {"preset": "paper-classify", "overrides": {"seed": 4}}

    preview = await admin.post(f"/api/v1/suggestion-sets/{task.source_set_id}/inject/preview", json=body)
    assert preview.status_code == 200, preview.text
    assert preview.json()["counts"]["class_changed"] == {"none": 15}
    assert preview.json()["counts"]["removed"] == {"none": 5}
    assert len(preview.json()["images"]["class_changed"]) == 5
    assert await table_counts(admin, task.setup.task.id) == [(task.source_set_id, len(task.suggestions), 0)]

    applied = await admin.post(f"/api/v1/suggestion-sets/{task.source_set_id}/inject", json=body)
    assert applied.status_code == 201, applied.text
    out = applied.json()
    assert out["counts"] == preview.json()["counts"]
    injected = out["suggestion_set"]
    assert injected["source"] == "injected" and injected["parent_id"] == task.source_set_id
    assert injected["protocol"]["seed"] == 4 and injected["protocol"]["preset"] == "paper-classify"
    assert injected["suggestion_count"] == preview.json()["shown_count"] == len(task.truth) - 5 + 8

    register = await register_of(admin, injected["id"])
    changed = [entry for entry in register if entry["kind"] == "class_changed"]
    assert len(changed) == 15 and len({entry["image"] for entry in changed}) == 5
    removed = [entry for entry in register if entry["kind"] == "removed"]
    assert len({entry["image"] for entry in removed}) == 5
    assert not {entry["image"] for entry in removed} & {entry["image"] for entry in changed}
    detail = (await admin.get(f"/api/v1/suggestion-sets/{injected['id']}")).json()
    shown_by_id = {item["id"]: item for item in detail["suggestions"]}
    for entry in changed:
        shown = shown_by_id[entry["suggestion_id"]]
        assert shown["label"] == entry["shown_label"] != entry["ref_label"]
        assert (shown["x1"], shown["y1"], shown["x2"], shown["y2"]) == tuple(entry["shown_box"])
    assert all(entry["suggestion_id"] is None and entry["shown_box"] is None for entry in removed)
    assert await table_counts(admin, task.setup.task.id) == [
        (task.source_set_id, len(task.suggestions), 0),
        (injected["id"], injected["suggestion_count"], len(register)),
    ]


async def test_paper_grade_over_the_api(app: object, client_for: ClientFactory) -> None:
    task = await synthetic_task(app, client_for, kind="grade", images=15, per_image=6, labels=GRADES)
    response = await task.admin.post(
        f"/api/v1/suggestion-sets/{task.source_set_id}/inject", json={"preset": "paper-grade"}
    )
    assert response.status_code == 201, response.text
    register = await register_of(task.admin, response.json()["suggestion_set"]["id"])
    shifted = [entry for entry in register if entry["kind"] == "grade_shifted"]
    shifted_images = {entry["image"] for entry in shifted}
    assert len(shifted_images) == 5
    not_top = [t for t in task.truth if t["image"] in shifted_images and t["label"] != "4"]
    assert len(shifted) == len(not_top)
    assert all(int(entry["shown_label"]) == int(entry["ref_label"]) + 1 for entry in shifted)
    artefacts = [entry for entry in register if entry["kind"] in ("duplicate", "false_positive")]
    assert len(artefacts) == 10 and len({entry["image"] for entry in artefacts}) == 5


async def test_paper_detect_groups_follow_the_model_scores(app: object, client_for: ClientFactory) -> None:
    task = await synthetic_task(
        app, client_for, kind="detect", images=5, per_image=8, labels=("mitotic figure",), candidates=4
    )
    response = await task.admin.post(
        f"/api/v1/suggestion-sets/{task.source_set_id}/inject", json={"preset": "paper-detect"}
    )
    assert response.status_code == 201, response.text
    register = await register_of(task.admin, response.json()["suggestion_set"]["id"])
    removed = [entry for entry in register if entry["kind"] == "removed"]
    fakes = [entry for entry in register if entry["kind"] == "false_positive"]
    assert len(removed) == len(fakes) == round(0.2 * len(task.truth)) == 8
    for entry in removed:
        p = entry["score"]
        assert entry["group"] == (0 if p <= 0.33 else 1 if p <= 0.66 else 2)
    for entry in fakes:
        p = entry["score"]
        assert entry["group"] == (0 if p <= 0.2 else 1 if p <= 0.4 else 2)
        assert entry["ref_box"] == entry["shown_box"] and entry["shown_box"][1] == 110


async def test_same_seed_gives_byte_identical_sets_and_registers(
    app: object, client_for: ClientFactory
) -> None:
    task = await synthetic_task(app, client_for, kind="classify", images=12, per_image=6, labels=CELLS)
    url = f"/api/v1/suggestion-sets/{task.source_set_id}/inject"
    ids = []
    for seed in (9, 9, 10):
        response = await task.admin.post(url, json={"preset": "paper-classify", "overrides": {"seed": seed}})
        assert response.status_code == 201, response.text
        ids.append(response.json()["suggestion_set"]["id"])

    first, second, other = [await canonical_set(task.admin, set_id) for set_id in ids]
    assert first == second
    assert first != other


# --- refusals --------------------------------------------------------------------------------------


async def test_impossible_requests_are_refused_with_422_and_change_nothing(
    app: object, client_for: ClientFactory
) -> None:
    task = await synthetic_task(app, client_for, kind="classify", images=4, per_image=3, labels=CELLS[:3])
    before = await table_counts(task.admin, task.setup.task.id)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"protocol": {"steps": [{"kind": "removed", "count": 13}]}}, "hold only 12"),
        ({"preset": "paper-classify"}, "asks for 15 errors, but this task can hold only 12"),
        ({"protocol": {"steps": [{"kind": "removed", "per_image": 1, "images": 5}]}}, "only 4 qualify"),
        ({"preset": "paper-everything"}, "unknown preset"),
        ({"protocol": {"steps": [{"kind": "teleported", "count": 1}]}}, "kind"),
        ({"protocol": {"steps": [{"kind": "removed", "fraction": 2}]}}, "fraction"),
        (
            {"protocol": {"steps": [{"kind": "removed", "fraction": 0.2, "thresholds": [0.5, 0.1]}]}},
            "increase strictly",
        ),
        (
            {"protocol": {"steps": [{"kind": "removed", "count": 1, "target_images": ["ghost.png"]}]}},
            "'ghost.png'",
        ),
        ({"preset": "paper-grade"}, "grade"),
        ({"preset": "paper-detect", "overrides": {"seed": "x"}}, "seed"),
        ({}, "either a preset name or a protocol"),
    ]
    for path in ("inject/preview", "inject"):
        for body, message in cases:
            response = await task.admin.post(
                f"/api/v1/suggestion-sets/{task.source_set_id}/{path}", json=body
            )
            assert response.status_code == 422, (body, response.text)
            assert message in response.text, (body, response.text)
    assert await table_counts(task.admin, task.setup.task.id) == before


async def test_unknown_sets_answer_404(app: object, client_for: ClientFactory) -> None:
    await make_study(app)
    admin = await client_for("admin")
    assert (await admin.get("/api/v1/suggestion-sets/999")).status_code == 404
    assert (
        await admin.post("/api/v1/suggestion-sets/999/inject", json={"preset": "paper-detect"})
    ).status_code == 404


# --- immutability ----------------------------------------------------------------------------------


def test_no_route_edits_or_deletes_a_suggestion_set_or_rebinds_an_assignment(app: object) -> None:
    schema = app.openapi()  # type: ignore[attr-defined]
    for path, operations in schema["paths"].items():
        mutating = {method for method in operations if method in ("put", "patch", "delete")}
        if "suggestion-set" in path or path.startswith("/api/v1/assignments/"):
            assert not mutating, f"{path} allows {mutating}: suggestion sets and their binding are immutable"
        if path.startswith("/api/v1/suggestion-sets/{set_id}/") and "post" in operations:
            assert path.endswith(("/inject", "/inject/preview")), (
                f"{path}: unexpected POST on a suggestion set"
            )


async def test_a_locked_set_stays_as_it_is_and_the_assignment_cannot_be_rebound(
    app: object, client_for: ClientFactory
) -> None:
    task = await synthetic_task(app, client_for, kind="classify", images=12, per_image=6, labels=CELLS)
    admin = task.admin
    injected = (
        await admin.post(
            f"/api/v1/suggestion-sets/{task.source_set_id}/inject", json={"preset": "paper-classify"}
        )
    ).json()["suggestion_set"]
    assigned = await admin.post(
        "/api/v1/assignments",
        json={
            "task_id": task.setup.task.id,
            "expert": "alice",
            "mode": "aided",
            "suggestion_set_id": injected["id"],
        },
    )
    assert assigned.status_code == 201, assigned.text
    alice = await client_for("alice")
    opened = await alice.post(f"/api/v1/images/{task.setup.images[0].id}/open?mode=aided")
    assert opened.status_code == 200
    snapshot = await canonical_set(admin, injected["id"])
    assert (await admin.get(f"/api/v1/suggestion-sets/{injected['id']}")).json()["locked_at"] is not None

    rebind = await admin.post(
        "/api/v1/assignments",
        json={
            "task_id": task.setup.task.id,
            "expert": "alice",
            "mode": "aided",
            "suggestion_set_id": task.source_set_id,
        },
    )
    assert rebind.status_code == 409
    again = await admin.post(
        f"/api/v1/suggestion-sets/{injected['id']}/inject", json={"preset": "paper-classify"}
    )
    assert again.status_code == 201 and again.json()["suggestion_set"]["parent_id"] == injected["id"]
    assert await canonical_set(admin, injected["id"]) == snapshot
    assignments = (await admin.get(f"/api/v1/assignments?task_id={task.setup.task.id}")).json()
    assert [item["suggestion_set_id"] for item in assignments if item["mode"] == "aided"] == [injected["id"]]
