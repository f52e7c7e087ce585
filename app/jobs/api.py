"""JSON routes of the job queue (admin only)."""

from typing import Annotated

from fastapi import APIRouter, Query

from app.deps import AdminUser, JobDep, SessionDep
from app.jobs import service
from app.jobs.registry import job_kinds
from app.jobs.schemas import JobCreate, JobKindOut, JobOut
from app.models import JobStatus
from app.schemas_common import DbId, PathId

router = APIRouter(tags=["jobs"])


@router.post("/jobs", status_code=201)
async def create_job(data: JobCreate, session: SessionDep, admin: AdminUser) -> JobOut:
    """Queue a job of a registered kind (admin); params that the kind's model refuses answer 422."""
    job = await service.enqueue(
        session, data.kind, data.params, admin.id, timeout_s=data.timeout_s, max_attempts=data.max_attempts
    )
    return JobOut.model_validate(job)


@router.get("/jobs")
async def list_jobs(
    session: SessionDep,
    _admin: AdminUser,
    status: JobStatus | None = None,
    kind: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    before_id: DbId | None = None,
) -> list[JobOut]:
    """Jobs, newest first, filtered by status and kind (admin)."""
    jobs = await service.list_jobs(session, status, kind, limit, before_id)
    return [JobOut.model_validate(job) for job in jobs]


@router.get("/jobs/kinds")
async def list_job_kinds(_admin: AdminUser) -> list[JobKindOut]:
    """Registered job kinds with their defaults (admin)."""
    return [
        JobKindOut(
            name=kind.name,
            default_timeout_s=kind.default_timeout_s,
            default_max_attempts=kind.default_max_attempts,
            params_schema=kind.params.model_json_schema(),
        )
        for kind in job_kinds()
    ]


@router.get("/jobs/{job_id}")
async def get_job(_admin: AdminUser, job: JobDep) -> JobOut:
    """One job with its status, progress, result and error (admin)."""
    return JobOut.model_validate(job)


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(job_id: PathId, session: SessionDep, _admin: AdminUser) -> JobOut:
    """Cancel a queued job at once, or ask the worker to stop a running one (admin)."""
    return JobOut.model_validate(await service.cancel(session, job_id))
