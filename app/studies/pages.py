"""HTML routes of studies: the expert dashboard and the admin pages of studies, tasks and assignments."""

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from pydantic import ValidationError

from app.accounts import service as accounts
from app.deps import HasherDep, PageAdmin, PagePrincipal, SessionDep, StudyDep
from app.errors import AppError, NotFound
from app.flash import flash
from app.models import ImagePurpose, Mode, Role, Study, TaskKind
from app.schemas_common import PathId
from app.studies import repository, service
from app.studies.schemas import AssignmentOut, LabelIn, StudyCreate, TaskCreate, WashoutOverride
from app.suggestions import service as suggestions
from app.templating import is_htmx, redirect, render

router = APIRouter(tags=["pages"], include_in_schema=False)

FieldErrors = dict[str, str]
MODES = [mode.value for mode in Mode]


def field_errors(error: ValidationError, prefix: str) -> FieldErrors:
    """Pydantic errors keyed by form field (`prefix.field`), first message per field."""
    found: FieldErrors = {}
    for item in error.errors():
        field = str(item["loc"][0]) if item["loc"] else "form"
        found.setdefault(f"{prefix}.{field}", str(item["msg"]).removeprefix("Value error, "))
    return found


@router.get("/dashboard")
async def dashboard(request: Request, session: SessionDep, principal: PagePrincipal) -> Response:
    """The user's own assignments with progress and washout dates."""
    user = principal.user
    own = [item for item in await service.describe_assignments(session, user) if item.expert == user.name]
    names = {study.id: study.name for study in await repository.list_studies(session, user.id)}
    context = {"principal": principal, "nav": "dashboard", "assignments": own, "study_names": names}
    return render(request, "dashboard.html", context, block="content")


@router.get("/admin/studies")
async def studies_page(request: Request, session: SessionDep, principal: PageAdmin) -> Response:
    """All studies, and a form to create one (admin)."""
    return await _studies_page(request, session, principal, {}, {})


async def _studies_page(
    request: Request,
    session: SessionDep,
    principal: PageAdmin,
    errors: FieldErrors,
    values: dict[str, Any],
    status_code: int = 200,
) -> Response:
    context = {
        "principal": principal,
        "nav": "studies",
        "summaries": await service.study_summaries(session, principal.user),
        "errors": errors,
        "values": values,
    }
    return render(request, "admin/studies.html", context, block="content", status_code=status_code)


@router.post("/admin/studies")
async def create_study(
    request: Request,
    session: SessionDep,
    principal: PageAdmin,
    name: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
    washout_days: Annotated[str, Form()] = "14",
) -> Response:
    """Create a study from the form (admin)."""
    values = {"name": name, "description": description, "washout_days": washout_days}
    try:
        data = StudyCreate.model_validate(
            {"name": name.strip(), "description": description, "washout_days": washout_days or "14"}
        )
        study = await service.create_study(session, data)
    except ValidationError as error:
        return await _studies_page(request, session, principal, field_errors(error, "study"), values, 422)
    except AppError as error:
        errors = {"study.name": error.message}
        return await _studies_page(request, session, principal, errors, values, 422)
    return flash(redirect(request, f"/admin/studies/{study.id}"), f"Study {study.name} created.")


@dataclass(frozen=True)
class TaskView:
    id: int
    name: str
    kind: str
    default_box_size: int
    labels: list[Any]
    image_count: int
    practice_count: int


async def _study_context(session: SessionDep, principal: PageAdmin, study: Study) -> dict[str, Any]:
    tasks = await repository.tasks_of_study(session, study.id, None)
    counts = await repository.image_counts(session, {task.id for task in tasks})
    practice = await repository.image_counts(session, {task.id for task in tasks}, ImagePurpose.practice)
    views = [
        TaskView(
            task.id,
            task.name,
            task.kind,
            task.default_box_size,
            list(await repository.labels_of_task(session, task.id)),
            counts.get(task.id, 0),
            practice.get(task.id, 0),
        )
        for task in tasks
    ]
    task_ids = {task.id for task in tasks}
    suggestion_sets = {task.id: await suggestions.list_sets(session, task) for task in tasks}
    progress = [
        item
        for item in await service.describe_assignments(session, principal.user)
        if item.task_id in task_ids
    ]
    return {
        "principal": principal,
        "nav": "studies",
        "study": study,
        "tasks": views,
        "experts": await service.experts(session),
        "progress": progress,
        "assigned": {_cell(item.expert, item.task_id, item.mode) for item in progress},
        "assigned_sets": {
            _cell(item.expert, item.task_id, item.mode): item.suggestion_set_id
            for item in progress
            if item.suggestion_set_id is not None
        },
        "task_sets": _latest_set_per_task(progress),
        "suggestion_sets": suggestion_sets,
        "modes": MODES,
        "kinds": [kind.value for kind in TaskKind],
        "errors": {},
        "values": {},
    }


def _latest_set_per_task(progress: list[AssignmentOut]) -> dict[int, int]:
    """The suggestion set of each task's newest aided assignment: the grid's choice for the next ones."""
    chosen: dict[int, int] = {}
    for item in sorted(progress, key=lambda item: item.id):
        if item.suggestion_set_id is not None:
            chosen[item.task_id] = item.suggestion_set_id
    return chosen


def _cell(expert: str, task_id: int, mode: str) -> str:
    return f"{expert}|{task_id}|{mode}"


