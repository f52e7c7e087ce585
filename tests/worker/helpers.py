"""Helpers for worker tests: enqueue sleep jobs, wait for rows, start real worker processes."""

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.jobs import service
from app.models import Job

REPO_ROOT = Path(__file__).resolve().parents[2]
GIVE_UP_S = 60.0

Maker = async_sessionmaker[AsyncSession]


async def enqueue_sleep(maker: Maker, count: int, record_dir: Path, **params: Any) -> list[int]:
    timeout_s = params.pop("timeout_s", None)
    max_attempts = params.pop("max_attempts", None)
    async with maker() as session, session.begin():
        jobs = [
            await service.enqueue(
                session,
                "sleep",
                {"record_dir": str(record_dir), "marker": f"m{index}", **params},
                None,
                timeout_s=timeout_s,
                max_attempts=max_attempts,
            )
            for index in range(count)
        ]
    return [job.id for job in jobs]


async def job_rows(maker: Maker) -> list[Job]:
    async with maker() as session:
        return list((await session.scalars(select(Job).order_by(Job.id))).all())


async def job_row(maker: Maker, job_id: int) -> Job:
    async with maker() as session:
        job = await session.get(Job, job_id)
        assert job is not None
        return job


async def wait_until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll until the condition holds; a generous deadline only guards against a hung test."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GIVE_UP_S
    while not await condition():
        if loop.time() > deadline:
            raise AssertionError(f"gave up waiting for: {what}")
        await asyncio.sleep(0.05)


async def wait_for_status(maker: Maker, job_id: int, *statuses: str) -> Job:
    async def reached() -> bool:
        return (await job_row(maker, job_id)).status in statuses

    await wait_until(reached, f"job {job_id} in {statuses}")
    return await job_row(maker, job_id)


def records(record_dir: Path, stage: str) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(record_dir.glob(f"{stage}-*.json"))]


def process_gone(pid: int) -> bool:
    try:
        status: str = psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return True
    return status == "zombie"


def start_worker(settings: Settings, name: str, log_dir: Path, *extra: str) -> subprocess.Popen[bytes]:
    """A real `python -m worker` process in its own process group (so a test can kill the group)."""
    env = {
        **os.environ,
        "CONCORD_DATABASE_URL": settings.resolved_database_url,
        "CONCORD_DATA_DIR": str(settings.data_dir),
    }
    command = [sys.executable, "-m", "worker", "--name", name, "--poll-interval", "0.05", *extra]
    with (log_dir / f"worker-{name}.log").open("wb") as log:
        return subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def worker_log(log_dir: Path, name: str) -> str:
    path = log_dir / f"worker-{name}.log"
    return path.read_text(errors="replace") if path.exists() else ""
