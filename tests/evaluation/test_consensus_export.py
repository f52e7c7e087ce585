"""Consensus by NMS vote counting beside centre-radius clustering: metrics, exports with votes and weights."""

from __future__ import annotations

import csv
import io
from typing import Any

import numpy as np

from app.evaluation import metrics as m
from app.evaluation.exact_format import parse_exact
from app.evaluation.importer import ImportRequest
from tests.conftest import ClientFactory
from tests.evaluation.test_import import GT_FILE, _import, line
from tests.factories import make_user


def box(x: float, y: float, size: float = 50.0) -> list[float]:
    return [x, y, x + size - 1, y + size - 1]


def test_nms_consensus_counts_votes_and_takes_the_majority_label() -> None:
    boxes = np.array([box(100, 100), box(105, 100), box(102, 100), box(300, 100)], dtype=np.float64)
    labels = np.array([1, 2, 2, 1])

    found = m.nms_consensus(boxes, labels, np.array([0, 1, 2, 0]), np.zeros(4, np.int64), iou=0.5)

    assert found.votes.tolist() == [3, 1]
    assert found.labels.tolist() == [2, 1]
    assert found.boxes.tolist() == [box(100, 100), box(300, 100)]  # the keeper's box
    kept = m.nms_consensus(boxes, labels, np.array([0, 1, 2, 0]), np.zeros(4, np.int64), iou=0.5, min_votes=2)
    assert kept.votes.tolist() == [3]


def test_nms_and_radius_differ_on_neighbours_that_do_not_overlap() -> None:
    # Two experts mark two touching small cells 30 px apart: one cluster at radius 50, two NMS cells.
    boxes = np.array([box(100, 100, 20), box(130, 100, 20)], dtype=np.float64)
    args = (boxes, np.zeros(2, np.int64), np.array([0, 1]), np.zeros(2, np.int64))

    assert m.consensus(*args, radius=50.0).votes.tolist() == [2]
    assert m.nms_consensus(*args, iou=0.5).votes.tolist() == [1, 1]


ALICE = "\n".join(
    [line("a.png", "Neutrophile", (10, 10, 40, 40)), line("b.png", "Eosinophile", (20, 20, 60, 60))]
)
BOB = line("a.png", "Neutrophile", (11, 10, 41, 40)).replace("alice", "bob")


async def _study(app: Any) -> Any:
    await make_user(app, "admin", "admin")
    report = await _import(app, ImportRequest("S", "T", "classify", "ground-truth"), GT_FILE)
    await _import(app, ImportRequest("S", "T", "classify", "expert", mode="aided", expert="alice"), ALICE)
    await _import(app, ImportRequest("S", "T", "classify", "expert", mode="aided", expert="bob"), BOB)
    return report


async def test_metrics_route_takes_either_consensus_by_its_query_name(
    app: Any, client_for: ClientFactory
) -> None:
    report = await _study(app)
    admin = await client_for("admin")
    url = f"/api/v1/studies/{report.study_id}/metrics"

    nms = (await admin.get(url, params={"consensus_nms": 0.5, "min_votes": 1})).json()
    radius = (await admin.get(url, params={"consensus_radius": 50})).json()
    both = await admin.get(url, params={"consensus_nms": 0.5, "consensus_radius": 50})

    consensus = nms["tasks"]["T"]["modes"]["aided"]["consensus"]
    assert (consensus["method"], consensus["nms_iou"], consensus["objects"]) == ("nms", 0.5, 2)
    assert consensus["votes"] == {"1": 1, "2": 1}
    assert radius["tasks"]["T"]["modes"]["aided"]["consensus"]["method"] == "radius"
    assert both.status_code == 422
    assert "not both" in both.text
    assert (await admin.get(url, params={"consensus_nms": 1.5})).status_code == 422


async def test_consensus_export_carries_votes_and_votes_loss_weights(
    app: Any, client_for: ClientFactory
) -> None:
    report = await _study(app)
    admin = await client_for("admin")
    url = f"/api/v1/tasks/{report.task_id}/consensus/export"
    query: dict[str, str | float] = {"mode": "aided", "consensus_nms": 0.5}

    rows = list(csv.DictReader(io.StringIO((await admin.get(url, params=query)).text)))
    coco = (await admin.get(url, params={**query, "format": "coco"})).json()
    exact = (await admin.get(url, params={**query, "format": "exact"})).text

    assert [(row["image"], row["votes"], row["weight"]) for row in rows] == [
        ("a.png", "2", "1.0"),
        ("b.png", "1", "0.0"),
    ]
    assert [(item["votes"], item["weight"]) for item in coco["annotations"]] == [(2, 1.0), (1, 0.0)]
    parsed = parse_exact(exact, "consensus.txt").objects
    assert [(obj.image, obj.uuid) for obj in parsed] == [
        ("a.png", "votes=2;weight=1"),
        ("b.png", "votes=1;weight=0"),
    ]
    at_least_two = (await admin.get(url, params={**query, "min_votes": 2})).text.splitlines()
    assert len(at_least_two) == 2
    assert (await admin.get(url, params={"mode": "aided"})).status_code == 200  # default: radius 50 px
    assert (await (await client_for("alice")).get(url, params=query)).status_code == 403
