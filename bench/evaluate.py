"""Full study evaluation (load + compute, as `timing` of GET /metrics) against the published analysis approach.

Study: shaped like the published one — three task kinds, ten experts, two modes, about 26 000 counted expert
objects: the real Asthma data (classify, 20 patches), and two tasks written here as EXACT files from a seeded
generator because their published data is not in ../shared: EIPH (grade 0–4, 20 patches) and mitotic figures
(detect, 10 regions of 7017 × 5263 px with hundreds of objects each, fakes and removed figures injected).
Baseline: a faithful re-implementation of the published notebook's approach on the same EXACT files: read
them with plain Python, then per expert and class match every detection against the reference boxes in
Python loops (greedy, IoU 0.25, +1 px), Pascal-VOC AP, the 300-s rule and the register counts.

    .venv/bin/python bench/evaluate.py [--repeats 7] [--bootstrap 1000] [--database-url URL]
    .venv/bin/python bench/evaluate.py --copies 3 --asthma-only   # the earlier study: Asthma three times

Concord is timed in four states, in turn: "value" with each task's stored object columns current and its
results of the same content kept (every evaluation after the first since the last annotation write);
"uncached_s" with the object columns current but the kept results dropped (everything computed);
"edited_s" right after an expert moved one object (one task per run, in turn; its revision raised by the
triggers, its row version raised as the ORM does), so that the read refreshes that task's object columns
from the annotation table, stores them again and computes that task (the first evaluation after an edit;
the other tasks' kept results stay valid); "all_stale_s" after every task's revision was raised and every
kept result dropped (every task's group digests compared with the stored ones, every number computed);
"imported_s" right after an import: the object columns and the reference columns (ground truth, suggestions,
register) were deleted and stored again by the import's own last step (timed apart as `import_step_s`), no
results kept, every number computed. `rebuilt_ratio` is the baseline over the slower of "edited" and
"imported" (`edited_ratio`, `imported_ratio` and their cpu_ variants beside it). All include the reviewer's statistics (agreement, counts, threshold, effect sizes, Holm); the
bootstrap intervals are a separate figure (`bootstrap_s`, first and cached call).

On a shared, loaded machine wall times scatter widely; the process CPU time of each call (every thread:
the driver's, the compute's) is measured beside it, and the cpu_* ratios compare it with the
baseline's CPU time.

Last line: {"metric": "evaluate_seconds", "value": median concord s, "unit": "s", "baseline": median s,
"ratio": ..., "rebuilt_ratio": ..., "baseline_name": ..., "published_analysis_s": 2.64, "rebuilt_s": ...,
...}. The published figure (the notebook on the three real tasks, imports excluded) is reported beside the
baseline, not as the baseline.
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
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reference import published  # noqa: E402
from reference.published import PARTICIPANTS, ROUNDS  # noqa: E402

ASTHMA = ROOT.parent / "shared" / "data" / "exact-study" / "Asthma"
REGISTERS = published.REGISTER_FILES
STUDY = "bench study"
BASELINE_NAME = "published-approach re-implementation: per-file parsing + Python greedy matching"
PUBLISHED_ANALYSIS_S = 2.64  # the published notebook on the three real tasks, library imports excluded
STATES = ("stored", "uncached", "edited", "all_stale", "imported")  # see time_concord
CPU_STATES = tuple(f"{state}_cpu" for state in STATES)


def export_path(participant: int, mode: str) -> Path:
    return published.export_path(ASTHMA, participant, mode)


# ---------------------------------------------------------------- the study's files


@dataclass
class TaskFiles:
    """One task's EXACT files: reference, suggestion set, register files by error kind, experts by mode."""

    name: str
    kind: str
    truth: Path
    suggestions: Path
    registers: dict[str, Path]
    experts: dict[str, dict[str, Path]] = field(default_factory=dict)  # mode → participant → file


def asthma_task(name: str) -> TaskFiles:
    truth = ASTHMA / "FirstRound" / "GT"
    return TaskFiles(
        name,
        "classify",
        truth / "ground truth.txt",
        ASTHMA / "SecondRound" / "GT" / "unchanged submission_19.txt",
        {kind: truth / f"{file}.txt" for file, kind in REGISTERS.items()},
        {mode: {f"Participant_{p}": export_path(p, mode) for p in PARTICIPANTS} for mode in ROUNDS},
    )


@dataclass(frozen=True)
class Shape:
    """A generated task: images (count, width, height), cells per image, labels (first = the counted one)."""

    name: str
    kind: str
    images: int
    width: int
    height: int
    cells: tuple[int, int]
    box: int
    labels: tuple[str, ...]
    label_weights: tuple[float, ...]
    injected: tuple[str, ...]


