"""`concord import-exact` and `concord evaluate`: each opens its own session and commits once."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TypeAlias

from app.config import Settings
from app.db import make_engine, make_sessionmaker
from app.errors import Invalid
from app.evaluation.importer import ERROR_KINDS, ImportFile, ImportRequest, import_exact
from app.evaluation.schemas import ConsensusOut, ImportReport, StudyMetricsOut
from app.evaluation.service import MetricsParams, find_study, study_metrics

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def register(commands: Subparsers) -> None:
    _register_import(commands)
    _register_evaluate(commands)


def _register_import(commands: Subparsers) -> None:
    parser = commands.add_parser(
        "import-exact", help="import EXACT text exports into a study (all or nothing)"
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.add_argument("--study", required=True)
    parser.add_argument("--task", required=True)
    parser.add_argument("--kind", required=True, choices=["classify", "grade", "detect"])
    parser.add_argument(
        "--role", required=True, choices=["ground-truth", "suggestions", "expert", "injected"]
    )
    parser.add_argument(
        "--mode", choices=["unaided", "aided"], help="expert files: the mode they were made in"
    )
    parser.add_argument("--expert", help="expert files: whose (default: the user of the open/close lines)")
    parser.add_argument("--error-kind", choices=ERROR_KINDS, help="injected files: the kind of error")
    parser.add_argument("--group", type=int, help="injected files: difficulty group")
    parser.set_defaults(handler=cmd_import)


def _register_evaluate(commands: Subparsers) -> None:
    parser = commands.add_parser("evaluate", help="print a study's metrics")
    parser.add_argument("--study", required=True, help="name or id")
    parser.add_argument("--iou", type=float, default=0.25)
    parser.add_argument("--error-iou", type=float, default=None)
    parser.add_argument("--json", action="store_true", help="print the JSON of GET /studies/{id}/metrics")
    _add_consensus_arguments(parser)
    parser.set_defaults(handler=cmd_evaluate)


def _add_consensus_arguments(parser: argparse.ArgumentParser) -> None:
    """`--consensus-radius PX | --consensus-nms IOU [--min-votes N]`, the metrics route's query names."""
    method = parser.add_mutually_exclusive_group()
    method.add_argument(
        "--consensus-radius", type=float, metavar="PX", help="consensus by box centres within PX pixels"
    )
    method.add_argument(
        "--consensus-nms", type=float, metavar="IOU", help="consensus by NMS vote counting at this IoU"
    )
    parser.add_argument(
        "--min-votes", type=int, default=1, metavar="N", help="keep consensus objects with ≥ N votes"
    )


def cmd_import(args: argparse.Namespace) -> int:
    from app.cli import run_async

    request = ImportRequest(
        args.study, args.task, args.kind, args.role, args.mode, args.expert, args.error_kind, args.group
    )
    files = [ImportFile(str(path), _read(path)) for path in args.files]
    report = run_async(lambda settings: run_import(settings, request, files))
    print(describe_import(report))
    return 0


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise Invalid(f"{path}: cannot read ({error})") from error


async def run_import(settings: Settings, request: ImportRequest, files: list[ImportFile]) -> ImportReport:
    engine = make_engine(settings.resolved_database_url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            return await import_exact(session, request, files)
    finally:
        await engine.dispose()


def describe_import(report: ImportReport) -> str:
    lines = [
        f"study {report.study!r} (id {report.study_id}{', new' if report.created_study else ''}), "
        f"task {report.task!r} (id {report.task_id}{', new' if report.created_task else ''})",
        f"new labels: {', '.join(report.new_labels) or 'none'}; new images: {report.new_images}; "
        f"new experts: {', '.join(report.new_experts) or 'none'}",
    ]
    for item in report.files:
        who = f" {item.expert} {item.mode}" if item.expert else ""
        lines.append(
            f"{item.file}:{who} read {item.objects} objects ({item.deleted} deleted), {item.visits} open/close "
            f"lines, {item.empty_images} 'not in image' lines, {item.images} images; stored {item.stored}"
        )
        if item.size_disagreements or item.outside_image:
            lines.append(
                f"  {item.size_disagreements} lines give an image size other than the one kept; "
                f"{item.outside_image} objects lie outside the image or on its border (not counted)"
            )
        lines += [f"  skipped line {line.line}: {line.reason}" for line in item.skipped]
    return "\n".join(lines)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from app.cli import run_async

    params = MetricsParams(
        iou=args.iou,
        error_iou=args.error_iou,
        consensus_radius=args.consensus_radius,
        consensus_nms=args.consensus_nms,
        min_votes=args.min_votes,
    )
    metrics = run_async(lambda settings: run_evaluate(settings, args.study, params))
    if args.json:
        print(json.dumps(metrics.model_dump(mode="json")))
    else:
        sys.stdout.write(describe_metrics(metrics))
    return 0


async def run_evaluate(settings: Settings, study: str, params: MetricsParams) -> StudyMetricsOut:
    engine = make_engine(settings.resolved_database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            return await study_metrics(session, await find_study(session, study), params)
    finally:
        await engine.dispose()


def describe_metrics(metrics: StudyMetricsOut) -> str:
    lines = [f"study {metrics.study!r}: IoU {metrics.iou}, error IoU {metrics.error_iou}"]
    for task, result in metrics.tasks.items():
        lines.append(f"task {task!r}: all suggestions accepted: {_fmt(result.suggestions.concordance)}")
        for mode, mode_result in result.modes.items():
            lines.append(f"  {mode}: {'expert':<20} objects  s/image  concordance  vote-weighted")
            for expert, row in mode_result.experts.items():
                lines.append(
                    f"    {expert:<24} {row.objects:>7} {_fmt(row.seconds_per_image, 2):>8} "
                    f"{_fmt(row.concordance):>12} {_fmt(row.vote_weighted_concordance):>14}"
                )
            summary = mode_result.summary.concordance
            lines.append(
                f"    concordance mean {_fmt(summary.mean)} (min {_fmt(summary.min)}, max {_fmt(summary.max)}, "
                f"sd {_fmt(summary.sd)})"
            )
            if mode_result.consensus is not None:
                lines.append(f"    {describe_consensus(mode_result.consensus)}")
    lines.append(f"timing: load {metrics.timing.load_s:.3f} s, compute {metrics.timing.compute_s:.3f} s")
    return "\n".join(lines) + "\n"


def describe_consensus(result: ConsensusOut) -> str:
    how = f"radius {result.radius:g} px" if result.method == "radius" else f"NMS at IoU {result.nms_iou:g}"
    votes = ", ".join(f"{count}×{votes}" for votes, count in result.votes.items()) or "none"
    return (
        f"consensus ({how}, ≥ {result.min_votes} votes): {result.objects} objects, concordance "
        f"{_fmt(result.concordance)}; objects × votes: {votes}"
    )


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
