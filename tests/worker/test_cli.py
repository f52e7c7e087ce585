"""`concord worker` and `python -m worker` share their options."""

import argparse
import subprocess
import sys

from tests.worker.helpers import REPO_ROOT
from worker.cli import register, run_from_args


def test_worker_command_parses_its_options() -> None:
    parser = argparse.ArgumentParser(prog="concord")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        [
            "worker",
            "--once",
            "--poll-interval",
            "0.2",
            "--lease-seconds",
            "5",
            "--name",
            "gpu-1",
            "--kind",
            "sleep",
        ]
    )
    assert args.handler is run_from_args
    assert (args.once, args.poll_interval, args.lease_seconds, args.name, args.kind) == (
        True,
        0.2,
        5.0,
        "gpu-1",
        ["sleep"],
    )


def test_python_dash_m_worker_offers_the_same_options() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "worker", "--help"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    for option in ("--once", "--poll-interval", "--lease-seconds", "--name", "--kind"):
        assert option in completed.stdout
