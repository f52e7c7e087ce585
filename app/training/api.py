"""JSON routes of training: a study's training runs (JSON and CSV) and a run's exported model (admin only)."""

from typing import Literal

from anyio import to_thread
from fastapi import APIRouter
from fastapi.responses import FileResponse, PlainTextResponse, Response

from app.deps import AdminUser, SessionDep, SettingsDep
from app.errors import NotFound
from app.models import Study, TrainingRun
from app.schemas_common import PathId, file_responses
from app.training import plots, service
from app.training.schemas import TrainingRunOut

router = APIRouter(tags=["training"])


async def _study(session: SessionDep, study_id: int) -> Study:
    study = await session.get(Study, study_id)
    if study is None:
        raise NotFound(f"no study {study_id}")
    return study


@router.get("/studies/{study_id}/training-runs")
async def list_training_runs(
    study_id: PathId, session: SessionDep, _admin: AdminUser
) -> list[TrainingRunOut]:
    """Every training run of the study with its per-epoch history, oldest first (admin)."""
    study = await _study(session, study_id)
    return [TrainingRunOut.model_validate(run) for run in await service.runs_of_study(session, study.id)]


@router.get("/studies/{study_id}/training-runs.csv", responses=file_responses("text/csv"))
async def training_runs_csv(study_id: PathId, session: SessionDep, _admin: AdminUser) -> PlainTextResponse:
    """The study's training runs as CSV, one row per run (admin)."""
    study = await _study(session, study_id)
    text = service.runs_csv(await service.runs_of_study(session, study.id))
    headers = {"Content-Disposition": f'attachment; filename="training-runs-study-{study.id}.csv"'}
    return PlainTextResponse(text, media_type="text/csv; charset=utf-8", headers=headers)


@router.get(
    "/studies/{study_id}/training-runs/figure.{fmt}", responses=file_responses("image/svg+xml", "image/png")
)
async def training_runs_figure(
    study_id: PathId, fmt: Literal["svg", "png"], session: SessionDep, _admin: AdminUser
) -> Response:
    """The paper's Figure 2 right panel: accuracy per training set, BCE vs VotesLoss, unaided vs aided (admin)."""
    study = await _study(session, study_id)
    runs = await service.runs_of_study(session, study.id)
    image = await to_thread.run_sync(plots.render, runs, fmt)
    return Response(image, media_type="image/svg+xml" if fmt == "svg" else "image/png")


@router.get("/training-runs/{run_id}/model.onnx", responses=file_responses("application/octet-stream"))
async def training_run_model(
    run_id: PathId, session: SessionDep, settings: SettingsDep, _admin: AdminUser
) -> FileResponse:
    """The run's best model as ONNX (input float32 (B, 3, P, P) normalised patches, output logits) (admin)."""
    run = await session.get(TrainingRun, run_id)
    path = None
    if run is not None:
        path = await to_thread.run_sync(service.exported_model, settings, run.onnx_path, run.onnx_sha256)
    if path is None:
        raise NotFound(f"no exported model of training run {run_id}")
    return FileResponse(path, media_type="application/octet-stream", filename=f"training-run-{run_id}.onnx")
