"""Admin pages of the evaluation: a study's dashboard with plots, tables, statistics and downloads."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from app.deps import SessionDep
from app.errors import NotFound
from app.evaluation import exports, plots
from app.evaluation.service import MetricsParams, study_metrics
from app.models import Study
from app.offload import ComputeDep
from app.schemas_common import FiniteFloat, PathId
from app.studies import service as studies
from app.templating import PageAdmin, render
from app.training import service as training

router = APIRouter(tags=["evaluation pages"], include_in_schema=False)

Iou = Annotated[FiniteFloat, Query(gt=0, le=1)]


def _params(iou: float, error_iou: float | None, radius: float | None, min_votes: int) -> MetricsParams:
    return MetricsParams(iou=iou, error_iou=error_iou, consensus_radius=radius, min_votes=min_votes)


@router.get("/admin/evaluation")
async def evaluation_index(request: Request, session: SessionDep, principal: PageAdmin) -> Response:
    """Every study with a link to its evaluation dashboard (admin)."""
    summaries = await studies.study_summaries(session, principal.user)
    context = {"principal": principal, "nav": "evaluation", "summaries": summaries}
    return render(request, "evaluation/index.html", context)


@router.get("/studies/{study_id}/evaluation")
async def evaluation_page(
    request: Request,
    study_id: PathId,
    session: SessionDep,
    principal: PageAdmin,
    compute: ComputeDep,
    iou: Iou = 0.25,
    error_iou: Annotated[FiniteFloat | None, Query(gt=0, le=1)] = None,
    radius: Annotated[FiniteFloat | None, Query(gt=0)] = 50.0,
    min_votes: Annotated[int, Query(ge=1)] = 1,
) -> Response:
    """A study's evaluation dashboard; HTMX requests get the results block alone."""
    study = await _study(session, study_id)
    params = _params(iou, error_iou, radius, min_votes)
    metrics = await study_metrics(session, study, params, compute)
    query = f"iou={params.iou}&error_iou={params.register_iou}"
    training_runs = await training.runs_of_study(session, study.id)
    context = {
        "principal": principal,
        "nav": "evaluation",
        "training_runs": len(training_runs),
        "study": study,
        "metrics": metrics,
        "params": params,
        "query": query,
        "tables": {name: exports.metrics_table(metrics, name) for name in exports.METRICS_TABLES},
        "plots": plots.PLOTS,
    }
    return render(request, "evaluation/dashboard.html", context, block="results")


@router.get("/studies/{study_id}/evaluation/plots/{task}/{plot}.{fmt}")
async def evaluation_plot(
    study_id: PathId,
    task: str,
    plot: str,
    fmt: Literal["svg", "png"],
    session: SessionDep,
    _admin: PageAdmin,
    compute: ComputeDep,
    iou: Iou = 0.25,
    error_iou: Annotated[FiniteFloat | None, Query(gt=0, le=1)] = None,
) -> Response:
    """One plot of a task (seconds, concordance, injected) as SVG or PNG."""
    if plot not in plots.PLOTS:
        raise NotFound(f"no plot {plot!r}; plots: {', '.join(plots.PLOTS)}")
    study = await _study(session, study_id)
    metrics = await study_metrics(session, study, MetricsParams(iou=iou, error_iou=error_iou), compute)
    if task not in metrics.tasks:
        raise NotFound(f"no task {task!r} in study {study.name!r}")
    body = await compute(plots.render, metrics.tasks[task], plot, fmt)
    media = "image/svg+xml" if fmt == "svg" else "image/png"
    return Response(body, media_type=media)


async def _study(session: SessionDep, study_id: int) -> Study:
    study = await session.get(Study, study_id)
    if study is None:
        raise NotFound(f"no study {study_id}")
    return study
