"""HTML routes of study planning: the admin page "Plan a study" (a form, the power table, the plot) and its
training question (a `training_question` job: queued from the page, its progress and result shown there)."""

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from app.deps import SessionDep
from app.errors import AppError, NotFound
from app.jobs import service as jobs
from app.models import Job, JobStatus
from app.offload import ComputeDep, in_thread
from app.schemas_common import DB_ID_MAX, PathId
from app.simulation import service, training_question
from app.simulation.presets import PRESETS
from app.simulation.schemas import PlanQuery, TrainingQuestionParams, describe
from app.studies import repository as studies_repository
from app.templating import PageAdmin, is_htmx, redirect, render

router = APIRouter(tags=["pages"], include_in_schema=False)


def _numbers(text: str) -> list[int]:
    return [int(part) for part in text.replace(" ", "").split(",") if part]


def _query(params: dict[str, str]) -> PlanQuery:
    """The form's values as a PlanQuery; raises ValueError or ValidationError with a readable message."""
    return PlanQuery(
        kind=params.get("kind", "detect"),
        experts=_numbers(params.get("experts", "3,5,10")),
        images=_numbers(params.get("images", "5,15")),
        preset=params.get("preset", "paper"),
        repetitions=int(params.get("repetitions", "100")),
        seed=int(params.get("seed", "0")),
    )


def _message(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return describe(error)
    return "experts, images, repetitions and seed are whole numbers (lists separated by commas)"


def _fit_study(params: dict[str, str]) -> int | None:
    text = params.get("fit_study", "")
    if not text:
        return None
    if not text.isdigit() or not 1 <= int(text) <= DB_ID_MAX:
        raise ValueError("fit_study is a study id")
    return int(text)


async def _page_context(
    request: Request,
    session: AsyncSession,
    principal: PageAdmin,
    params: dict[str, str],
    question_error: str = "",
) -> dict[str, Any]:
    return {
        **await _question_context(session, params.get("question_job", ""), question_error),
        "principal": principal,
        "nav": "plan",
        "presets": sorted(PRESETS),
        "form": {
            "kind": params.get("kind", "detect"),
            "experts": params.get("experts", "3,5,10"),
            "images": params.get("images", "5,15"),
            "repetitions": params.get("repetitions", "100"),
            "preset": params.get("preset", "paper"),
            "fit_study": params.get("fit_study", ""),
        },
        "studies": list(await studies_repository.list_studies(session, None)),
        "fitted": None,
        "result": None,
        "error": "",
        "query_string": request.url.query,
    }


@router.get("/admin/plan")
async def plan_page(
    request: Request, session: SessionDep, principal: PageAdmin, compute: ComputeDep
) -> Response:
    """Plan a study: power and caught rates by repeated simulation for experts × images (admin)."""
    params = dict(request.query_params)
    context = await _page_context(request, session, principal, params)
    status = 200
    if "kind" in params:
        try:
            query, fit_study = _query(params), _fit_study(params)
            if fit_study is None:
                context["result"] = await in_thread(service.plan, query)
            else:
                fitted = await service.fitted_plan(session, compute, query, fit_study)
                context["fitted"], context["result"] = fitted, fitted.plan
        except (ValueError, ValidationError) as error:
            context["error"] = _message(error)
            status = 422
        except AppError as error:
            context["error"], status = error.message, error.status_code
    return render(request, "simulation/plan.html", context, status_code=status)


# ---------------------------------------------------------------- the training question

QUESTION_JOB = "training_question"
RECENT_QUESTIONS = 10
QUESTION_DEFAULTS = TrainingQuestionParams()


async def _question_context(session: AsyncSession, chosen: str, error: str = "") -> dict[str, Any]:
    """The training question's part of the page: recent jobs and the result of the chosen (else the
    newest succeeded) one."""
    recent = list(await jobs.list_jobs(session, None, QUESTION_JOB, RECENT_QUESTIONS))
    shown = _shown_question(recent, chosen)
    if shown is None and chosen.isdigit() and 1 <= int(chosen) <= DB_ID_MAX:
        found = await session.get(Job, int(chosen))
        shown = found if found is not None and found.kind == QUESTION_JOB else None
    result = shown.result if shown is not None and shown.status == JobStatus.succeeded else None
    return {
        "question_jobs": recent,
        "question_job": shown,
        "question_result": result,
        "question_defaults": QUESTION_DEFAULTS,
        "question_error": error,
    }


def _shown_question(recent: list[Job], chosen: str) -> Job | None:
    if chosen:
        return next((job for job in recent if str(job.id) == chosen), None)
    return next((job for job in recent if job.status == JobStatus.succeeded), None)


@router.post("/admin/plan/training-question")
async def ask_training_question(
    request: Request,
    session: SessionDep,
    principal: PageAdmin,
    experts: Annotated[str, Form()] = "1,2,3",
    losses: Annotated[str, Form()] = "votes",
    repeats: Annotated[str, Form()] = "2",
    epochs: Annotated[str, Form()] = "",
    region_scale: Annotated[str, Form()] = "1",
    seed: Annotated[str, Form()] = "0",
    preset: Annotated[str, Form()] = "paper",
) -> Response:
    """Queue a `training_question` job with the form's values and show it on the page (admin)."""
    values: dict[str, Any] = {"losses": ["votes", "bce"] if losses == "both" else [losses], "preset": preset}
    values.update(repeats=repeats.strip(), region_scale=region_scale.strip(), seed=seed.strip())
    if epochs.strip():
        values["epochs_unfrozen"] = epochs.strip()
    try:
        values["experts"] = _numbers(experts)
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}")
        params = TrainingQuestionParams.model_validate(values)
    except ValidationError as error:
        return await _question_error(request, session, principal, describe(error))
    except ValueError as error:
        message = str(error) if "preset" in str(error) else "experts are whole numbers separated by commas"
        return await _question_error(request, session, principal, message)
    job = await jobs.enqueue(session, QUESTION_JOB, params.model_dump(mode="json"), principal.user.id)
    await session.flush()
    return redirect(request, f"/admin/plan?question_job={job.id}#training-question")


