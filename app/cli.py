"""The `concord` command: serve, migrate, users, tokens, the demo study, and the commands of later domains."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from app.config import DataDirUnusable, Settings, get_settings

T = TypeVar("T")


def run_async(work: Callable[[Settings], Coroutine[Any, Any, T]]) -> T:
    """Runs a command's database work on the newest schema: a fresh data dir is migrated first, as serve does."""
    settings = get_settings()
    prepare_database(settings)
    return asyncio.run(work(settings))


def prepare_database(settings: Settings) -> None:
    """Creates and checks the data dir, then applies the migrations (a no-op on the newest schema)."""
    from app.migrate import upgrade

    usable_data_dir(settings.data_dir)
    upgrade(settings.resolved_database_url)


def usable_data_dir(folder: Path) -> Path:
    """The data dir, created if missing; DataDirUnusable when it cannot be created or written."""
    hint = "set CONCORD_DATA_DIR to a folder you can write"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise DataDirUnusable(f"cannot use the data dir {folder}: {reason}; {hint}") from error
    return folder


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = get_settings()
    prepare_database(settings)
    print(f"database is at the newest schema: {_safe_url(settings)}")
    return 0


def _safe_url(settings: Settings) -> str:
    url = settings.resolved_database_url
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://…@{rest.split('@', 1)[1]}"
    return url


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from app.observability.logs import logging_config

    cmd_migrate(args)
    settings = get_settings()
    if args.workers > 1 and settings.is_sqlite:
        print(
            "concord: SQLite takes one writer at a time; more server processes only wait for each other "
            "(use PostgreSQL for --workers > 1)",
            file=sys.stderr,
        )
    metrics_dir = _multiprocess_metrics_dir() if args.workers > 1 else None
    worker = _start_worker() if args.with_worker else None
    print(f"data dir: {get_settings().data_dir.resolve()}", flush=True)
    print(f"Concord listens on http://{args.host}:{args.port}/  (API docs: /docs)", flush=True)
    try:
        # proxy_headers off: CONCORD_FORWARDED_ALLOW_IPS alone decides whom X-Forwarded-* is believed from
        uvicorn.run(
            "app.main:create_served_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_config=logging_config(settings),
            access_log=False,  # the observability middleware writes one line per request
            proxy_headers=False,
        )
    finally:
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _multiprocess_metrics_dir() -> str | None:
    """Several server processes: each writes its metrics to files in one fresh folder, /metrics sums them.

    Returns the folder to remove at the end, or None when PROMETHEUS_MULTIPROC_DIR was given (kept).
    """
    from app.observability.metrics import MULTIPROCESS_ENV

    if os.environ.get(MULTIPROCESS_ENV):
        return None
    folder = tempfile.mkdtemp(prefix="concord-metrics-")
    os.environ[MULTIPROCESS_ENV] = folder  # inherited by the server processes uvicorn spawns
    return folder


def _start_worker() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "worker"], preexec_fn=_stop_with_parent)


