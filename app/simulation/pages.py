"""HTML routes of study planning: the admin page "Plan a study" (a form, the power table, the plot)."""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from app.deps import SessionDep
from app.errors import AppError
from app.offload import ComputeDep, in_thread
from app.schemas_common import DB_ID_MAX
from app.simulation import service
from app.simulation.presets import PRESETS
from app.simulation.schemas import PlanQuery, describe
from app.studies import repository as studies_repository
from app.templating import PageAdmin, render

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


@router.get("/admin/plan")
async def plan_page(
    request: Request, session: SessionDep, principal: PageAdmin, compute: ComputeDep
) -> Response:
    """Plan a study: power and caught rates by repeated simulation for experts × images (admin)."""
    params = dict(request.query_params)
    context: dict[str, Any] = {
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