EIPH = Shape(
    "eiph",
    "grade",
    20,
    1600,
    1200,
    (10, 22),
    44,
    ("0", "1", "2", "3", "4"),
    (0.3, 0.3, 0.2, 0.12, 0.08),
    ("removed", "grade_shifted", "false_positive"),
)
MITOSIS = Shape(
    "mitotic-figures",
    "detect",
    10,
    7017,
    5263,
    (55, 85),
    50,
    ("mitotic figure", "mitotic figure lookalike"),
    (0.55, 0.45),
    ("removed", "false_positive"),
)
STAMP = datetime(2020, 2, 11, 9, 0, 0)


def generated_task(folder: Path, shape: Shape, seed: int) -> TaskFiles:
    """Writes a task's EXACT files: reference, suggestions with injected errors, register, 10 experts × 2 modes.

    Experts find most cells (aided more, and they keep most suggestions, injected errors included), mislabel
    some, add a few false positives; boxes jitter by a few pixels; edits come seconds apart.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    images = [(f"{shape.name}_{index:02d}.png", shape.width, shape.height) for index in range(shape.images)]
    truth = []
    for image, width, height in images:
        for _ in range(int(rng.integers(*shape.cells))):
            x, y = rng.integers(10, width - shape.box - 10), rng.integers(10, height - shape.box - 10)
            label = shape.labels[int(rng.choice(len(shape.labels), p=shape.label_weights))]
            truth.append(
                (image, label, (int(x), int(y), int(x) + shape.box, int(y) + shape.box), width, height)
            )
    registers: dict[str, list[Any]] = {kind: [] for kind in shape.injected}
    suggestions = []
    for obj in truth:
        draw = rng.random()
        if "removed" in registers and draw < 0.08:
            registers["removed"].append(obj)
            continue
        if "grade_shifted" in registers and draw < 0.16 and obj[1] != shape.labels[-1]:
            shifted = shape.labels[shape.labels.index(obj[1]) + 1]
            registers["grade_shifted"].append(obj)
            suggestions.append((obj[0], shifted, *obj[2:]))
            continue
        suggestions.append(obj)
    for image, width, height in images:
        for _ in range(int(rng.integers(2, 6))):
            x, y = rng.integers(10, width - shape.box - 10), rng.integers(10, height - shape.box - 10)
            fake = (
                image,
                shape.labels[0],
                (int(x), int(y), int(x) + shape.box, int(y) + shape.box),
                width,
                height,
            )
            registers["false_positive"].append(fake)
            suggestions.append(fake)
    _write(folder / "ground truth.txt", truth, "marzahl", rng)
    _write(folder / "suggestions.txt", suggestions, "marzahl", rng)
    for kind, entries in registers.items():
        _write(folder / f"{kind}.txt", entries, "marzahl", rng)
    task = TaskFiles(
        shape.name,
        shape.kind,
        folder / "ground truth.txt",
        folder / "suggestions.txt",
        {kind: folder / f"{kind}.txt" for kind in registers},
    )
    for mode, (keep, accept) in {"unaided": (0.8, 0.0), "aided": (0.9, 0.92)}.items():
        for participant in PARTICIPANTS:
            expert = f"Participant_{participant}"
            source = suggestions if accept else truth
            chosen = [obj for obj in source if rng.random() < (accept or keep)]
            found = [_jitter(obj, shape, rng) for obj in chosen]
            for image, width, height in images:
                for _ in range(int(rng.integers(0, 3))):
                    x, y = rng.integers(10, width - shape.box - 10), rng.integers(10, height - shape.box - 10)
                    box = (int(x), int(y), int(x) + shape.box, int(y) + shape.box)
                    found.append((image, shape.labels[0], box, width, height))
            order = {image: index for index, (image, _, _) in enumerate(images)}
            found.sort(key=lambda obj: order[obj[0]])
            path = folder / f"{mode}-{expert}.txt"
            _write(path, found, expert, rng, [image for image, _, _ in images])
            task.experts.setdefault(mode, {})[expert] = path
    return task


def _jitter(obj: Any, shape: Shape, rng: Any) -> Any:
    image, label, (x1, y1, x2, y2), width, height = obj
    dx, dy = (int(value) for value in rng.integers(-4, 5, 2))
    if rng.random() < 0.06:
        label = shape.labels[int(rng.integers(len(shape.labels)))]
    return image, label, (x1 + dx, y1 + dy, x2 + dx, y2 + dy), width, height


def _write(path: Path, objects: list[Any], user: str, rng: Any, visits: list[str] | None = None) -> None:
    """EXACT text: an open and a close line per image visited, then the objects with their last edits."""
    lines = []
    clock = STAMP
    for image in visits or []:
        lines.append(f"[{image}|{user}|{clock.isoformat(sep=' ')}|1]")
        lines.append(f"[{image}|{user}|{(clock + timedelta(seconds=90)).isoformat(sep=' ')}|2]")
    for index, (image, label, (x1, y1, x2, y2), width, height) in enumerate(objects):
        clock += timedelta(seconds=int(rng.integers(2, 40)) if rng.random() < 0.97 else 400)
        vector = f'{{"x1": "{x1}","y1": "{y1}","x2": "{x2}","y2": "{y2}",}}'
        lines.append(
            f"{image}|{label}|{vector}|marzahl|{STAMP.isoformat(sep=' ')}|{user}|"
            f"{clock.isoformat(sep=' ')}.000001|{path.stem}-{index}|False|{width}|{height}"
        )
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def study_tasks(folder: Path, copies: int, asthma_only: bool) -> list[TaskFiles]:
    if asthma_only:
        return [asthma_task(f"asthma-{copy + 1}") for copy in range(copies)]
    return [
        asthma_task("asthma"),
        generated_task(folder / "eiph", EIPH, seed=1),
        generated_task(folder / "mitotic", MITOSIS, seed=2),
    ]


# ---------------------------------------------------------------- Concord


def _file(path: Path) -> Any:
    from app.evaluation.importer import ImportFile

    return ImportFile(str(path), path.read_text(encoding="utf-8-sig"))


async def build_study(url: str, tasks: list[TaskFiles]) -> None:
    from app.db import make_engine, make_sessionmaker
    from app.evaluation.importer import ImportRequest, import_exact
    from app.migrate import upgrade

    await asyncio.to_thread(upgrade, url)
    engine = make_engine(url)
    maker = make_sessionmaker(engine)
    for task in tasks:
        plan = [
            (ImportRequest(STUDY, task.name, task.kind, "ground-truth"), [_file(task.truth)]),
            (ImportRequest(STUDY, task.name, task.kind, "suggestions"), [_file(task.suggestions)]),
        ]
        plan += [
            (ImportRequest(STUDY, task.name, task.kind, "injected", error_kind=kind), [_file(path)])
            for kind, path in task.registers.items()
        ]
        plan += [
            (
                ImportRequest(STUDY, task.name, task.kind, "expert", mode=mode),
                [_file(p) for p in files.values()],
            )
            for mode, files in task.experts.items()
        ]
        for request, files in plan:
            async with maker() as session, session.begin():
                await import_exact(session, request, files)
    await engine.dispose()


async def time_concord(
    url: str, repeats: int, bootstrap: int
) -> tuple[dict[str, list[tuple[float, float]]], dict[str, Any], list[float]]:
    """(load_s, compute_s) of each run, as the API's `timing` reports them, the last result, and the
    bootstrap's first and cached call (s).

    "stored": the task's object columns are current and the per-task results of the same content are kept
    (any evaluation since the last annotation write); "uncached": object columns current, kept results
    dropped, so every number is computed; "edited": an expert moved one object by 1 px (one task per run,
    the tasks in turn; an UPDATE that raises the row's version as the ORM does, and the task's revision
    through the triggers), so the read finds that task's object columns stale and the edited task is
    computed (the first evaluation after an expert's edit; kept results of the tasks the edit did not touch
    stay valid, and each edit makes content never seen before); "all_stale": every task's revision raised
    and every kept result dropped (group digests compared, nothing changed read again, everything computed);
    "imported": the stored object and reference columns deleted, then stored again by the import's own last
    step (`repository.store_study_object_columns`, timed apart), every kept result dropped (the first
    evaluation after an import: everything computed). In every state the reference columns are current:
    only "imported" deletes them, and no state writes a reference row. The moved objects are moved back before the last evaluation.
    """
    from sqlalchemy import delete, update

    from app.db import make_engine, make_sessionmaker
    from app.evaluation import repository
    from app.evaluation.service import MetricsParams, clear_result_cache, find_study, study_metrics
    from app.models import Annotation, ObjectColumns, ReferenceColumns, Task

    engine = make_engine(url)
    maker = make_sessionmaker(engine)
    timings: dict[str, list[tuple[float, float]]] = {
        kind: [] for kind in (*STATES, *CPU_STATES, "import_step")
    }
    result: dict[str, Any] = {}
    edited = await _one_object_per_task(maker)
    moves = dict.fromkeys(edited, 0)

    async def move(annotation_id: int, pixels: int) -> None:
        async with maker() as session, session.begin():
            await session.execute(
                update(Annotation)
                .where(Annotation.id == annotation_id)
                .values(x1=Annotation.x1 + pixels, x2=Annotation.x2 + pixels, version=Annotation.version + 1)
            )

    async def imported_anew() -> float:
        """No stored object or reference tables, then the import's own last step that stores both (its
        seconds)."""
        async with maker() as session, session.begin():
            await session.execute(delete(ObjectColumns))
            await session.execute(delete(ReferenceColumns))
            started = time.perf_counter()
            await repository.store_study_object_columns(session, (await find_study(session, STUDY)).id)
            return time.perf_counter() - started

    async def evaluate() -> tuple[Any, float]:
        async with maker() as session:
            study = await find_study(session, STUDY)
            cpu = time.process_time()
            metrics = await study_metrics(session, study, MetricsParams())
            return metrics, time.process_time() - cpu

    for run in range(len(STATES) * repeats + 1):  # the first run warms the connection pool and imports
        kind = STATES[run % len(STATES)]
        if kind in ("uncached", "all_stale", "imported"):
            clear_result_cache()
        if kind == "imported":
            timings["import_step"].append((await imported_anew(), 0.0))
        if kind == "all_stale":
            async with maker() as session, session.begin():
                await session.execute(update(Task).values(objects_revision=Task.objects_revision + 1))
        if kind == "edited":
            annotation_id = edited[run // len(STATES) % len(edited)]
            await move(annotation_id, 1)
            moves[annotation_id] += 1
        metrics, cpu = await evaluate()
        if run:
            timings[kind].append((metrics.timing.load_s, metrics.timing.compute_s))
            timings[f"{kind}_cpu"].append((cpu, 0.0))
    for annotation_id, pixels in moves.items():
        await move(annotation_id, -pixels)
    metrics, _ = await evaluate()
    result = metrics.model_dump(mode="json")
    bootstrap_runs = []
    for _ in range(2 if bootstrap else 0):
        async with maker() as session:
            study = await find_study(session, STUDY)
            started = time.perf_counter()
            await study_metrics(session, study, MetricsParams(bootstrap=bootstrap))
            bootstrap_runs.append(time.perf_counter() - started)
    await engine.dispose()
    return timings, result, bootstrap_runs


async def _one_object_per_task(maker: Any) -> list[int]:
    """A counted object of each task of the study (the one an expert moves in "edited")."""
    from sqlalchemy import func, select

    from app.models import Annotation, Image

    async with maker() as session:
        rows = await session.execute(
            select(func.min(Annotation.id))
            .join(Image, Image.id == Annotation.image_id)
            .where(
                Annotation.deleted.is_(False),
                Annotation.mode.in_(("unaided", "aided")),
                Annotation.x1 > 50,  # well inside its image: counted before and after the moves
                Annotation.y1 > 50,
                Annotation.x2 < Image.width - 50,
                Annotation.y2 < Image.height - 50,
            )
            .group_by(Image.task_id)
            .order_by(Image.task_id)
        )
        return [annotation_id for (annotation_id,) in rows]


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


def baseline(tasks: list[TaskFiles]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for task in tasks:
        truth = counted(parse_file(task.truth)[0])
        registers = {name: counted(parse_file(path)[0]) for name, path in task.registers.items()}
        for mode, files in task.experts.items():
            for participant, path in files.items():
                raw, images = parse_file(path)
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
                results[f"{task.name}/{mode}/{participant}"] = {
                    "concordance": sum(aps) / len(aps),
                    "seconds": seconds_rule(objects, images),
                    "registers": found,
                    "objects": len(objects),
                }
    return results


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=3, help="with --asthma-only: Asthma copies")
    parser.add_argument(
        "--asthma-only", action="store_true", help="the earlier study: Asthma, --copies times"
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--baseline-repeats", type=int, default=3)
    parser.add_argument(
        "--bootstrap", type=int, default=1000, help="replicates of the separate figure (0: skip)"
    )
    parser.add_argument("--database-url", help="default: a fresh SQLite file in a temporary folder")
    args = parser.parse_args()
    if not ASTHMA.is_dir():
        sys.exit(f"study data not present at {ASTHMA}")
    with tempfile.TemporaryDirectory() as folder:
        tasks = study_tasks(Path(folder), args.copies, args.asthma_only)
        url = args.database_url or f"sqlite+aiosqlite:///{folder}/bench.db"
        started = time.perf_counter()
        asyncio.run(build_study(url, tasks))
        print(f"imported {len(tasks)} tasks in {time.perf_counter() - started:.1f} s")
        concord_runs, result, bootstrap_runs = asyncio.run(time_concord(url, args.repeats, args.bootstrap))
        baseline_runs, baseline_cpu = [], []
        for _ in range(args.baseline_repeats):
            started, cpu = time.perf_counter(), time.process_time()
            reference = baseline(tasks)
            baseline_runs.append(time.perf_counter() - started)
            baseline_cpu.append(time.process_time() - cpu)
    _check_agreement(result, reference)
    totals = {kind: [load + compute for load, compute in runs] for kind, runs in concord_runs.items()}
    base_cpu = statistics.median(baseline_cpu)
    value, base = statistics.median(totals["stored"]), statistics.median(baseline_runs)
    median = {kind: statistics.median(runs) for kind, runs in totals.items()}
    cold = max(median["edited"], median["imported"])
    cold_cpu = max(median["edited_cpu"], median["imported_cpu"])
    objects = sum(
        row["objects"]
        for task in result["tasks"].values()
        for mode in task["modes"].values()
        for row in mode["experts"].values()
    )
    for kind, runs in totals.items():
        print(f"concord runs, object columns {kind} (s): {', '.join(f'{run:.4f}' for run in runs)}")
    print(f"baseline runs (s): {', '.join(f'{run:.3f}' for run in baseline_runs)}")
    print(f"baseline CPU (s): {', '.join(f'{run:.3f}' for run in baseline_cpu)}")
    if bootstrap_runs:
        print(
            f"bootstrap {args.bootstrap} replicates: first {bootstrap_runs[0]:.2f} s, cached {bootstrap_runs[1]:.3f} s"
        )
    stored = concord_runs["stored"]
    print(
        json.dumps(
            {
                "metric": "evaluate_seconds",
                "value": round(value, 5),
                "unit": "s",
                "baseline": round(base, 4),
                "ratio": round(base / value, 1),
                "rebuilt_ratio": round(base / cold, 1),
                "uncached_ratio": round(base / statistics.median(totals["uncached"]), 1),
                "uncached_s": round(statistics.median(totals["uncached"]), 5),
                "baseline_name": BASELINE_NAME,
                "published_analysis_s": PUBLISHED_ANALYSIS_S,
                "ratio_to_published": round(PUBLISHED_ANALYSIS_S / value, 1),
                "best": round(min(totals["stored"]), 5),
                "runs": len(totals["stored"]),
                "load_s": round(statistics.median(load for load, _ in stored), 5),
                "compute_s": round(statistics.median(compute for _, compute in stored), 5),
                "rebuilt_s": round(cold, 5),
                "rebuilt_ratio_to_published": round(PUBLISHED_ANALYSIS_S / cold, 1),
                **_state_figures(median, base, base_cpu, ("edited", "imported", "all_stale")),
                "import_step_s": round(median["import_step"], 5),
                "cpu_ratio": round(base_cpu / statistics.median(totals["stored_cpu"]), 1),
                "cpu_rebuilt_ratio": round(base_cpu / cold_cpu, 1),
                "cpu_uncached_ratio": round(base_cpu / statistics.median(totals["uncached_cpu"]), 1),
                "bootstrap_replicates": args.bootstrap,
                "bootstrap_s": round(bootstrap_runs[0], 3) if bootstrap_runs else None,
                "bootstrap_cached_s": round(bootstrap_runs[1], 4) if bootstrap_runs else None,
                "objects": objects,
                "tasks": len(result["tasks"]),
                "database": url.split(":", 1)[0],
                "load_average_1min": round(os.getloadavg()[0], 2),
            }
        )
    )


def _state_figures(
    median: dict[str, float], base: float, base_cpu: float, states: tuple[str, ...]
) -> dict[str, float]:
    figures = {}
    for state in states:
        figures[f"{state}_s"] = round(median[state], 5)
        figures[f"{state}_ratio"] = round(base / median[state], 1)
        figures[f"cpu_{state}_ratio"] = round(base_cpu / median[f"{state}_cpu"], 1)
    return figures


def _check_agreement(result: dict[str, Any], reference: dict[str, Any]) -> None:
    """Both sides must compute the same numbers, or the comparison means nothing."""
    for key, expected in reference.items():
        task, mode, participant = key.split("/")
        row = result["tasks"][task]["modes"][mode]["experts"][participant]
        assert row["objects"] == expected["objects"], key
        assert abs(row["concordance"] - expected["concordance"]) < 1e-9, key
        assert abs(row["seconds_per_image"] - expected["seconds"]) < 1e-9, key


if __name__ == "__main__":
    main()