async def _question_error(
    request: Request, session: AsyncSession, principal: PageAdmin, error: str
) -> Response:
    context = await _page_context(request, session, principal, {}, error)
    return render(request, "simulation/plan.html", context, status_code=422)


@router.get("/admin/plan/training-question")
async def training_question_block(request: Request, session: SessionDep, principal: PageAdmin) -> Response:
    """The page's training-question section (HTMX refreshes it when a job ends; else the whole page)."""
    chosen = request.query_params.get("question_job", "")
    if not is_htmx(request):
        return redirect(
            request, f"/admin/plan?question_job={chosen}#training-question" if chosen else "/admin/plan"
        )
    context = {**await _question_context(session, chosen), "principal": principal}
    return render(request, "simulation/plan.html", context, block="training_question")


@router.get("/admin/plan/training-question/{job_id}/figure.svg")
async def training_question_figure(job_id: PathId, session: SessionDep, principal: PageAdmin) -> Response:
    """Validation accuracy vs. experts per mode of a finished training question (admin)."""
    job = await session.get(Job, job_id)
    if job is None or job.kind != QUESTION_JOB or job.status != JobStatus.succeeded or not job.result:
        raise NotFound(f"no finished training question {job_id}")
    return Response(await in_thread(training_question.figure, job.result), media_type="image/svg+xml")


@router.get("/admin/plan/figure.svg")
async def plan_figure(
    request: Request, session: SessionDep, principal: PageAdmin, compute: ComputeDep
) -> Response:
    """The plan's power plot for the form's values (admin)."""
    params = dict(request.query_params)
    try:
        query, fit_study = _query(params), _fit_study(params)
    except (ValueError, ValidationError) as error:
        return Response(_message(error), status_code=422, media_type="text/plain")
    if fit_study is None:
        result = await in_thread(service.plan, query)
    else:
        result = (await service.fitted_plan(session, compute, query, fit_study)).plan
    return Response(await in_thread(service.plan_figure, result), media_type="image/svg+xml")