def _stop_with_parent() -> None:
    """Linux: the worker gets SIGTERM when `serve` dies (uvicorn re-raises SIGTERM, skipping `finally`)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def cmd_user_add(args: argparse.Namespace) -> int:
    from app.accounts.cli import add_user

    password = args.password
    if password is None and sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.name} (empty: API token only): ") or None
    run_async(lambda settings: add_user(settings, args.name, args.role, password))
    print(f"created {args.role} {args.name}")
    return 0


def cmd_user_token(args: argparse.Namespace) -> int:
    from app.accounts.cli import new_token

    print(run_async(lambda settings: new_token(settings, args.name, args.expires)))
    return 0


def cmd_user_tokens(args: argparse.Namespace) -> int:
    from app.accounts.cli import list_tokens

    tokens = run_async(lambda settings: list_tokens(settings, args.name))
    print(f"{'id':>6}  {'created':<20}  {'expires':<20}  last used")
    for token in tokens:
        print(
            f"{token.id:>6}  {_when(token.created_at):<20}  {_when(token.expires_at, 'never'):<20}  "
            f"{_when(token.last_used_at)}"
        )
    return 0


def _when(moment: datetime | None, missing: str = "-") -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else missing


def cmd_user_revoke(args: argparse.Namespace) -> int:
    from app.accounts.cli import revoke_token

    run_async(lambda settings: revoke_token(settings, args.name, args.token_id))
    print(f"revoked token {args.token_id} of {args.name}")
    return 0


def cmd_user_disable(args: argparse.Namespace) -> int:
    from app.accounts.cli import set_disabled

    disabled = args.user_command == "disable"
    run_async(lambda settings: set_disabled(settings, args.name, disabled))
    print(f"{args.user_command}d {args.name}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from app.demo import create_demo

    cmd_migrate(args)
    credentials = run_async(
        lambda settings: create_demo(
            settings, seed=args.seed, simulated_experts=args.experts, speedup=args.speedup
        )
    )
    print(f"Demo study ready (data dir: {get_settings().data_dir.resolve()}). Log in with:")
    for name, role, password in credentials:
        print(f"  {role:<7} {name:<10} password: {password}")
    if args.experts:
        print(
            f"The study was run by {args.experts} simulated experts (marked simulated; see its evaluation); "
            "expert1 and expert2 are untouched for trying the workspace by hand."
        )
    return 0


def _simulated_experts(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 40:
        raise argparse.ArgumentTypeError("give 0 to 40 simulated experts")
    return value


def _speedup(text: str) -> float:
    value = float(text)
    if not 1.0 <= value <= 10_000.0:
        raise argparse.ArgumentTypeError("give a speedup from 1 to 10000")
    return value


Command = Callable[[argparse.Namespace], int]


def _token_days(text: str) -> int:
    days = int(text) if text.isdigit() else -1
    if not 0 <= days <= 3650:
        raise argparse.ArgumentTypeError("DAYS is a whole number from 0 (never expires) to 3650")
    return days


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="concord", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="apply migrations and run the web service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--with-worker", action="store_true", help="also start one worker process")
    serve.add_argument(
        "--workers",
        type=_positive,
        default=1,
        help="server processes sharing the port (PostgreSQL: as many as cores; SQLite: keep 1)",
    )
    serve.set_defaults(handler=cmd_serve)

    migrate = commands.add_parser("migrate", help="upgrade the database to the newest schema")
    migrate.set_defaults(handler=cmd_migrate)

    user = commands.add_parser("user", help="manage accounts")
    user_commands = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = user_commands.add_parser("add", help="create a user")
    add.add_argument("name")
    add.add_argument("--role", choices=["admin", "expert"], required=True)
    add.add_argument(
        "--password",
        help="at least 8 characters, not the user name, not a common password; prompted for on a terminal",
    )
    add.set_defaults(handler=cmd_user_add)
    token = user_commands.add_parser("token", help="print a new personal API token of a user")
    token.add_argument("name")
    token.add_argument(
        "--expires",
        type=_token_days,
        metavar="DAYS",
        help="days until the token expires (0: never; default CONCORD_TOKEN_DAYS, 90)",
    )
    token.set_defaults(handler=cmd_user_token)
    tokens = user_commands.add_parser("tokens", help="list a user's API tokens (never their secrets)")
    tokens.add_argument("name")
    tokens.set_defaults(handler=cmd_user_tokens)
    revoke = user_commands.add_parser("revoke", help="revoke one API token of a user at once")
    revoke.add_argument("name")
    revoke.add_argument("token_id", type=int)
    revoke.set_defaults(handler=cmd_user_revoke)
    for action, what in (
        ("disable", "stop a user's tokens and sessions at once; refuse login"),
        ("enable", "undo disable"),
    ):
        switch = user_commands.add_parser(action, help=what)
        switch.add_argument("name")
        switch.set_defaults(handler=cmd_user_disable)

    demo = commands.add_parser("demo", help="create (or reset) the demo study and print its logins")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--experts",
        type=_simulated_experts,
        default=4,
        help="simulated experts who run the study once, so the dashboard has numbers (0: none)",
    )
    demo.add_argument("--speedup", type=_speedup, default=100.0, help="simulated seconds per wall second")
    demo.set_defaults(handler=cmd_demo)

    for register in _extensions():
        register(commands)
    return parser


def _extensions() -> list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]]:
    """Commands of other domains register themselves here."""
    from app.detectors.cli import register as register_detectors
    from app.evaluation.cli import register as register_evaluation
    from app.images.cli import register as register_slides
    from app.jobs.cli import register as register_jobs
    from app.simulation.cli import register as register_simulation
    from app.training.cli import register as register_training
    from worker.cli import register as register_worker

    return [
        register_worker,
        register_evaluation,
        register_detectors,
        register_training,
        register_jobs,
        register_simulation,
        register_slides,
    ]


def main(argv: list[str] | None = None) -> int:
    from app.errors import AppError

    args = build_parser().parse_args(argv)
    handler: Command = args.handler
    try:
        return handler(args)
    except AppError as error:
        print(f"concord: {error.message}", file=sys.stderr)
        return 2
    except DataDirUnusable as error:
        print(f"concord: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
