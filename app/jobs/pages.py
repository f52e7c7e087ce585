"""HTML routes of the job queue: the admin job list, a self-polling progress row, and cancel."""

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from app.deps import SessionDep
from app.jobs import service
from app.models import Job, JobStatus
from app.schemas_common import PathId
from app.templating import PageAdmin, is_htmx, redirect, render

router = APIRouter(tags=["pages"], include_in_schema=False)

# templates/admin/job_progress.html tests the same two statuses.
LIVE_STATUSES = frozenset({JobStatus.queued, JobStatus.running})
JOB_ENDED_EVENT = "job-ended"


def is_live(job: Job) -> bool:
    """Whether the job can still change, so its progress fragment keeps polling."""
    return job.status in LIVE_STATUSES


def render_progress(request: Request, job: Job, principal: PageAdmin) -> Response:
    """The job's progress row; once the job has ended it tells the page (`job-ended`) and stops polling."""
    context: dict[str, Any] = {"principal": principal, "job": job}
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
        "statuses": [item.value for item in JobStatus],
        "status": status,
    }
    return render(request, "admin/jobs.html", context, block="job_list")


@router.get("/admin/jobs/{job_id}/progress")
async def job_progress(
    request: Request, job_id: PathId, session: SessionDep, principal: PageAdmin
) -> Response:
    """One job's progress row; it polls itself while the job is queued or running (admin)."""
    return render_progress(request, await service.get_job(session, job_id), principal)


@router.post("/admin/jobs/{job_id}/cancel")
async def cancel_job(request: Request, job_id: PathId, session: SessionDep, principal: PageAdmin) -> Response:
    """Cancel a queued job, or ask the worker to stop a running one (admin)."""
    job = await service.cancel(session, job_id)
    if is_htmx(request):
        return render_progress(request, job, principal)
    return redirect(request, "/admin/jobs")
