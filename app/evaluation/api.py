"""JSON routes of the evaluation: EXACT import, study metrics, exports. Admin only."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Query, UploadFile
from fastapi.responses import PlainTextResponse, Response

from app.deps import AdminUser, SessionDep
from app.errors import Invalid, NotFound
from app.evaluation import cache, exports
from app.evaluation.importer import ImportFile, ImportRequest, import_exact
from app.evaluation.metrics import CONSENSUS_RADIUS_PX
from app.evaluation.schemas import (
    ErrorKind,
    EvaluatedMode,
    ExportFormat,
    ImportReport,
    ImportRole,
    StudyMetricsOut,
)
from app.evaluation.service import DEFAULT_COUNT_THRESHOLD, MAX_BOOTSTRAP, MetricsParams, study_metrics
from app.models import Study, Task, TaskKind
from app.offload import ComputeDep
from app.schemas_common import FiniteFloat, PathId, file_responses

router = APIRouter(tags=["evaluation"])

IouQuery = Annotated[
    FiniteFloat, Query(gt=0, le=1, description="IoU threshold of concordance (published: 0.25)")
]
ErrorIouQuery = Annotated[
    FiniteFloat | None, Query(gt=0, le=1, description="IoU threshold of injected errors (default: iou)")
]
RadiusQuery = Annotated[
    FiniteFloat | None, Query(gt=0, description="consensus by clustering box centres within this radius (px)")
]
NmsQuery = Annotated[
    FiniteFloat | None,
    Query(gt=0, le=1, description="consensus by NMS vote counting over all experts' boxes at this IoU"),
]
MinVotesQuery = Annotated[
    int, Query(ge=1, le=1000, description="keep consensus objects with at least N votes")
]
MEDIA = {
    "exact": "text/plain; charset=utf-8",
    "coco": "application/json",
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
}
SUFFIX = {"exact": "txt", "coco": "coco.json", "json": "json", "csv": "csv"}


@router.post("/import/exact", status_code=201)
async def import_exact_files(
    session: SessionDep,
    _admin: AdminUser,
    files: Annotated[list[UploadFile], File(description="EXACT text exports")],
    study: Annotated[str, Form(min_length=1, max_length=200)],
    task: Annotated[str, Form(min_length=1, max_length=200)],
    kind: Annotated[TaskKind, Form()],
    role: Annotated[ImportRole, Form()],
    mode: Annotated[EvaluatedMode | None, Form()] = None,
    expert: Annotated[str | None, Form(max_length=64)] = None,
    error_kind: Annotated[ErrorKind | None, Form()] = None,
    group: Annotated[int | None, Form()] = None,
) -> ImportReport:
    """Import EXACT files as ground truth, suggestions, expert work or injected-error register (all or nothing)."""
    request = ImportRequest(study, task, kind, role, mode, expert or None, error_kind, group)
    items = [
        ImportFile(upload.filename or f"file{index}", await _text(upload))
        for index, upload in enumerate(files)
    ]
    return await import_exact(session, request, items)


async def _text(upload: UploadFile) -> str:
    try:
        return (await upload.read()).decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise Invalid(f"{upload.filename}: not UTF-8 text") from error


@router.get("/studies/{study_id}/metrics")
async def get_metrics(
    study_id: PathId,
    session: SessionDep,
    _admin: AdminUser,
    compute: ComputeDep,
    iou: IouQuery = 0.25,
    error_iou: ErrorIouQuery = None,
    consensus_radius: RadiusQuery = None,
    consensus_nms: NmsQuery = None,
    min_votes: MinVotesQuery = 1,
    count_threshold: Annotated[
        FiniteFloat, Query(ge=0, description="clinical count threshold per image (detection tasks)")
    ] = DEFAULT_COUNT_THRESHOLD,
    bootstrap: Annotated[
        int, Query(ge=0, le=MAX_BOOTSTRAP, description="bootstrap replicates for 95 % intervals (0: none)")
    ] = 0,
    seed: Annotated[int, Query(ge=0, le=2**32 - 1, description="seed of the bootstrap")] = 0,
) -> StudyMetricsOut:
    """Concordance, time per image, injected errors caught, agreement and statistics of every task and mode."""
    study = await _study(session, study_id)
    params = MetricsParams(
        iou,
        error_iou,
        consensus_radius,
        min_votes,
        consensus_nms,
        count_threshold=count_threshold,
        bootstrap=bootstrap,
        seed=seed,
    )
    return await study_metrics(session, study, params, compute)


@router.get("/studies/{study_id}/metrics/{table}.csv", responses=file_responses(MEDIA["csv"]))
async def get_metrics_csv(
    study_id: PathId,
    table: str,
    session: SessionDep,
    _admin: AdminUser,
    compute: ComputeDep,
    iou: IouQuery = 0.25,
    error_iou: ErrorIouQuery = None,
    consensus_radius: RadiusQuery = None,
    consensus_nms: NmsQuery = None,
    min_votes: MinVotesQuery = 1,
) -> PlainTextResponse:
    """One metrics table (experts, summary, injected, statistics) as CSV, from the evaluation the dashboard
    caches (computed again only when the study or the parameters changed)."""
    study = await _study(session, study_id)
    params = MetricsParams(iou, error_iou, consensus_radius, min_votes, consensus_nms)
    metrics = (await cache.study_evaluation(session, study, params, compute)).metrics
    return _download(exports.metrics_csv(metrics, table), "csv", f"{study.name}-{table}")


@router.get("/studies/{study_id}/export.zip", responses=file_responses("application/zip"))
async def export_study_bundle(
    study_id: PathId, session: SessionDep, _admin: AdminUser, compute: ComputeDep
) -> Response:
    """The study bundle: design, protocols, register, ground truth, expert objects, edit log, metrics, plots."""
    from app.evaluation.bundle import bundle_of_study

    study = await _study(session, study_id)
    payload = await bundle_of_study(session, study, compute)
    filename = "".join(char if char.isalnum() or char in "-_." else "_" for char in study.name)
    return Response(
        payload,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}.zip"'},
    )


@router.get("/tasks/{task_id}/consensus/export", responses=file_responses(*MEDIA.values()))
async def export_consensus(
    task_id: PathId,
    session: SessionDep,
    _admin: AdminUser,
    compute: ComputeDep,
    mode: EvaluatedMode,
    format: Annotated[ExportFormat, Query(description="csv, coco, json or exact")] = "csv",
    consensus_radius: RadiusQuery = None,
    consensus_nms: NmsQuery = None,
    min_votes: MinVotesQuery = 1,
) -> Response:
    """Consensus objects of a task and mode with votes and VotesLoss weights (default: radius 50 px)."""
    task = await _task(session, task_id)
    if consensus_radius is None and consensus_nms is None:
        consensus_radius = CONSENSUS_RADIUS_PX
    params = MetricsParams(
        consensus_radius=consensus_radius, min_votes=min_votes, consensus_nms=consensus_nms
    )
    text = await exports.consensus_export(session, task, mode, params, compute, format)
    return _download(text, format, f"{task.name}-{mode}-consensus")


@router.get("/tasks/{task_id}/annotations/export", responses=file_responses(*MEDIA.values()))
async def export_annotations(
    task_id: PathId,
    session: SessionDep,
    _admin: AdminUser,
    format: Annotated[
        ExportFormat, Query(description="exact (one expert and mode), coco, json or csv")
    ] = "csv",
    expert: str | None = None,
    mode: EvaluatedMode | None = None,
) -> Response:
    """Expert objects of a task as EXACT text, COCO JSON, Concord JSON or CSV."""
    task = await _task(session, task_id)
    if format == "exact":
        text = await exports.expert_exact(session, task, expert, mode)
    else:
        objects = await exports.expert_objects(session, task, expert, mode)
        text = exports.render_objects(objects, format, await exports.is_simulated(session, task))
    name = "-".join(part for part in (task.name, expert, mode) if part)
    return _download(text, format, name)


@router.get("/tasks/{task_id}/ground-truth/export", responses=file_responses(*MEDIA.values()))
async def export_ground_truth(
    task_id: PathId,
    session: SessionDep,
    _admin: AdminUser,
    format: Annotated[ExportFormat, Query(description="exact, coco, json or csv")] = "exact",
) -> Response:
    """Reference objects of a task as EXACT text, COCO JSON, Concord JSON or CSV."""
    task = await _task(session, task_id)
    objects = await exports.ground_truth_objects(session, task)
    simulated = await exports.is_simulated(session, task)
    if format == "exact":
        text = exports.ground_truth_exact(objects, simulated)
    else:
        text = exports.render_objects(objects, format, simulated)
    return _download(text, format, f"{task.name}-ground-truth")


def _download(text: str, format: str, name: str) -> PlainTextResponse:
    filename = "".join(char if char.isalnum() or char in "-_." else "_" for char in name)
    return PlainTextResponse(
        text,
        media_type=MEDIA[format],
        headers={"Content-Disposition": f'attachment; filename="{filename}.{SUFFIX[format]}"'},
    )


async def _study(session: SessionDep, study_id: int) -> Study:
    study = await session.get(Study, study_id)
    if study is None:
        raise NotFound(f"no study {study_id}")
    return study


async def _task(session: SessionDep, task_id: int) -> Task:
    task = await session.get(Task, task_id)
    if task is None:
        raise NotFound(f"no task {task_id}")
    return task
