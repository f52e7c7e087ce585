"""`concord detector train|list`: rebuild Concord's own detectors, list the registered ones."""

import argparse
import json
from pathlib import Path

from app.config import Settings
from app.models import TaskKind

KINDS = tuple(TaskKind)
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "detector_models"


def cmd_train(args: argparse.Namespace) -> int:
    """Train each requested kind with the shipped settings (torch, imported here only); one JSON line each."""
    from worker.detector.train import train_detector

    kinds = KINDS if args.kind == "all" else (TaskKind(args.kind),)
    args.out.mkdir(parents=True, exist_ok=True)
    for kind in kinds:
        path = train_detector(kind, args.seed, args.out)
        print(json.dumps({"kind": kind, "model": str(path), "sidecar": str(path.with_suffix(".json"))}))
    return 0


async def _list(settings: Settings) -> list[dict[str, object]]:
    from app.db import make_engine, make_sessionmaker
    from app.detectors import service

    engine = make_engine(settings.resolved_database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            rows = await service.list_detectors(session)
            return [
                {"id": row.id, "name": row.name, "sha256": row.sha256, "task_kind": row.sidecar["task_kind"]}
                for row in rows
            ]
    finally:
        await engine.dispose()


def cmd_list(args: argparse.Namespace) -> int:
    from app.cli import run_async

    for row in run_async(_list):
        print(json.dumps(row))
    return 0


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add `concord detector` to the main command."""
    parser = commands.add_parser("detector", help="train Concord's own detectors; list registered ones")
    actions = parser.add_subparsers(dest="detector_command", required=True, metavar="ACTION")
    train = actions.add_parser(
        "train", help="retrain detector(s) on phantom images and export ONNX + sidecar"
    )
    train.add_argument("--kind", choices=[*(kind.value for kind in KINDS), "all"], default="all")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    train.set_defaults(handler=cmd_train)
    listing = actions.add_parser("list", help="print the registered detectors, one JSON line each")
    listing.set_defaults(handler=cmd_list)
