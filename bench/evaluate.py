"""Full study evaluation (load + compute, as `timing` of GET /metrics) against the published analysis approach.

Study: the published Asthma data imported COPIES times under different task names (three tasks, ten experts,
two modes, about 25 000 counted objects, the size of the published study).
Baseline: a faithful re-implementation of the published notebook's approach: read the EXACT files with
plain Python, then per expert and class match every detection against the reference boxes in Python loops
(greedy, IoU 0.25, +1 px), Pascal-VOC AP, the 300-s rule and the register counts.

    .venv/bin/python bench/evaluate.py [--copies 3] [--repeats 7] [--database-url URL]

Concord is timed in two states, alternating: "value" with each task's stored object columns current (every
evaluation after the first since the last annotation write), "rebuilt_s" right after every task's revision
was raised as an annotation write raises it, so that the read rebuilds the object columns from the
annotation table and stores them again (the first evaluation after an edit).

Last line: {"metric": "evaluate_seconds", "value": median concord s, "unit": "s", "baseline": median s,
"ratio": ..., "baseline_name": ..., "published_analysis_s": 2.64, "rebuilt_s": ..., ...}. The published figure
(the notebook on the three real tasks, imports excluded) is reported beside the baseline, not as the
baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.evaluation import published  # noqa: E402
from app.evaluation.published import PARTICIPANTS, ROUNDS  # noqa: E402

ASTHMA = ROOT.parent / "shared" / "data" / "exact-study" / "Asthma"
REGISTERS = published.REGISTER_FILES
STUDY = "bench study"
BASELINE_NAME = "published-approach re-implementation: per-file parsing + Python greedy matching"
PUBLISHED_ANALYSIS_S = 2.64  # the published notebook on the three real tasks, library imports excluded


def export_path(participant: int, mode: str) -> Path:
    return published.export_path(ASTHMA, participant, mode)


# ---------------------------------------------------------------- Concord


async def build_study(url: str, copies: int) -> None:
    from app.evaluation.importer import import_exact
    from app.evaluation.published import import_plan
    from app.migrate import upgrade

    await asyncio.to_thread(upgrade, url)
    from app.db import make_engine, make_sessionmaker

    engine = make_engine(url)
    maker = make_sessionmaker(engine)

    for copy in range(copies):
        jobs = import_plan(ASTHMA, STUDY, f"asthma-{copy + 1}")
        for request, files in jobs:
            async with maker() as session, session.begin():
                await import_exact(session, request, files)
    await engine.dispose()


async def time_concord(url: str, repeats: int) -> tuple[dict[str, list[tuple[float, float]]], dict[str, Any]]:
    """(load_s, compute_s) of each run, as the API's `timing` reports them, and the last result.

    "stored": the task's object columns are current (any evaluation since the last annotation write);
    "rebuilt": every task's revision was raised first, as an annotation write does, so the read rebuilds them
    from the annotation table (the first evaluation after an edit).
    """
    from sqlalchemy import update

    from app.db import make_engine, make_sessionmaker
    from app.evaluation.service import MetricsParams, find_study, study_metrics
    from app.models import Task

    engine = make_engine(url)
    maker = make_sessionmaker(engine)
    timings: dict[str, list[tuple[float, float]]] = {"stored": [], "rebuilt": []}
    result: dict[str, Any] = {}
    for run in range(2 * repeats + 1):  # the first run warms the connection pool and imports
        kind = "rebuilt" if run % 2 else "stored"
        if kind == "rebuilt":
            async with maker() as session, session.begin():
                await session.execute(update(Task).values(objects_revision=Task.objects_revision + 1))
        async with maker() as session:
            study = await find_study(session, STUDY)
            metrics = await study_metrics(session, study, MetricsParams())
        if run:
            timings[kind].append((metrics.timing.load_s, metrics.timing.compute_s))
        result = metrics.model_dump(mode="json")
    await engine.dispose()
    return timings, result


# ---------------------------------------------------------------- baseline: the published approach


def parse_file(path: Path) -> tuple[list[dict[str, Any]], list[str]]:
    objects, images = [], []
    for line in path.read_text(encoding="utf-8-sig").splitlines():
        if not line.strip():
            continue
        if line.startswith("["):
            image = line[1:-1].split("|")[0]
            if image not in images:
                images.append(image)
            continue
        fields = line.split("|")
        if len(fields) == 3:
            if fields[0] != "image name" and fields[0] not in images:
                images.append(fields[0])
            continue
        vector = json.loads(fields[2].replace(",}", "}"))
        if fields[0] not in images:
            images.append(fields[0])
        objects.append(
            {
                "image": fields[0],
                "label": fields[1],
                "box": [int(vector[key]) for key in ("x1", "y1", "x2", "y2")],
                "last_edited": fields[6],
                "deleted": fields[8] == "True",
                "width": int(fields[9]),
                "height": int(fields[10]),
            }
        )
    return objects, images


def counted(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    kept = []
    for obj in objects:
        x1, y1, x2, y2 = obj["box"]
        if not obj["deleted"] and x1 > 2 and y1 > 2 and x2 < obj["width"] - 2 and y2 < obj["height"] - 2:
            kept.append(obj)
    return kept


def iou(a: list[int], b: list[int]) -> float:
    ix = min(a[2], b[2]) - max(a[0], b[0]) + 1
    iy = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    union = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1) - inter
    return inter / union


def greedy(
    dets: list[dict[str, Any]], refs: list[dict[str, Any]], threshold: float
) -> tuple[list[bool], set[int]]:
    taken: set[int] = set()
    tp = []
    for det in dets:
        best, best_iou = -1, 0.0
        for index, ref in enumerate(refs):
            if ref["image"] == det["image"] and ref["label"] == det["label"]:
                value = iou(det["box"], ref["box"])
                if value > best_iou:
                    best, best_iou = index, value
        hit = best >= 0 and best_iou >= threshold and best not in taken
        if hit:
            taken.add(best)
        tp.append(hit)
    return tp, taken


def voc_ap(tp: list[bool], n_ref: int) -> float:
    if n_ref == 0 or not tp:
        return 0.0
    recall, precision, hits = [0.0], [], 0
    for rank, hit in enumerate(tp, start=1):
        hits += hit
        recall.append(hits / n_ref)
        precision.append(hits / rank)
    for index in range(len(precision) - 2, -1, -1):
        precision[index] = max(precision[index], precision[index + 1])
    return sum((recall[k + 1] - recall[k]) * precision[k] for k in range(len(precision)))


def seconds_rule(objects: list[dict[str, Any]], images: list[str]) -> float:
    times: dict[str, list[int]] = defaultdict(list)
    for obj in objects:
        at = datetime.strptime(obj["last_edited"].split(".")[0], "%Y-%m-%d %H:%M:%S")
        times[obj["image"]].append(int(at.timestamp()))
    total = 0
    for image in images:
        stamps = sorted(times.get(image, []))
        total += sum(b - a for a, b in itertools.pairwise(stamps) if b - a < 300)
    return total / len(images) if images else float("nan")


def baseline(copies: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for copy in range(copies):
        gt_dir = ASTHMA / "FirstRound" / "GT"
        truth = counted(parse_file(gt_dir / "ground truth.txt")[0])
        registers = {name: counted(parse_file(gt_dir / f"{name}.txt")[0]) for name in REGISTERS}
        for mode in ROUNDS:
            for participant in PARTICIPANTS:
                raw, images = parse_file(export_path(participant, mode))
                objects = counted(raw)
                order = {image: index for index, image in enumerate(images)}
                objects.sort(key=lambda obj: order[obj["image"]])
                classes = sorted({obj["label"] for obj in objects} | {obj["label"] for obj in truth})
                aps = []
                for label in classes:
                    dets = [obj for obj in objects if obj["label"] == label]
                    refs = [obj for obj in truth if obj["label"] == label]
                    aps.append(voc_ap(greedy(dets, refs, 0.25)[0], len(refs)))
                found = {name: len(greedy(objects, entries, 0.25)[1]) for name, entries in registers.items()}
                results[f"{copy}/{mode}/{participant}"] = {
                    "concordance": sum(aps) / len(aps),
                    "seconds": seconds_rule(objects, images),
                    "registers": found,
                    "objects": len(objects),
                }
    return results


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--database-url", help="default: a fresh SQLite file in a temporary folder")
    args = parser.parse_args()
    if not ASTHMA.is_dir():
        sys.exit(f"study data not present at {ASTHMA}")
    with tempfile.TemporaryDirectory() as folder:
        url = args.database_url or f"sqlite+aiosqlite:///{folder}/bench.db"
        started = time.perf_counter()
        asyncio.run(build_study(url, args.copies))
        print(f"imported {args.copies} copies of the Asthma data in {time.perf_counter() - started:.1f} s")
        concord_runs, result = asyncio.run(time_concord(url, args.repeats))
    baseline_runs = []
    for _ in range(3):
        started = time.perf_counter()
        reference = baseline(args.copies)
        baseline_runs.append(time.perf_counter() - started)
    _check_agreement(result, reference)
    totals = {kind: [load + compute for load, compute in runs] for kind, runs in concord_runs.items()}
    value, base = statistics.median(totals["stored"]), statistics.median(baseline_runs)
    cold = statistics.median(totals["rebuilt"])
    objects = sum(
        row["objects"]
        for task in result["tasks"].values()
        for mode in task["modes"].values()
        for row in mode["experts"].values()
    )
    for kind, runs in totals.items():
        print(f"concord runs, object columns {kind} (s): {', '.join(f'{run:.4f}' for run in runs)}")
    print(f"baseline runs (s): {', '.join(f'{run:.3f}' for run in baseline_runs)}")
    stored = concord_runs["stored"]
    print(
        json.dumps(
            {
                "metric": "evaluate_seconds",
                "value": round(value, 5),
                "unit": "s",
                "baseline": round(base, 4),
                "ratio": round(base / value, 1),
                "baseline_name": BASELINE_NAME,
                "published_analysis_s": PUBLISHED_ANALYSIS_S,
                "ratio_to_published": round(PUBLISHED_ANALYSIS_S / value, 1),
                "best": round(min(totals["stored"]), 5),
                "runs": len(totals["stored"]),
                "load_s": round(statistics.median(load for load, _ in stored), 5),
                "compute_s": round(statistics.median(compute for _, compute in stored), 5),
                "rebuilt_s": round(cold, 5),
                "rebuilt_ratio_to_published": round(PUBLISHED_ANALYSIS_S / cold, 1),
                "objects": objects,
                "tasks": len(result["tasks"]),
                "database": url.split(":", 1)[0],
                "load_average_1min": round(os.getloadavg()[0], 2),
            }
        )
    )


def _check_agreement(result: dict[str, Any], reference: dict[str, Any]) -> None:
    """Both sides must compute the same numbers, or the comparison means nothing."""
    for key, expected in reference.items():
        copy, mode, participant = key.split("/")
        row = result["tasks"][f"asthma-{int(copy) + 1}"]["modes"][mode]["experts"][
            f"Participant_{participant}"
        ]
        assert row["objects"] == expected["objects"], key
        assert abs(row["concordance"] - expected["concordance"]) < 1e-9, key
        assert abs(row["seconds_per_image"] - expected["seconds"]) < 1e-9, key


if __name__ == "__main__":
    main()