async def _study_page(
    request: Request,
    session: SessionDep,
    principal: PageAdmin,
    study: Study,
    errors: FieldErrors | None = None,
    values: dict[str, Any] | None = None,
    status_code: int = 200,
) -> Response:
    context = await _study_context(session, principal, study)
    context["errors"] = errors or {}
    context["values"] = values or {}
    return render(request, "admin/study.html", context, block="study_page", status_code=status_code)


@router.get("/admin/studies/{study_id}")
async def study_page(
    request: Request, session: SessionDep, principal: PageAdmin, study: StudyDep
) -> Response:
    """A study's tasks, images, experts, assignment grid and progress (admin)."""
    return await _study_page(request, session, principal, study)


def parse_labels(text: str) -> list[LabelIn]:
    """One label per line: `name` or `name #rrggbb`."""
    labels = []
    for line in text.splitlines():
        parts = line.strip().rsplit(" ", 1)
        if not parts[0]:
            continue
        if len(parts) == 2 and parts[1].startswith("#"):
            labels.append(LabelIn(name=parts[0].strip(), colour=parts[1]))
        else:
            labels.append(LabelIn(name=line.strip()))
    return labels


@router.post("/admin/studies/{study_id}/tasks")
async def create_task(
    request: Request,
    session: SessionDep,
    principal: PageAdmin,
    study: StudyDep,
    name: Annotated[str, Form()] = "",
    kind: Annotated[str, Form()] = TaskKind.classify,
    default_box_size: Annotated[str, Form()] = "50",
    labels: Annotated[str, Form()] = "",
) -> Response:
    """Create a task and its label schema from the form (admin)."""
    values = {"name": name, "kind": kind, "default_box_size": default_box_size, "labels": labels}
    try:
        data = TaskCreate.model_validate(
            {
                "name": name.strip(),
                "kind": kind,
                "default_box_size": default_box_size or "50",
                "labels": parse_labels(labels),
            }
        )
        await service.create_task(session, study, data)
    except ValidationError as error:
        errors = field_errors(error, "task")
        return await _study_page(request, session, principal, study, errors, values, 422)
    except AppError as error:
        errors = {"task.name": error.message}
        return await _study_page(request, session, principal, study, errors, values, 422)
    message = f"Task {data.name} created: add its images next."
    return flash(await _study_page(request, session, principal, study), message)


@router.post("/admin/studies/{study_id}/experts")
async def add_expert(
    request: Request,
    session: SessionDep,
    hasher: HasherDep,
    principal: PageAdmin,
    study: StudyDep,
    name: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
) -> Response:
    """Create an expert account (admin)."""
    try:
        await accounts.create_user(session, hasher, name.strip(), Role.expert, password)
    except AppError as error:
        field = "expert.password" if "password" in error.message else "expert.name"
        values = {"expert_name": name}
        return await _study_page(request, session, principal, study, {field: error.message}, values, 422)
    message = f"Expert {name.strip()} added: tick their assignments in the grid."
    return flash(await _study_page(request, session, principal, study), message)


@router.post("/admin/studies/{study_id}/assignments")
async def create_assignments(
    request: Request, session: SessionDep, principal: PageAdmin, study: StudyDep
) -> Response:
    """Create the ticked expert × task × mode assignments that do not exist yet (admin)."""
    context = await _study_context(session, principal, study)
    task_ids = {task.id for task in context["tasks"]}
    form = await request.form()
    wanted = [value for value in form.getlist("cell") if isinstance(value, str)]
    created = 0
    for cell in wanted:
        if cell in context["assigned"]:
            continue
        expert, task_id, mode = _parse_cell(cell, task_ids)
        task = await service.get_task(session, principal.user, task_id)
        set_id = _chosen_set(form.get(f"suggestion_set-{task_id}")) if mode == Mode.aided else None
        await service.create_assignment(session, task, expert, mode, set_id)
        created += 1
    message = f"{created} assignment(s) created." if created else "No new cell was ticked: nothing created."
    return flash(await _study_page(request, session, principal, study), message)


def _chosen_set(value: object) -> int | None:
    """The suggestion set picked for a task's aided column; none picked (or no number) means none."""
    return int(value) if isinstance(value, str) and value.isdigit() else None


def _parse_cell(cell: str, task_ids: set[int]) -> tuple[str, int, str]:
    parts = cell.split("|")
    if len(parts) != 3 or not parts[1].isdigit() or int(parts[1]) not in task_ids or parts[2] not in MODES:
        raise NotFound(f"no such cell {cell!r} in this study")
    return parts[0], int(parts[1]), parts[2]


@router.post("/admin/assignments/{assignment_id}/washout-override")
async def override_washout(
    request: Request,
    assignment_id: PathId,
    session: SessionDep,
    principal: PageAdmin,
    reason: Annotated[str, Form()] = "",
) -> Response:
    """Open an aided assignment before its washout period ends, recording the reason (admin)."""
    assignment = await service.get_assignment(session, principal.user, assignment_id)
    task = await service.get_task(session, principal.user, assignment.task_id)
    study = await service.get_study(session, principal.user, task.study_id)
    try:
        data = WashoutOverride.model_validate({"reason": reason.strip()})
    except ValidationError as error:
        message = field_errors(error, "override")["override.reason"]
        errors = {f"override.{assignment.id}": f"The reason is needed: {message.lower()}"}
        values = {f"override.{assignment.id}": reason}
        return await _study_page(request, session, principal, study, errors, values, 422)
    await service.override_washout(session, principal.user, assignment, data.reason)
    if not is_htmx(request):
        return redirect(request, f"/admin/studies/{task.study_id}")
    return await _study_page(request, session, principal, study)
