"""Admin pages of the evaluation: a study's dashboard with plots, tables, statistics and downloads."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from app.deps import SessionDep
from app.errors import NotFound
from app.evaluation import exports, plots
from app.evaluation.schemas import StudyMetricsOut
from app.evaluation.service import MetricsParams, study_metrics, task_ids_of_study
from app.models import Study
from app.offload import ComputeDep
from app.schemas_common import FiniteFloat, PathId
from app.studies import service as studies
from app.templating import PageAdmin, is_htmx, render
from app.training import service as training

router = APIRouter(tags=["evaluation pages"], include_in_schema=False)

Iou = Annotated[FiniteFloat, Query(gt=0, le=1)]
ConsensusChoice = Literal["radius", "nms"]


def _params(
    iou: float,
    error_iou: float | None,
    consensus: ConsensusChoice,
    radius: float,
    nms_iou: float,
    min_votes: int,
) -> MetricsParams:
    if consensus == "nms":
        return MetricsParams(iou=iou, error_iou=error_iou, consensus_nms=nms_iou, min_votes=min_votes)
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
    consensus: ConsensusChoice = "radius",
    radius: Annotated[FiniteFloat, Query(gt=0)] = 50.0,
    nms_iou: Annotated[FiniteFloat, Query(gt=0, le=1)] = 0.5,
    min_votes: Annotated[int, Query(ge=1, le=1000)] = 1,
) -> Response:
    """A study's evaluation dashboard; the page shows a placeholder, its HTMX request gets the results block.

    The results block computes the study once and draws every plot from that one computation (as data: URIs).
    """
    study = await _study(session, study_id)
    params = _params(iou, error_iou, consensus, radius, nms_iou, min_votes).check()
    context: dict[str, object] = {
        "principal": principal,
        "nav": "evaluation",
        "study": study,
        "params": params,
        "consensus": consensus,
        "metrics": None,
    }
    context["load_url"] = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if is_htmx(request):
        metrics = await study_metrics(session, study, params, compute)
        context.update(
            {
                "metrics": metrics,
                "training_runs": len(await training.runs_of_study(session, study.id)),
                "query": f"iou={params.iou}&error_iou={params.register_iou}",
                "tables": {name: exports.metrics_table(metrics, name) for name in exports.METRICS_TABLES},
                "drawn": await compute(_draw_all, metrics),
                "task_ids": await task_ids_of_study(session, study.id),
            }
        )
    return render(request, "evaluation/dashboard.html", context, block="results")


def _draw_all(metrics: StudyMetricsOut) -> dict[str, dict[str, str]]:
    """task → plot → SVG data: URI."""
    return {name: plots.render_all_svg(task) for name, task in metrics.tasks.items()}


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
