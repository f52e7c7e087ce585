"""Command-line options of the worker, shared by `python -m worker` and `concord worker`."""

import argparse
import asyncio
import logging.config
import sys
from collections.abc import Sequence

from app.config import DataDirUnusable, get_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--once", action="store_true", help="run at most one job, then exit")
    parser.add_argument(
        "--poll-interval", type=float, default=1.0, metavar="SECONDS", help="wait between empty polls"
    )
    parser.add_argument(
        "--lease-seconds",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="lease length; renewed four times per lease while a job runs",
    )
    parser.add_argument("--name", help="lease owner name (default: host:pid); unique per worker")
    parser.add_argument(
        "--kind", action="append", default=[], help="claim only this job kind (repeatable; default: all)"
    )


def run_from_args(args: argparse.Namespace) -> int:
    """Runs the worker on the newest schema: a fresh data dir is migrated first, as `serve` does."""
    from app.cli import prepare_database
    from app.observability.logs import logging_config
    from worker.runner import WorkerOptions, default_worker_name, serve

    settings = get_settings()
    prepare_database(settings)
    logging.config.dictConfig(logging_config(settings))
    options = WorkerOptions(
        name=args.name or default_worker_name(),
        lease_s=args.lease_seconds,
        poll_interval_s=args.poll_interval,
        once=args.once,
        kinds=tuple(args.kind),
    )
    return asyncio.run(serve(settings, options))


def register(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add `concord worker` to the main command."""
    parser = commands.add_parser("worker", help="claim and run jobs from the job table")
    add_arguments(parser)
    parser.set_defaults(handler=run_from_args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worker", description="Claim and run Concord jobs.")
    add_arguments(parser)
    try:
        return run_from_args(parser.parse_args(argv))
    except DataDirUnusable as error:
        print(f"worker: {error}", file=sys.stderr)
        return 2
