"""Admin pages of the evaluation: a study's dashboard with plots, tables, statistics and downloads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from app.deps import PageAdmin, SessionDep
from app.errors import NotFound
from app.evaluation import cache, exports, plots
from app.evaluation.schemas import StudyMetricsOut, TaskMetricsOut, UncertaintyOut
from app.evaluation.service import MAX_BOOTSTRAP, MetricsParams, task_ids_of_study
from app.models import Study
from app.offload import Compute, ComputeDep
from app.schemas_common import FiniteFloat, PathId
from app.studies import service as studies
from app.templating import is_htmx, render
from app.training import service as training

router = APIRouter(tags=["evaluation pages"], include_in_schema=False)

Iou = Annotated[FiniteFloat, Query(gt=0, le=1)]
ConsensusChoice = Literal["radius", "nms"]
DASHBOARD_REPLICATES = 1000


@dataclass(frozen=True)
class DashboardQuery:
    """The dashboard's settings, shared by the page, its interval blocks and its plot downloads, so that all
    of them find the same cached evaluation."""

    params: MetricsParams
    consensus: ConsensusChoice
    radius: float
    nms_iou: float

    def page_query(self) -> str:
        """The query string of the dashboard's own routes (plots, intervals) for these settings."""
        params = self.params
        return urlencode(
            {
                "iou": params.iou,
                "error_iou": params.register_iou,
                "consensus": self.consensus,
                "radius": self.radius,
                "nms_iou": self.nms_iou,
                "min_votes": params.min_votes,
                "bootstrap": params.bootstrap,
                "seed": params.seed,
            }
        )

    def csv_query(self) -> str:
        """The query string of the metrics CSV route (`api.get_metrics_csv`) for these settings."""
        params = self.params
        consensus = (
            {"consensus_nms": params.consensus_nms}
            if params.consensus_nms is not None
            else {"consensus_radius": params.consensus_radius}
        )
        return urlencode(
            {"iou": params.iou, "error_iou": params.register_iou, **consensus, "min_votes": params.min_votes}
        )


def dashboard_query(
    iou: Iou = 0.25,
    error_iou: Annotated[FiniteFloat | None, Query(gt=0, le=1)] = None,
    consensus: ConsensusChoice = "radius",
    radius: Annotated[FiniteFloat, Query(gt=0)] = 50.0,
    nms_iou: Annotated[FiniteFloat, Query(gt=0, le=1)] = 0.5,
    min_votes: Annotated[int, Query(ge=1, le=1000)] = 1,
    bootstrap: Annotated[int, Query(ge=0, le=MAX_BOOTSTRAP)] = DASHBOARD_REPLICATES,
    seed: Annotated[int, Query(ge=0, le=2**32 - 1)] = 0,
) -> DashboardQuery:
    by_nms = consensus == "nms"
    params = MetricsParams(
        iou=iou,
        error_iou=error_iou,
        consensus_radius=None if by_nms else radius,
        consensus_nms=nms_iou if by_nms else None,
        min_votes=min_votes,
        bootstrap=bootstrap,
        seed=seed,
    )
    return DashboardQuery(params.check(), consensus, radius, nms_iou)


Settings = Annotated[DashboardQuery, Depends(dashboard_query)]


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
    settings: Settings,
) -> Response:
    """A study's evaluation dashboard; the page shows a placeholder, its HTMX request gets the results block.

    The results block takes the study's evaluation from the cache (computing it when the study or the settings
    changed) and draws every plot from it; each task's plots then load their bootstrap intervals as error
    bars (a separate, cached computation) unless they are known already.
    """
    study = await _study(session, study_id)
    params = settings.params
    context: dict[str, object] = {
        "principal": principal,
        "nav": "evaluation",
        "study": study,
        "params": params,
        "consensus": settings.consensus,
        "metrics": None,
    }
    context["load_url"] = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if is_htmx(request):
        context.update(await _results(session, study, settings, compute))
    return render(request, "evaluation/dashboard.html", context, block="results")


