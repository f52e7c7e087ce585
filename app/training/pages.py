"""HTML routes of training: a task's Train form, its train jobs with live progress and cancel, runs and curves."""

from typing import Annotated, Any

from anyio import to_thread
from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from pydantic import ValidationError

from app.deps import PageAdmin, SessionDep
from app.errors import NotFound
from app.jobs import service as jobs
from app.models import Study, Task, TrainingRun
from app.schemas_common import PathId
from app.templating import redirect, render
from app.training import plots, service
from app.training.schemas import LOSSES, TrainParams

router = APIRouter(tags=["pages"], include_in_schema=False)
RECENT_JOBS = 200


async def _task_and_study(session: SessionDep, task_id: int) -> tuple[Task, Study]:
    task = await session.get(Task, task_id)
    study = await session.get(Study, task.study_id) if task is not None else None
    if task is None or study is None:
        raise NotFound(f"no task {task_id}")
    return task, study


async def _page(
    request: Request,
    session: SessionDep,
    principal: PageAdmin,
    task_id: PathId,
    error: str = "",
    status: int = 200,
) -> Response:
    task, study = await _task_and_study(session, task_id)
    recent = await jobs.list_jobs(session, None, "train", RECENT_JOBS)
    runs = [run for run in await service.runs_of_study(session, study.id) if run.task_id == task.id]
    context: dict[str, Any] = {
        "principal": principal,
        "nav": "studies",
        "task": task,
        "study": study,
        "jobs": [job for job in recent if job.params.get("task_id") == task.id],
        "runs": runs,
        "error": error,
    }
    return render(request, "admin/training.html", context, status_code=status)


@router.get("/admin/tasks/{task_id}/training")
async def training_page(
    request: Request, task_id: PathId, session: SessionDep, principal: PageAdmin
) -> Response:
    """The task's Train form, its train jobs (live progress, cancel), runs and loss/accuracy curves (admin)."""
    return await _page(request, session, principal, task_id)


@router.post("/admin/tasks/{task_id}/training")
async def start_training(
    request: Request,
    task_id: PathId,
    session: SessionDep,
    principal: PageAdmin,
    experts: Annotated[str, Form()] = "all",
    loss: Annotated[str, Form()] = "both",
    mode: Annotated[str, Form()] = "unaided",
    epochs: Annotated[str, Form()] = "",
    repeats: Annotated[str, Form()] = "5",
) -> Response:
    """Queue one train job per chosen loss for the set and mode of the form (admin)."""
    task, study = await _task_and_study(session, task_id)
    text = experts.strip() or "all"
    selection: str | list[str] = text
    if text != "all" and not text.startswith("first:"):
        selection = [name.strip() for name in text.split(",") if name.strip()]
    values: dict[str, Any] = {"study_id": study.id, "task_id": task.id, "mode": mode, "experts": selection}
    values["repeats"] = repeats
    if epochs.strip():
        values.update(epochs_frozen=epochs.strip(), epochs_unfrozen=epochs.strip())
    try:
        await service.load_task(session, study.id, task.id)
        chosen = [TrainParams.model_validate({**values, "loss": item}) for item in _losses(loss)]
    except ValidationError as problem:
        message = "; ".join(f"{'.'.join(map(str, item['loc']))}: {item['msg']}" for item in problem.errors())
        return await _page(request, session, principal, task_id, message, 422)
    except ValueError as problem:
        return await _page(request, session, principal, task_id, str(problem), 422)
    for params in chosen:
        await jobs.enqueue(session, "train", params.model_dump(mode="json"), principal.user.id)
    return redirect(request, f"/admin/tasks/{task.id}/training")


def _losses(choice: str) -> list[str]:
    if choice == "both":
        return list(LOSSES)
    if choice not in LOSSES:
        raise ValueError(f"loss must be bce, votes or both, not {choice!r}")
    return [choice]


@router.get("/admin/training-runs/{run_id}/curves.svg")
async def run_curves(run_id: PathId, session: SessionDep, principal: PageAdmin) -> Response:
    """Train/validation loss and validation accuracy per epoch of one run, as SVG (admin)."""
    run = await session.get(TrainingRun, run_id)
    if run is None:
        raise NotFound(f"no training run {run_id}")
    image = await to_thread.run_sync(plots.render_curves, run.history)
    return Response(image, media_type="image/svg+xml")
