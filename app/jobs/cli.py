"""`concord jobs list|show|cancel`: the job queue from the command line (one short transaction each)."""

from __future__ import annotations

import argparse
import json
from typing import TypeAlias

from app.config import Settings
from app.db import make_engine, make_sessionmaker
from app.jobs import service
from app.jobs.schemas import JobOut

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def register(commands: Subparsers) -> None:
    jobs = commands.add_parser("jobs", help="list, show and cancel jobs")
    actions = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="jobs, newest first")
    listing.add_argument("--status", choices=["queued", "running", "succeeded", "failed", "cancelled"])
    listing.add_argument("--kind")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_list)
    show = actions.add_parser("show", help="one job as JSON (params, progress, result, error)")
    show.add_argument("job_id", type=int)
    show.set_defaults(handler=cmd_show)
    cancel = actions.add_parser("cancel", help="cancel a queued job, or ask the worker to stop a running one")
    cancel.add_argument("job_id", type=int)
    cancel.set_defaults(handler=cmd_cancel)


async def _list(settings: Settings, status: str | None, kind: str | None, limit: int) -> list[JobOut]:
    engine = make_engine(settings.resolved_database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            return [
                JobOut.model_validate(job) for job in await service.list_jobs(session, status, kind, limit)
            ]
    finally:
        await engine.dispose()


async def _show(settings: Settings, job_id: int) -> JobOut:
    engine = make_engine(settings.resolved_database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            return JobOut.model_validate(await service.get_job(session, job_id))
    finally:
        await engine.dispose()


async def _cancel(settings: Settings, job_id: int) -> JobOut:
    engine = make_engine(settings.resolved_database_url)
    try:
        async with make_sessionmaker(engine)() as session, session.begin():
            return JobOut.model_validate(await service.cancel(session, job_id))
    finally:
        await engine.dispose()


def cmd_list(args: argparse.Namespace) -> int:
    from app.cli import run_async

    jobs = run_async(lambda settings: _list(settings, args.status, args.kind, args.limit))
    if args.json:
        print(json.dumps([job.model_dump(mode="json") for job in jobs]))
        return 0
    for job in jobs:
        print(f"{job.id:>6}  {job.kind:<18} {job.status:<10} {job.progress:4.0%}  {job.message[:60]}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from app.cli import run_async

    job = run_async(lambda settings: _show(settings, args.job_id))
    print(json.dumps(job.model_dump(mode="json"), indent=2))
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from app.cli import run_async

    job = run_async(lambda settings: _cancel(settings, args.job_id))
    print(f"job {job.id}: {job.status}{' (cancel requested)' if job.cancel_requested else ''}")
    return 0