async def _results(
    session: AsyncSession, study: Study, settings: DashboardQuery, compute: Compute
) -> dict[str, object]:
    """What the results block shows: the cached evaluation, its plots (with intervals when known) and tables."""
    params = settings.params
    evaluation = await cache.study_evaluation(session, study, params, compute)
    metrics = evaluation.metrics
    known = {
        name: cache.known_intervals(evaluation, name, params.bootstrap, params.seed)
        if params.bootstrap
        else None
        for name in metrics.tasks
    }
    return {
        "metrics": metrics,
        "cached": not evaluation.computed,
        "training_runs": len(await training.runs_of_study(session, study.id)),
        "query": settings.page_query(),
        "csv_query": settings.csv_query(),
        "tables": {name: exports.metrics_table(metrics, name) for name in exports.METRICS_TABLES},
        "drawn": await compute(_draw_all, metrics, known),
        "known_intervals": known,
        "task_ids": await task_ids_of_study(session, study.id),
    }


def _draw_all(
    metrics: StudyMetricsOut, intervals: dict[str, UncertaintyOut | None]
) -> dict[str, dict[str, str]]:
    """task → plot → SVG data: URI."""
    return {
        name: plots.render_all_svg(cache.with_intervals(task, intervals.get(name)))
        for name, task in metrics.tasks.items()
    }


@router.get("/studies/{study_id}/evaluation/intervals/{task}")
async def evaluation_intervals(
    request: Request,
    study_id: PathId,
    task: str,
    session: SessionDep,
    _admin: PageAdmin,
    compute: ComputeDep,
    settings: Settings,
) -> Response:
    """A task's plots with their bootstrap intervals as error bars, and the intervals as a table (the block
    that replaces the task's plots on the dashboard once the bootstrap is done)."""
    study = await _study(session, study_id)
    evaluation = await cache.study_evaluation(session, study, settings.params, compute)
    found = _task_of(evaluation.metrics, task, study)
    intervals = await cache.task_intervals(
        evaluation, task, settings.params.bootstrap, settings.params.seed, compute
    )
    drawn = await compute(plots.render_all_svg, cache.with_intervals(found, intervals))
    context = {
        "study": study,
        "task_name": task,
        "drawings": drawn,
        "query": settings.page_query(),
        "params": settings.params,
        "intervals": intervals,
        "pending": False,
    }
    return render(request, "evaluation/plots.html", context)


@router.get("/studies/{study_id}/evaluation/plots/{task}/{plot}.{fmt}")
async def evaluation_plot(
    study_id: PathId,
    task: str,
    plot: str,
    fmt: Literal["svg", "png"],
    session: SessionDep,
    _admin: PageAdmin,
    compute: ComputeDep,
    settings: Settings,
) -> Response:
    """One plot of a task (seconds, concordance, injected) as SVG or PNG, from the dashboard's cached
    evaluation, with the bootstrap intervals of the settings as error bars (bootstrap=0: none)."""
    if plot not in plots.PLOTS:
        raise NotFound(f"no plot {plot!r}; plots: {', '.join(plots.PLOTS)}")
    study = await _study(session, study_id)
    params = settings.params
    evaluation = await cache.study_evaluation(session, study, params, compute)
    found = _task_of(evaluation.metrics, task, study)
    intervals = (
        await cache.task_intervals(evaluation, task, params.bootstrap, params.seed, compute)
        if params.bootstrap
        else None
    )
    body = await compute(plots.render, cache.with_intervals(found, intervals), plot, fmt)
    media = "image/svg+xml" if fmt == "svg" else "image/png"
    return Response(body, media_type=media)


def _task_of(metrics: StudyMetricsOut, task: str, study: Study) -> TaskMetricsOut:
    if task not in metrics.tasks:
        raise NotFound(f"no task {task!r} in study {study.name!r}")
    return metrics.tasks[task]


async def _study(session: SessionDep, study_id: int) -> Study:
    study = await session.get(Study, study_id)
    if study is None:
        raise NotFound(f"no study {study_id}")
    return study
