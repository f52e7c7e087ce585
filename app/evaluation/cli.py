"""`concord import-exact` and `concord evaluate`: each opens its own session and commits once."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TypeAlias

from app.config import Settings
from app.db import make_engine, make_sessionmaker
from app.errors import Invalid
from app.evaluation.importer import ERROR_KINDS, ImportFile, ImportRequest, import_exact
from app.evaluation.schemas import ConsensusOut, ImportReport, StudyMetricsOut, TaskMetricsOut
from app.evaluation.service import DEFAULT_COUNT_THRESHOLD, MetricsParams, find_study, study_metrics
from app.models import TaskKind

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def register(commands: Subparsers) -> None:
    _register_import(commands)
    _register_evaluate(commands)
    _register_bundle(commands)


def _register_bundle(commands: Subparsers) -> None:
    exporter = commands.add_parser("export-study", help="write a study bundle (zip) for publication")
    exporter.add_argument("--study", required=True, help="name or id")
    exporter.add_argument("--out", required=True, type=Path, help="the zip to write")
    exporter.set_defaults(handler=cmd_export_study)
    importer = commands.add_parser(
        "import-study", help="read a study bundle into this Concord (all or nothing)"
    )
    importer.add_argument("bundle", type=Path, metavar="BUNDLE.zip")
    importer.add_argument("--as", dest="rename", help="import under this study name")
    importer.set_defaults(handler=cmd_import_study)


def cmd_export_study(args: argparse.Namespace) -> int:
    from app.cli import run_async

    payload = run_async(lambda settings: run_export_study(settings, args.study))
    try:
        args.out.write_bytes(payload)
    except OSError as error:
        raise Invalid(f"{args.out}: cannot write ({error})") from error
    print(f"wrote {args.out} ({len(payload)} bytes)")
    return 0


async def run_export_study(settings: Settings, study: str) -> bytes:
    from app.evaluation.bundle import bundle_of_study

    engine = make_engine(settings.resolved_database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            return await bundle_of_study(session, await find_study(session, study))
    finally:
        await engine.dispose()


def cmd_import_study(args: argparse.Namespace) -> int:
    from app.cli import run_async
    from app.evaluation.bundle import describe

    try:
        payload = args.bundle.read_bytes()
    except OSError as error:
        raise Invalid(f"{args.bundle}: cannot read ({error})") from error
    imported = run_async(lambda settings: run_import_study(settings, payload, args.rename))
    print(describe(imported))
    return 0


async def run_import_study(settings: Settings, payload: bytes, rename: str | None) -> Any:
    from app.evaluation.bundle import import_study

    engine = make_engine(settings.resolved_database_url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            return await import_study(session, payload, rename)
    finally:
        await engine.dispose()


def _register_import(commands: Subparsers) -> None:
    parser = commands.add_parser(
        "import-exact", help="import EXACT text exports into a study (all or nothing)"
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE")
    parser.add_argument("--study", required=True)
    parser.add_argument("--task", required=True)
    parser.add_argument("--kind", required=True, choices=[kind.value for kind in TaskKind])
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
    parser.add_argument(
        "--count-threshold",
        type=float,
        default=DEFAULT_COUNT_THRESHOLD,
        help="clinical count threshold per image for detection tasks (default 7, mitotic figures per HPF)",
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=0,
        metavar="N",
        help="bootstrap replicates for 95%% intervals (0: none)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
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
        count_threshold=args.count_threshold,
        bootstrap=args.bootstrap,
        seed=args.seed,
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
    """Every figure of the metrics as readable tables, one block per task."""
    lines = [f"study {metrics.study!r}: IoU {metrics.iou}, error IoU {metrics.error_iou}"]
    for task, result in metrics.tasks.items():
        lines.append("")
        lines.append(f"== task {task!r}: all suggestions accepted: {_fmt(result.suggestions.concordance)}")
        lines += _experts_table(result)
        lines += _consensus_lines(result)
        lines += _injected_table(result)
        lines += _tests_table(result)
        lines += _agreement_tables(result)
        lines += _uncertainty_table(result)
    lines.append("")
    lines.append(f"timing: load {metrics.timing.load_s:.3f} s, compute {metrics.timing.compute_s:.3f} s")
    return "\n".join(lines) + "\n"


def table(header: list[str], rows: list[list[str]], indent: str = "  ") -> list[str]:
    """Columns padded to their widest cell; the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        parts = [
            str(cell).ljust(widths[0]) if index == 0 else str(cell).rjust(widths[index])
            for index, cell in enumerate(cells)
        ]
        return indent + "  ".join(parts).rstrip()

    return [line(header), line(["-" * width for width in widths]), *(line(row) for row in rows)]


def _experts_table(result: TaskMetricsOut) -> list[str]:
    rows = []
    for mode, mode_result in result.modes.items():
        for expert, row in mode_result.experts.items():
            rows.append(
                [
                    mode,
                    expert,
                    str(row.objects),
                    _fmt(row.seconds_per_image, 2),
                    _fmt(row.concordance),
                    _fmt(row.vote_weighted_concordance),
                ]
            )
        summary = mode_result.summary.concordance
        rows.append(
            [
                mode,
                "mean (sd)",
                "",
                _fmt(mode_result.summary.seconds_per_image.mean, 2),
                f"{_fmt(summary.mean)} ({_fmt(summary.sd)})",
                "",
            ]
        )
    lines = ["experts:"]
    return lines + table(["mode", "expert", "objects", "s/image", "concordance", "vote-weighted"], rows)


