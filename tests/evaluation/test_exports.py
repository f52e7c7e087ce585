"""Exports: EXACT round trip through the importer, COCO, CSV, metrics CSV."""

from __future__ import annotations

from typing import Any

from app.evaluation.importer import ImportRequest
from tests.conftest import ClientFactory
from tests.evaluation.test_import import EXPERT_FILE, GT_FILE, _import, line
from tests.factories import make_user

MORE = EXPERT_FILE + "\n" + line("b.png", "Eosinophile", (22, 20, 60, 61), at="2020-01-23 18:17:20.5")


async def test_exact_round_trip_gives_the_same_metrics(app: Any, client_for: ClientFactory) -> None:
    await make_user(app, "admin", "admin")
    admin = await client_for("admin")
    first = await _import(app, ImportRequest("S", "T1", "classify", "ground-truth"), GT_FILE)
    await _import(app, ImportRequest("S", "T1", "classify", "expert", mode="aided"), MORE)
    exported = await admin.get(
        f"/api/v1/tasks/{first.task_id}/annotations/export",
        params={"format": "exact", "expert": "alice", "mode": "aided"},
    )
    assert exported.status_code == 200
    ground = await admin.get(f"/api/v1/tasks/{first.task_id}/ground-truth/export", params={"format": "exact"})
    await _import(app, ImportRequest("S", "T2", "classify", "ground-truth"), ground.text)
    await _import(
        app, ImportRequest("S", "T2", "classify", "expert", mode="aided", expert="alice"), exported.text
    )

    metrics = (await admin.get(f"/api/v1/studies/{first.study_id}/metrics")).json()["tasks"]
    assert metrics["T1"]["modes"] == metrics["T2"]["modes"]
    assert metrics["T1"]["modes"]["aided"]["experts"]["alice"]["objects"] == 2
    again = await admin.get(
        f"/api/v1/tasks/{first.task_id + 1}/annotations/export",
        params={"format": "exact", "expert": "alice", "mode": "aided"},
    )
    assert _without_uuid(again.text) == _without_uuid(exported.text)


def _without_uuid(text: str) -> list[list[str]]:
    return [fields[:7] + fields[8:] for fields in (line.split("|") for line in text.splitlines())]


async def test_coco_csv_and_metrics_csv(app: Any, client_for: ClientFactory) -> None:
    await make_user(app, "admin", "admin")
    admin = await client_for("admin")
    report = await _import(app, ImportRequest("S", "T", "classify", "ground-truth"), GT_FILE)
    await _import(app, ImportRequest("S", "T", "classify", "expert", mode="unaided"), MORE)

    coco = (
        await admin.get(f"/api/v1/tasks/{report.task_id}/annotations/export", params={"format": "coco"})
    ).json()
    assert len(coco["annotations"]) == 3
    assert coco["annotations"][1]["bbox"] == [10.0, 10.0, 30.0, 30.0]
    rows = (await admin.get(f"/api/v1/tasks/{report.task_id}/annotations/export")).text.splitlines()
    assert rows[0].startswith("image,label,x1")
    assert len(rows) == 4
    table = (await admin.get(f"/api/v1/studies/{report.study_id}/metrics/experts.csv")).text.splitlines()
    assert table[0].startswith("task,mode,expert,objects")
    assert table[1].startswith("T,unaided,alice,2,")


async def test_json_export_lists_every_object_with_its_expert_and_mode(
    app: Any, client_for: ClientFactory
) -> None:
    await make_user(app, "admin", "admin")
    admin = await client_for("admin")
    report = await _import(app, ImportRequest("S", "T", "classify", "ground-truth"), GT_FILE)
    await _import(app, ImportRequest("S", "T", "classify", "expert", mode="unaided"), MORE)
    url = f"/api/v1/tasks/{report.task_id}/annotations/export"
    response = await admin.get(url, params={"format": "json"})
    assert response.headers["content-type"].startswith("application/json")
    records = response.json()["objects"]
    assert len(records) == 3
    assert {(record["expert"], record["mode"]) for record in records} == {("alice", "unaided")}
    assert records[1]["x2"] - records[1]["x1"] == 30.0
    truth = (
        await admin.get(f"/api/v1/tasks/{report.task_id}/ground-truth/export", params={"format": "json"})
    ).json()
    assert len(truth["objects"]) > 0
    assert all("label" in record for record in truth["objects"])
    expert = await client_for("alice")
    assert (await expert.get(url, params={"format": "json"})).status_code == 403
