"""Detector throughput of the `detect` job's path (run_detection) against a bare ONNX Runtime loop.

Data: phantom images in a temporary SQLite database: a classify task of PATCHES 512-px PNG patches
(shipped classify model) and a detect task of one 3500×2500 region (a window) of a tiled pyramidal TIFF
(shipped detect model), stored and read the way Concord stores and reads uploads.

Concord: ``run_detection`` per task (the function the `detect` job calls): lazy tile reads, tiling
with overlap, preprocessing, batched ``InferenceSession.run``, per-tile decoding, NMS, label mapping.
Its figure is the images per second it stores with the suggestion set: the inference loop, from the first
tile read to the last merged box, excluding the one-off model load and the database insert (printed
separately as "end to end").
Baseline: the same images decoded, tiled and preprocessed beforehand into the same batches, then a bare
loop of ``InferenceSession.run`` over them, with a fresh session per repeat like Concord, built by the
same ``make_session`` (same options, same intra-op threads: every core but those kept for Concord's
readers). The last line names the thread counts.

    .venv/bin/python bench/inference.py [--patches 8] [--repeats 3] [--batch-size 8] [--cpu-only]

Last line: {"metric": "detect_images_per_second", "value": ..., "unit": "images/s", "baseline": ...,
"ratio": ..., "provider": ...}; the ratio (Concord ÷ baseline) must be at least 0.85.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PIL import Image as PILImage  # noqa: E402

from app.config import Settings  # noqa: E402
from app.db import make_engine, make_sessionmaker  # noqa: E402
from app.detectors import service  # noqa: E402
from app.detectors.contract import DetectorSidecar  # noqa: E402
from app.detectors.inference import (  # noqa: E402
    fill_batches,
    make_session,
    plan_tiles,
    preprocess,
    reader_threads,
)
from app.images.service import NewImage, add_images, file_of  # noqa: E402
from app.images.tiles import ImageSource, RegionView, Window  # noqa: E402
from app.migrate import upgrade  # noqa: E402
from app.models import DetectorModel, Image, Task  # noqa: E402
from app.phantoms import (  # noqa: E402
    CLASSIFY_LABELS,
    DETECT_LABELS,
    classify_patch,
    detect_region,
    write_pyramidal_tiff,
)
from app.studies import service as studies  # noqa: E402
from app.studies.schemas import LabelIn, StudyCreate, TaskCreate  # noqa: E402

REGION = Window(50, 50, 3500, 2500)
RATIO_TARGET = 0.85


@dataclass
class BenchTask:
    task: Task
    detector: DetectorModel
    images: list[Image]


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


async def make_task(session: Any, settings: Settings, kind: str, labels: tuple[str, ...], study: Any) -> Task:
    data = TaskCreate(name=f"bench {kind}", kind=kind, labels=[LabelIn(name=name) for name in labels])
    task, _ = await studies.create_task(session, study, data)
    return task


async def build(settings: Settings, patches: int, folder: Path) -> list[BenchTask]:
    """The two tasks with their images and the shipped detectors, committed."""
    engine = make_engine(settings.resolved_database_url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            detectors = await service.ensure_builtin_detectors(session, settings)
            study = await studies.create_study(session, StudyCreate(name="bench"))
            classify = await make_task(session, settings, "classify", CLASSIFY_LABELS, study)
            items = [
                NewImage(name=f"patch-{seed}.png", stream=io.BytesIO(png(classify_patch(seed, 512).image)))
                for seed in range(patches)
            ]
            patch_images = await add_images(session, settings, classify, items)
            detect = await make_task(session, settings, "detect", DETECT_LABELS, study)
            tiff = folder / "region.tif"
            write_pyramidal_tiff(tiff, detect_region(7, 3600, 2600).image, mpp=0.25)
            with tiff.open("rb") as stream:
                region_images = await add_images(
                    session, settings, detect, [NewImage("region", stream, window=REGION)]
                )
        return [
            BenchTask(classify, detectors["classify"], patch_images),
            BenchTask(detect, detectors["detect"], region_images),
        ]
    finally:
        await engine.dispose()


async def concord_run(
    settings: Settings, bench: BenchTask, batch_size: int, prefer_cuda: bool
) -> tuple[float, str, int]:
    """One run_detection; returns (seconds of its inference loop, provider, suggestions)."""
    engine = make_engine(settings.resolved_database_url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            task = await session.get(Task, bench.task.id)
            detector = await session.get(DetectorModel, bench.detector.id)
            assert task is not None and detector is not None
            created = await service.run_detection(
                session, settings, task, detector, batch_size=batch_size, prefer_cuda=prefer_cuda
            )
            count = len(await service_suggestions(session, created.id))
        assert created.images_per_second is not None and created.provider is not None
        return len(bench.images) / created.images_per_second, created.provider, count
    finally:
        await engine.dispose()


async def service_suggestions(session: Any, set_id: int) -> list[Any]:
    from app.suggestions import repository

    return list(await repository.suggestions_of_set(session, set_id))


def pretiled(
    settings: Settings, bench: BenchTask, sidecar: DetectorSidecar, batch_size: int
) -> list[np.ndarray]:
    """Every image decoded whole, cut into the tiles Concord plans, preprocessed, in Concord's batches
    (which run across images: 8 patches of one tile each make one batch of 8)."""
    pixels, plans = [], []
    for image in bench.images:
        path, window = file_of(settings, image)
        with ImageSource(path) as source:
            view = source if window is None else RegionView(source, window)
            pixels.append(view.read_region(0, 0, 0, image.width, image.height))
        plans.append(plan_tiles(image.width, image.height, sidecar.tile_size, sidecar.tile_overlap))
    return [
        np.stack(
            [
                preprocess(pixels[owner][t.y : t.y + t.height, t.x : t.x + t.width], sidecar)
                for owner, t in zip(batch.owners, batch.tiles, strict=True)
            ]
        )
        for batch in fill_batches(plans, batch_size)
    ]


def bare_run(model: Path, batches: list[np.ndarray], prefer_cuda: bool) -> tuple[float, str, int]:
    """A fresh session, then InferenceSession.run over every batch.

    The session comes from Concord's make_session with the same options, so it has the intra-op threads
    Concord's has (every core but those kept for Concord's readers). Returns (seconds of the loop,
    provider, intra-op threads read back from the session).
    """
    session, provider = make_session(model, prefer_cuda)
    threads: int = session.get_session_options().intra_op_num_threads
    input_name = session.get_inputs()[0].name
    started = time.perf_counter()
    for batch in batches:
        session.run(["boxes", "scores", "labels"], {input_name: batch})
    return time.perf_counter() - started, provider, threads


def measure(settings: Settings, tasks: list[BenchTask], args: argparse.Namespace) -> dict[str, Any]:
    prefer_cuda = not args.cpu_only
    images = sum(len(bench.images) for bench in tasks)
    concord: list[float] = []
    baseline: list[float] = []
    end_to_end: list[float] = []
    providers: set[str] = set()
    intra_threads: set[int] = set()
    prepared = []
    for bench in tasks:
        sidecar = DetectorSidecar.model_validate(bench.detector.sidecar)
        model = service.model_path(settings, bench.detector.sha256)
        prepared.append((bench, model, pretiled(settings, bench, sidecar, args.batch_size)))
    for repeat in range(args.repeats):
        concord_s = bare_s = wall_s = 0.0
        for bench, model, batches in prepared:
            started = time.perf_counter()
            seconds, provider, count = asyncio.run(concord_run(settings, bench, args.batch_size, prefer_cuda))
            wall_s += time.perf_counter() - started
            concord_s += seconds
            providers.add(provider)
            bare, bare_provider, threads = bare_run(model, batches, prefer_cuda)
            intra_threads.add(threads)
            bare_s += bare
            providers.add(bare_provider)
            if repeat == 0:
                print(
                    f"  {bench.task.name}: {len(bench.images)} images, {sum(len(b) for b in batches)} tiles, "
                    f"{count} suggestions"
                )
        concord.append(images / concord_s)
        baseline.append(images / bare_s)
        end_to_end.append(images / wall_s)
        print(
            f"repeat {repeat + 1}: concord {concord[-1]:.2f} images/s, bare {baseline[-1]:.2f} images/s, "
            f"end to end {end_to_end[-1]:.2f} images/s"
        )
    value, base = statistics.median(concord), statistics.median(baseline)
    return {
        "metric": "detect_images_per_second",
        "value": round(value, 3),
        "unit": "images/s",
        "baseline": round(base, 3),
        "ratio": round(value / base, 3),
        "provider": ",".join(sorted(providers)),
        "end_to_end": round(statistics.median(end_to_end), 3),
        "images": images,
        "cpus": os.cpu_count(),
        "reader_threads": reader_threads(),
        "intra_op_threads": ",".join(str(count) for count in sorted(intra_threads)),
        "load_average": [round(value, 2) for value in os.getloadavg()],
    }


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--patches", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=service.DEFAULT_BATCH_SIZE)
    parser.add_argument("--cpu-only", action="store_true", help="CPU provider for both paths")
    return parser.parse_args()


def main() -> int:
    args = parse_arguments()
    with tempfile.TemporaryDirectory(prefix="concord-bench-") as folder:
        settings = Settings(
            data_dir=Path(folder) / "data", database_url=f"sqlite+aiosqlite:///{folder}/bench.db"
        )
        settings.data_dir.mkdir(parents=True)
        upgrade(settings.resolved_database_url)
        tasks = asyncio.run(build(settings, args.patches, Path(folder)))
        result = measure(settings, tasks, args)
    print(
        f"concord {result['value']} images/s, bare ONNX Runtime {result['baseline']} images/s, "
        f"ratio {result['ratio']} (target ≥ {RATIO_TARGET}), provider {result['provider']}; "
        f"{result['cpus']} cores: {result['reader_threads']} reader thread(s), "
        f"{result['intra_op_threads']} ONNX Runtime intra-op thread(s) in both paths"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
