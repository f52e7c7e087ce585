"""`concord simulate` (a whole study with simulated experts, or the calibration table) and `concord plan`."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import httpx
from sqlalchemy import select

from app.config import Settings
from app.simulation.runner import SimulationReport


def _positive_float(text: str) -> float:
    value = float(text)
    if not 1.0 <= value <= 10_000.0:
        raise argparse.ArgumentTypeError("give a number from 1 to 10000")
    return value


def _experts(text: str) -> int:
    value = int(text)
    if not 1 <= value <= 40:
        raise argparse.ArgumentTypeError("give 1 to 40 experts")
    return value


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    simulate = commands.add_parser(
        "simulate", help="run a study with simulated experts (unaided, washout, aided) through the API"
    )
    simulate.add_argument("--study", help="study name or id (not with --calibration)")
    simulate.add_argument("--experts", type=_experts, default=10)
    simulate.add_argument("--preset", default="paper")
    simulate.add_argument(
        "--speedup", type=_positive_float, default=50.0, help="model seconds per wall second"
    )
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument(
        "--url", help="a running Concord (token from --token or CONCORD_TOKEN); default: in process"
    )
    simulate.add_argument("--token", help="an admin's API token for --url")
    simulate.add_argument("--admin", help="in process: the admin to act as (default: the first admin)")
    simulate.add_argument(
        "--calibration",
        action="store_true",
        help="print the preset's calibration table (no server, no study)",
    )
    simulate.add_argument("--populations", type=int, default=4, help="--calibration: populations averaged")
    simulate.add_argument("--json", action="store_true")
    simulate.set_defaults(handler=cmd_simulate)

    plan = commands.add_parser(
        "plan",
        help="power to detect the concordance gain and time saving, by repeated simulation (no server)",
    )
    plan.add_argument("--kind", choices=["classify", "grade", "detect"], default="detect")
    plan.add_argument(
        "--experts",
        help="experts per mode, comma-separated (default 3,5,10; with --training-question 1,2,3)",
    )
    plan.add_argument("--images", default="5,15", help="images per mode, comma-separated")
    plan.add_argument("--preset", default="paper")
    plan.add_argument("--repetitions", type=int, default=100)
    plan.add_argument("--seed", type=int, default=0)
    plan.add_argument(
        "--figure", help="also write the plot (power, or the training question's accuracy) to this SVG or PNG"
    )
    plan.add_argument(
        "--fit-study", help="fit the population to this finished study's results (name or id) before planning"
    )
    plan.add_argument("--fit-task", help="with --fit-study: the task (default: the study's task of --kind)")
    plan.add_argument("--json", action="store_true")
    _training_question_options(plan)
    plan.set_defaults(handler=cmd_plan)


def _training_question_options(plan: argparse.ArgumentParser) -> None:
    group = plan.add_argument_group(
        "training question",
        "with --training-question: validation accuracy of the patch classifier trained on the votes of k "
        "simulated experts per mode, on phantoms (needs torch; options default to a CPU-sized run)",
    )
    group.add_argument(
        "--training-question",
        action="store_true",
        help="how many unaided experts match one aided expert? (trains here, in this process)",
    )
    group.add_argument("--losses", default="votes", help="votes, bce or votes,bce")
    group.add_argument("--repeats", type=int, help="repeats (seeds seed, seed + 1, …; default 2)")
    group.add_argument("--region-scale", type=int, help="phantom region: 1 = 3500 × 2500 px in 4 fields")
    for option in ("epochs-frozen", "epochs-unfrozen", "patch-size", "batch-size", "background-per-image"):
        group.add_argument(f"--{option}", type=int)
    group.add_argument("--device", choices=["auto", "cpu", "cuda"])
    group.add_argument("--cpu-threads", type=int, help="torch CPU threads (default: torch's choice)")
    group.add_argument("--weights", help="a local ResNet-18 state dict to start from (default: random)")


def cmd_simulate(args: argparse.Namespace) -> int:
    if args.calibration:
        return _calibration(args)
    if not args.study:
        print("concord simulate: give --study (or --calibration)", file=sys.stderr)
        return 2
    from app.cli import run_async
    from app.simulation.presets import PRESETS

    if args.preset not in PRESETS:
        print(
            f"concord simulate: unknown preset {args.preset!r}; known: {', '.join(PRESETS)}", file=sys.stderr
        )
        return 2
    try:
        if args.url:
            token = args.token or os.environ.get("CONCORD_TOKEN")
            if not token:
                print("concord simulate: --url needs --token or CONCORD_TOKEN (an admin's)", file=sys.stderr)
                return 2
            report = run_async(lambda _settings: _remote(args, token))
        else:
            from app.cli import cmd_migrate

            cmd_migrate(args)
            report = run_async(lambda settings: simulate_in_process(settings, args))
    except (LookupError, PermissionError) as error:
        print(f"concord simulate: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        from app.client import ApiError

        if isinstance(error, ApiError):
            print(f"concord simulate: {error}", file=sys.stderr)
            return 2
        raise
    print(json.dumps(report) if args.json else _describe(report))
    return 0


def _describe(report: dict[str, Any]) -> str:
    return (
        f"simulated study {report['study_id']}: {len(report['experts'])} experts, {report['edits']} edits, "
        f"{report['requests']} requests ({report['retries']} retried) in {report['wall_s']:.0f} s"
    )


async def _remote(args: argparse.Namespace, token: str) -> dict[str, Any]:
    from app.simulation.runner import simulate_study

    report = await simulate_study(
        args.url,
        token,
        args.study,
        experts=args.experts,
        preset_name=args.preset,
        speedup=args.speedup,
        seed=args.seed,
    )
    return report.as_json()


async def simulate_in_process(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    report = await run_in_process(
        settings,
        args.study,
        args.admin,
        experts=args.experts,
        preset_name=args.preset,
        speedup=args.speedup,
        seed=args.seed,
    )
    return report.as_json()


async def run_in_process(
    settings: Settings,
    study: str,
    admin: str | None,
    *,
    experts: int,
    preset_name: str = "paper",
    speedup: float = 50.0,
    seed: int = 0,
) -> SimulationReport:
    """Start the app in this process (on a migrated database) and simulate through an in-memory transport."""
    from app.main import create_app
    from app.simulation.runner import simulate_study

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        token = await admin_token(app.state.sessionmaker, admin)
        transport = httpx.ASGITransport(app=app)
        return await simulate_study(
            "http://concord",
            token,
            study,
            experts=experts,
            preset_name=preset_name,
            speedup=speedup,
            seed=seed,
            transport=transport,
        )


async def admin_token(sessionmaker: Any, name: str | None) -> str:
    """A one-day token of the named admin, or of the first admin."""
    from app.accounts import service as accounts
    from app.models import User

    async with sessionmaker() as session, session.begin():
        query = select(User).where(User.role == "admin").order_by(User.id)
        if name:
            query = query.where(User.name == name)
        admin = await session.scalar(query.limit(1))
        if admin is None:
            raise LookupError(
                f"no admin {name!r}" if name else "no admin user (concord user add NAME --role admin)"
            )
        token: str = await accounts.issue_token(session, admin.name, 1)
        return token


def _calibration(args: argparse.Namespace) -> int:
    from app.simulation.calibration import calibrate, markdown

    rows = calibrate(args.preset, experts=args.experts, seed=args.seed, populations=args.populations)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "figure": r.target.label,
                        "paper": r.target.value,
                        "simulated": r.simulated,
                        "within": r.within,
                    }
                    for r in rows
                ]
            )
        )
    else:
        print(markdown(rows))
    return 0 if all(row.within for row in rows) else 1


def cmd_plan(args: argparse.Namespace) -> int:
    if args.training_question:
        return cmd_training_question(args)
    from pydantic import ValidationError

    from app.errors import AppError
    from app.simulation import service
    from app.simulation.schemas import PlanQuery, describe

    try:
        query = PlanQuery(
            kind=args.kind,
            experts=[int(part) for part in (args.experts or "3,5,10").split(",") if part.strip()],
            images=[int(part) for part in args.images.split(",") if part.strip()],
            preset=args.preset,
            repetitions=args.repetitions,
            seed=args.seed,
        )
        if args.fit_study:
            from app.cli import run_async

            fitted = run_async(lambda settings: fit_to_study(settings, args.fit_study, args.fit_task, query))
            _print_fit(fitted)
            result = service.plan_with(query, fitted.params, f"fitted to {args.fit_study}")
        else:
            result = service.plan(query)
    except (ValueError, ValidationError, AppError, LookupError) as error:
        if isinstance(error, ValidationError):
            message = describe(error)
        else:
            message = error.message if isinstance(error, AppError) else f"give whole numbers: {error}"
        print(f"concord plan: {message}", file=sys.stderr)
        return 2
    if args.figure:
        fmt = "png" if args.figure.endswith(".png") else "svg"
        with open(args.figure, "wb") as out:
            out.write(service.plan_figure(result, fmt))
    if args.json:
        print(result.model_dump_json())
        return 0
    print(
        f"{result.kind}, preset {result.preset}, {result.repetitions} repetitions, paired t-test at α {result.alpha}"
    )
    print("experts images  power(concordance) power(time)  gain    s saved  caught unaided → aided")
    for row in result.rows:
        caught = "; ".join(
            f"{kind} {modes['unaided'].mean:.2f}→{modes['aided'].mean:.2f}"
            for kind, modes in row.caught.items()
            if "unaided" in modes and "aided" in modes
        )
        print(
            f"{row.experts:>7} {row.images:>6}  {row.concordance_power:>18.2f} {row.seconds_power:>11.2f}"
            f"  {row.concordance_gain:+.3f} {row.seconds_saved:>8.0f}  {caught}"
        )
    return 0


async def fit_to_study(settings: Settings, study_ref: str, task_name: str | None, query: Any) -> Any:
    """The population of the query's preset, fitted to one task of a finished study (see app.simulation.fitting)."""
    from app.db import make_engine, make_sessionmaker
    from app.evaluation.service import MetricsParams, find_study, study_metrics
    from app.models import Task
    from app.offload import in_thread
    from app.simulation import fitting
    from app.simulation.presets import preset

    engine = make_engine(settings.resolved_database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            study = await find_study(session, study_ref)
            metrics = await study_metrics(session, study, MetricsParams())
            kinds = {
                task.name: task.kind
                for task in await session.scalars(select(Task).where(Task.study_id == study.id))
            }
    finally:
        await engine.dispose()
    names = [name for name, kind in kinds.items() if (name == task_name if task_name else kind == query.kind)]
    if len(names) != 1:
        raise LookupError(f"give --fit-task: the study's tasks of kind {query.kind} are {names or 'none'}")
    if kinds[names[0]] != query.kind:
        raise LookupError(f"task {names[0]!r} is of kind {kinds[names[0]]}, not {query.kind}")
    observed = fitting.Observed.of(metrics.tasks[names[0]])
    return await in_thread(fitting.fit, query.kind, preset(query.preset)[query.kind], observed, query.seed)


def _print_fit(fitted: Any) -> None:
    print("fit to the study (observed → fitted; mean, sd over experts):")
    for measure, mode, observed, simulated, observed_sd, simulated_sd in fitted.quality():
        print(
            f"  {measure:<11} {mode:<7} mean {observed:8.3f} → {simulated:8.3f}   sd {observed_sd:7.3f} → {simulated_sd:7.3f}"
        )


QUESTION_OPTIONS = (
    "repeats", "region_scale", "epochs_frozen", "epochs_unfrozen", "patch_size", "batch_size",
    "background_per_image", "device", "cpu_threads", "weights",
)  # fmt: skip


def question_params(args: argparse.Namespace) -> Any:
    """The training question's params from the command line; ValueError or ValidationError says why not."""
    from app.simulation.schemas import TrainingQuestionParams

    if args.kind != "detect":
        raise ValueError(
            "the training question trains the mitotic-figure patch classifier: use --kind detect"
        )
    values: dict[str, Any] = {"preset": args.preset, "seed": args.seed}
    values["losses"] = [part.strip() for part in args.losses.split(",") if part.strip()]
    if args.experts:
        try:
            values["experts"] = [int(part) for part in args.experts.split(",") if part.strip()]
        except ValueError:
            raise ValueError(
                f"--experts takes whole numbers separated by commas, not {args.experts!r}"
            ) from None
    values.update({name: getattr(args, name) for name in QUESTION_OPTIONS if getattr(args, name) is not None})
    return TrainingQuestionParams.model_validate(values)


def cmd_training_question(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from app.simulation import training_question
    from app.simulation.schemas import describe

    try:
        params = question_params(args)
    except ValidationError as error:
        print(f"concord plan: {describe(error)}", file=sys.stderr)
        return 2
    except ValueError as error:
        print(f"concord plan: {error}", file=sys.stderr)
        return 2
    try:
        from worker.training.question import answer_question
    except ImportError as error:
        print(
            f"concord plan: the training question needs torch ({error}); install '.[train]'", file=sys.stderr
        )
        return 2
    result = answer_question(params, _progress_printer())
    if args.figure:
        fmt = "png" if args.figure.endswith(".png") else "svg"
        with open(args.figure, "wb") as out:
            out.write(training_question.figure(result, fmt))
    print(json.dumps(result) if args.json else training_question.describe(result))
    return 0


def _progress_printer() -> Any:
    last = [""]

    def report(fraction: float, message: str) -> None:
        if "batch" in message or message == last[0]:
            return
        last[0] = message
        print(f"[{fraction:4.0%}] {message}", file=sys.stderr, flush=True)

    return report
