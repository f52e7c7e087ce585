"""HTML routes of the job queue: the admin job list, a self-polling progress row, and cancel."""

from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.ext.asyncio import AsyncSession

from app.deps import JobDep, PageAdmin, SessionDep
from app.jobs import service
from app.models import Job, JobStatus, Task
from app.schemas_common import PathId
from app.studies import repository as studies_repository
from app.templating import is_htmx, redirect, render

router = APIRouter(tags=["pages"], include_in_schema=False)

# templates/admin/job_progress.html tests the same two statuses.
LIVE_STATUSES = frozenset({JobStatus.queued, JobStatus.running})
JOB_ENDED_EVENT = "job-ended"


def is_live(job: Job) -> bool:
    """Whether the job can still change, so its progress fragment keeps polling."""
    return job.status in LIVE_STATUSES


@dataclass(frozen=True)
class Link:
    text: str
    url: str


@dataclass(frozen=True)
class JobSubject:
    """What a job row names: the task it works on, and where its result is once it succeeded."""

    task: Link | None
    result: Link | None


RESULT_PAGES = {"detect": "suggestions", "train": "training", "train_experiment": "training"}


async def job_subjects(session: AsyncSession, jobs: list[Job]) -> dict[int, JobSubject]:
    subjects = {}
    for job in jobs:
        task_id = job.params.get("task_id") if isinstance(job.params, dict) else None
        task = await studies_repository.task_by_id(session, task_id) if isinstance(task_id, int) else None
        subjects[job.id] = JobSubject(_task_link(task, job), _result_link(task, job))
    return subjects


def _task_link(task: Task | None, job: Job) -> Link | None:
    if task is None:
        return None
    page = RESULT_PAGES.get(job.kind, "suggestions")
    return Link(f"task {task.name}", f"/admin/tasks/{task.id}/{page}")


def _result_link(task: Task | None, job: Job) -> Link | None:
    if job.status != JobStatus.succeeded or not job.result:
        return None
    if job.kind == "training_question":  # a study plan's question: no task, its answer is on the Plan page
        return Link("answer on the Plan page", f"/admin/plan?question_job={job.id}#training-question")
    if task is None:
        return None
    set_id = job.result.get("suggestion_set_id")
    if job.kind == "detect" and isinstance(set_id, int):
        return Link(f"suggestion set #{set_id}", f"/admin/tasks/{task.id}/suggestions#set-{set_id}")
    if job.kind in ("train", "train_experiment"):
        return Link("training results", f"/admin/tasks/{task.id}/training")
    return None


async def render_progress(
    request: Request, session: AsyncSession, job: Job, principal: PageAdmin
) -> Response:
    """The job's progress row; once the job has ended it tells the page (`job-ended`) and stops polling."""
    subjects = await job_subjects(session, [job])
    context: dict[str, Any] = {"principal": principal, "job": job, "job_subjects": subjects}
    response = render(request, "admin/job_progress.html", context)
    if not is_live(job):
        response.headers["HX-Trigger"] = JOB_ENDED_EVENT
    return response


@router.get("/admin/jobs")
async def jobs_page(
    request: Request, session: SessionDep, principal: PageAdmin, status: JobStatus | None = None
) -> Response:
    """The job list with live progress of queued and running jobs (admin)."""
    jobs = await service.list_jobs(session, status)
    context = {
        "principal": principal,
        "nav": "jobs",
        "jobs": jobs,
        "job_subjects": await job_subjects(session, list(jobs)),
        "statuses": [item.value for item in JobStatus],
        "status": status,
    }
    return render(request, "admin/jobs.html", context, block="job_list")


@router.get("/admin/jobs/{job_id}/progress")
async def job_progress(request: Request, session: SessionDep, principal: PageAdmin, job: JobDep) -> Response:
    """One job's progress row; it polls itself while the job is queued or running (admin)."""
    return await render_progress(request, session, job, principal)


@router.post("/admin/jobs/{job_id}/cancel")
async def cancel_job(request: Request, job_id: PathId, session: SessionDep, principal: PageAdmin) -> Response:
    """Cancel a queued job, or ask the worker to stop a running one (admin)."""
    job = await service.cancel(session, job_id)
    if is_htmx(request):
        return await render_progress(request, session, job, principal)
    return redirect(request, "/admin/jobs")
