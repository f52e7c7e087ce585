"""JSON routes of studies, tasks, label schemas and assignments."""

from fastapi import APIRouter

from app.deps import AdminUser, CurrentUser, SessionDep, StudyDep, TaskDep
from app.errors import NotFound
from app.models import Task
from app.schemas_common import DbId, PathId
from app.studies import repository, service
from app.studies.schemas import (
    AssignmentCreate,
    AssignmentOut,
    LabelOut,
    StudyCreate,
    StudyOut,
    TaskCreate,
    TaskOut,
    WashoutOverride,
)

router = APIRouter(tags=["studies"])


@router.get("/studies")
async def list_studies(session: SessionDep, user: CurrentUser) -> list[StudyOut]:
    """Studies: all for admins, those with an own assignment for experts."""
    studies = await repository.list_studies(session, None if user.is_admin else user.id)
    return [StudyOut.model_validate(study) for study in studies]


@router.post("/studies", status_code=201)
async def create_study(data: StudyCreate, session: SessionDep, _admin: AdminUser) -> StudyOut:
    """Create a study (admin)."""
    return StudyOut.model_validate(await service.create_study(session, data))


@router.get("/studies/{study_id}")
async def get_study(_user: CurrentUser, study: StudyDep) -> StudyOut:
    """One study."""
    return StudyOut.model_validate(study)


@router.get("/studies/{study_id}/tasks")
async def list_tasks(session: SessionDep, user: CurrentUser, study: StudyDep) -> list[TaskOut]:
    """Tasks of a study with their label schemas."""
    tasks = await repository.tasks_of_study(session, study.id, None if user.is_admin else user.id)
    return [await _task_out(session, task) for task in tasks]


@router.post("/studies/{study_id}/tasks", status_code=201)
async def create_task(data: TaskCreate, session: SessionDep, _admin: AdminUser, study: StudyDep) -> TaskOut:
    """Create a task with its ordered label schema (admin)."""
    task, _ = await service.create_task(session, study, data)
    return await _task_out(session, task)


@router.get("/tasks/{task_id}")
async def get_task(session: SessionDep, _user: CurrentUser, task: TaskDep) -> TaskOut:
    """One task with its label schema."""
    return await _task_out(session, task)


@router.get("/tasks/{task_id}/labels")
async def list_labels(session: SessionDep, _user: CurrentUser, task: TaskDep) -> list[LabelOut]:
    """The task's ordered label schema."""
    return (await _task_out(session, task)).labels


async def _task_out(session: SessionDep, task: Task) -> TaskOut:
    labels = await repository.labels_of_task(session, task.id)
    return TaskOut(
        id=task.id,
        study_id=task.study_id,
        name=task.name,
        kind=task.kind,
        default_box_size=task.default_box_size,
        labels=[LabelOut.model_validate(label) for label in labels],
    )


@router.get("/assignments")
async def list_assignments(
    session: SessionDep, user: CurrentUser, task_id: DbId | None = None
) -> list[AssignmentOut]:
    """Assignments: all for admins, own for experts, with progress and washout date."""
    return await service.describe_assignments(session, user, task_id)


@router.post("/assignments", status_code=201)
async def create_assignment(data: AssignmentCreate, session: SessionDep, admin: AdminUser) -> AssignmentOut:
    """Assign an expert to a task in a mode (admin)."""
    task = await service.get_task(session, admin, data.task_id)
    assignment = await service.create_assignment(
        session, task, data.expert, data.mode, data.suggestion_set_id
    )
    return await _assignment_out(session, admin, assignment.id)


@router.post("/assignments/{assignment_id}/finish")
async def finish_assignment(assignment_id: PathId, session: SessionDep, user: CurrentUser) -> AssignmentOut:
    """Mark an own assignment as finished; starts the washout period of the aided one."""
    assignment = await service.get_assignment(session, user, assignment_id)
    if assignment.expert_id != user.id:
        raise NotFound(f"no assignment {assignment_id} of yours")
    await service.finish_assignment(session, assignment)
    return await _assignment_out(session, user, assignment.id)


@router.post("/assignments/{assignment_id}/washout-override")
async def override_washout(
    assignment_id: PathId, data: WashoutOverride, session: SessionDep, admin: AdminUser
) -> AssignmentOut:
    """Open an aided assignment before its washout period ends; recorded with the reason (admin)."""
    assignment = await service.get_assignment(session, admin, assignment_id)
    await service.override_washout(session, admin, assignment, data.reason)
    return await _assignment_out(session, admin, assignment.id)


async def _assignment_out(session: SessionDep, user: CurrentUser, assignment_id: int) -> AssignmentOut:
    assignment = await service.get_assignment(session, user, assignment_id)
    described = await service.describe_assignments(session, user, assignment.task_id)
    return next(item for item in described if item.id == assignment_id)