def _injected_table(result: TaskMetricsOut) -> list[str]:
    rows = []
    for kind, groups in result.injected_errors.items():
        for group, modes in groups.items():
            for mode, counts in modes.items():
                pooled = counts.pooled.model_dump()
                rows.append([kind, group, mode, *(_cell(value) for value in pooled.values())])
                header = list(pooled)
    if not rows:
        return []
    return ["injected errors (pooled over experts):", *table(["kind", "group", "mode", *header], rows)]


def _tests_table(result: TaskMetricsOut) -> list[str]:
    rows = [
        [
            measure,
            _fmt(test.mean_difference, 4),
            _fmt(test.effect_size_dz, 3),
            _fmt(test.anova_F, 3),
            _pvalue(test.anova_p),
            _pvalue(test.anova_p_holm),
            _fmt(test.paired_t, 3),
            _pvalue(test.paired_p),
            _pvalue(test.paired_p_holm),
            test.note,
        ]
        for measure, test in result.statistics.items()
    ]
    header = [
        "aided vs unaided",
        "mean diff",
        "d_z",
        "ANOVA F",
        "p",
        "p Holm",
        "paired t",
        "p",
        "p Holm",
        "note",
    ]
    return ["tests (aided − unaided; Holm across tasks):", *table(header, rows)]


def _agreement_tables(result: TaskMetricsOut) -> list[str]:
    found = result.agreement
    if found is None or not found.modes:
        return []
    counted = found.count_label or "every label"
    lines = [f"agreement (label kappa weights: {found.label_kappa_weights}; counts of {counted} per image):"]
    rows = []
    for mode, agreed in found.modes.items():
        for expert, row in agreed.experts.items():
            limits = row.count_bland_altman
            rows.append(
                [
                    mode,
                    expert,
                    str(row.matched_cells),
                    _fmt(row.label_kappa, 3),
                    str(row.images),
                    _fmt(row.count_icc, 3),
                    _fmt(limits.bias, 2),
                    f"{_fmt(limits.lower, 2)}..{_fmt(limits.upper, 2)}",
                    _count(row.threshold_over),
                    _count(row.threshold_under),
                ]
            )
    header = ["mode", "expert", "matched", "kappa", "images", "count ICC", "bias", "limits", "over", "under"]
    lines += table(header, rows)
    mode_rows = []
    for mode, agreed in found.modes.items():
        limits = agreed.count_bland_altman
        threshold = agreed.threshold
        mode_rows.append(
            [
                mode,
                str(agreed.clusters),
                _fmt(agreed.fleiss_kappa, 3),
                _fmt(agreed.krippendorff_alpha, 3),
                _fmt(agreed.count_icc_experts, 3),
                _fmt(limits.bias, 2),
                f"{_fmt(limits.lower, 2)}..{_fmt(limits.upper, 2)}",
                "-" if threshold is None else f"{threshold.over}/{threshold.under} of {threshold.cases}",
            ]
        )
    lines.append(
        f"across experts (clusters within {found.consensus_radius:g} px"
        + (f"; threshold {found.count_threshold:g} per image" if found.count_threshold is not None else "")
        + "):"
    )
    header = ["mode", "clusters", "Fleiss κ", "Krippendorff α", "ICC experts", "bias", "limits", "over/under"]
    return lines + table(header, mode_rows)


def _uncertainty_table(result: TaskMetricsOut) -> list[str]:
    found = result.uncertainty
    if found is None:
        return []
    rows = [
        [measure, mode, _fmt(interval.estimate), f"{_fmt(interval.low)}..{_fmt(interval.high)}"]
        for measure, modes in found.measures.items()
        for mode, interval in modes.items()
    ]
    title = f"bootstrap {found.level:.0%} intervals ({found.replicates} replicates, seed {found.seed}):"
    return [title, *table(["measure", "mode", "estimate", "interval"], rows)]


def _pvalue(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if value >= 0.001 else f"{value:.1e}"


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return _fmt(value)
    return "-" if value is None else str(value)


def describe_consensus(result: ConsensusOut) -> str:
    how = f"radius {result.radius:g} px" if result.method == "radius" else f"NMS at IoU {result.nms_iou:g}"
    votes = ", ".join(f"{count}×{votes}" for votes, count in result.votes.items()) or "none"
    return (
        f"consensus ({how}, ≥ {result.min_votes} votes): {result.objects} objects, concordance "
        f"{_fmt(result.concordance)}; objects × votes: {votes}"
    )


def _consensus_lines(result: TaskMetricsOut) -> list[str]:
    return [
        f"{mode}: {describe_consensus(mode_result.consensus)}"
        for mode, mode_result in result.modes.items()
        if mode_result.consensus is not None
    ]


def _fmt(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
