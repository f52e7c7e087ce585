"""The `detector_train` job kind: retrain Concord's own detector(s) on phantoms and register the result.

Params: kind ("classify", "grade", "detect" or "all"; default "all"), seed (int, default 0).
Result: detectors, a list of {kind, detector_id, sha256, name, created}. Training runs in a scratch
folder; only the registered copy (``<model_dir>/<sha256>.onnx``) is kept.
"""

import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

from app.config import Settings, get_settings
from app.db import make_engine, make_sessionmaker
from app.detectors import service
from app.jobs.registry import ProgressReporter
from app.models import TaskKind


def kinds_of(value: str) -> list[TaskKind]:
    """``all`` → every kind; else the one named kind (ValueError for anything else)."""
    if value == "all":
        return list(service.BUILTIN_KINDS)
    if value not in service.BUILTIN_KINDS:
        raise ValueError(f"kind must be one of {', '.join(service.BUILTIN_KINDS)} or all, not {value!r}")
    return [TaskKind(value)]


def train(kind: TaskKind, seed: int, out_dir: Path) -> Path:
    """Train one detector with the shipped settings (imports torch); returns its ONNX path."""
    from worker.detector.train import train_detector

    return train_detector(kind, seed, out_dir)


def run(params: dict[str, Any], progress: ProgressReporter) -> dict[str, Any]:
    kinds = kinds_of(str(params.get("kind", "all")))
    seed = int(params.get("seed", 0))
    settings = get_settings()
    registered = []
    with tempfile.TemporaryDirectory(prefix="concord-train-") as folder:
        for index, kind in enumerate(kinds):
            progress(index / len(kinds), f"training the {kind} detector (seed {seed})")
            onnx_path = train(kind, seed, Path(folder))
            registered.append(asyncio.run(_register(settings, kind, onnx_path)))
    progress(1.0, f"registered {len(registered)} detector(s)")
    return {"detectors": registered, "seed": seed}


async def _register(settings: Settings, kind: TaskKind, onnx_path: Path) -> dict[str, Any]:
    sidecar = json.loads(onnx_path.with_suffix(".json").read_text(encoding="utf-8"))
    engine = make_engine(settings.resolved_database_url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            detector, created = await service.register_detector(
                session, settings, onnx_path.read_bytes(), sidecar
            )
        return {
            "kind": kind,
            "detector_id": detector.id,
            "sha256": detector.sha256,
            "name": detector.name,
            "created": created,
        }
    finally:
        await engine.dispose()
