"""Rules of studies, tasks, assignments, the washout period and who may see what."""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.accounts import repository as accounts_repository
from app.errors import Conflict, Forbidden, Invalid, NotFound
from app.models import (
    Assignment,
    AssignmentStatus,
    Image,
    ImageCompletion,
    ImagePurpose,
    Label,
    Mode,
    Role,
    Study,
    SuggestionSet,
    Task,
    User,
    purpose_of_mode,
)
from app.models.base import utcnow
from app.studies import repository
from app.studies.schemas import PALETTE, AssignmentOut, StudyCreate, TaskCreate

LABEL_KEYS = "123456789"


async def create_study(session: AsyncSession, data: StudyCreate) -> Study:
    if await repository.study_by_name(session, data.name):
        raise Conflict(f"a study named {data.name!r} exists already")
    study = Study(name=data.name, description=data.description, washout_days=data.washout_days)
    session.add(study)
    await session.flush()
    return study


async def create_task(session: AsyncSession, study: Study, data: TaskCreate) -> tuple[Task, list[Label]]:
    if await repository.task_by_name(session, study.id, data.name):
        raise Conflict(f"study {study.name!r} already has a task named {data.name!r}")
    task = Task(
        study_id=study.id,
        name=data.name,
        kind=data.kind,
        default_box_size=data.default_box_size,
    )
    session.add(task)
    await session.flush()
    labels = [
        _new_label(task, label.name, position, label.colour, label.key)
        for position, label in enumerate(data.labels)
    ]
    session.add_all(labels)
    await session.flush()
    return task, labels


async def add_labels(session: AsyncSession, task: Task, names: Sequence[str]) -> list[Label]:
    """New labels after the task's last one, with the palette's colours and the free number keys."""
    first = len(await repository.labels_of_task(session, task.id))
    labels = [_new_label(task, name, first + offset) for offset, name in enumerate(names)]
    session.add_all(labels)
    await session.flush()
    return labels


def _new_label(
    task: Task, name: str, position: int, colour: str | None = None, key: str | None = None
) -> Label:
    default_key = LABEL_KEYS[position] if position < len(LABEL_KEYS) else ""
    return Label(
        task_id=task.id,
        name=name,
        colour=colour or PALETTE[position % len(PALETTE)],
        key=key or default_key,
        position=position,
    )


async def get_study(session: AsyncSession, user: User, study_id: int) -> Study:
    study = await session.get(Study, study_id)
    if study is None or not (user.is_admin or await _expert_in_study(session, user, study_id)):
        raise NotFound(f"no study {study_id}")
    return study


async def _expert_in_study(session: AsyncSession, user: User, study_id: int) -> bool:
    return bool(await repository.tasks_of_study(session, study_id, user.id))


async def get_task(session: AsyncSession, user: User, task_id: int) -> Task:
    """The task, if the user is an admin or has any assignment on it; else 404."""
    task = await session.get(Task, task_id)
    if task is None or not (user.is_admin or await repository.has_assignment(session, user.id, task_id)):
        raise NotFound(f"no task {task_id}")
    return task


async def get_image(session: AsyncSession, user: User, image_id: int) -> Image:
    """The image, if the user is an admin or has an assignment whose mode works on its purpose; else 404."""
    image = await session.get(Image, image_id)
    if image is None:
        raise NotFound(f"no image {image_id}")
    task = await get_task(session, user, image.task_id)
    if image.purpose not in await visible_purposes(session, user, task):
        raise NotFound(f"no image {image_id}")
    return image


async def visible_purposes(session: AsyncSession, user: User, task: Task) -> set[ImagePurpose]:
    """Admins see every image; an expert sees practice images only with a training assignment, study
    images only with an unaided or aided one."""
    if user.is_admin:
        return set(ImagePurpose)
    return {purpose_of_mode(mode) for mode in await repository.assigned_modes(session, user.id, task.id)}


def require_image_of_mode(image: Image, mode: str) -> None:
    """Training works on practice images only, unaided and aided on study images only (404 otherwise)."""
    if image.purpose != purpose_of_mode(mode):
        raise NotFound(f"image {image.id} is not part of your {mode} assignment")


async def label_map(session: AsyncSession, task_id: int) -> dict[str, Label]:
    return {label.name: label for label in await repository.labels_of_task(session, task_id)}


def washout_opens_at(unaided: Assignment | None, washout_days: int) -> datetime | None:
    if unaided is None or unaided.finished_at is None:
        return None
    return unaided.finished_at + timedelta(days=washout_days)


async def assignment_opens_at(
    session: AsyncSession, assignment: Assignment, study: Study
) -> tuple[bool, datetime | None]:
    """Whether the assignment is open now, and when an aided one opens (None: not yet known)."""
    if assignment.mode != Mode.aided or assignment.washout_override_at is not None:
        return True, None
    unaided = await repository.assignment_for(session, assignment.expert_id, assignment.task_id, Mode.unaided)
    opens_at = washout_opens_at(unaided, study.washout_days)
    if unaided is None:
        return True, None
    return (opens_at is not None and opens_at <= utcnow()), opens_at


async def require_working_assignment(session: AsyncSession, user: User, task: Task, mode: str) -> Assignment:
    """The user's assignment of this task and mode, open, for editing: the first one opens it."""
    assignment = await working_assignment(session, user, task, mode)
    await open_assignment(session, assignment)
    return assignment


async def working_assignment(session: AsyncSession, user: User, task: Task, mode: str) -> Assignment:
    """The user's assignment of this task and mode, open (washout over), for reading: changes nothing."""
    if mode not in set(Mode):
        raise Invalid(f"unknown mode {mode!r}; use training, unaided or aided")
    assignment = await repository.assignment_for(session, user.id, task.id, mode)
    if assignment is None:
        raise NotFound(f"you have no {mode} assignment for task {task.id}")
    study = await session.get(Study, task.study_id)
    assert study is not None
    is_open, opens_at = await assignment_opens_at(session, assignment, study)
    if not is_open:
        when = opens_at.isoformat() if opens_at else "after the unaided assignment is finished"
        raise Forbidden(f"this aided assignment opens {when} (washout period)")
    return assignment


async def open_assignment(session: AsyncSession, assignment: Assignment) -> None:
    """The expert starts working: record when, and lock the suggestion set shown (it can no longer change)."""
    if assignment.opened_at is None:
        await session.run_sync(open_assignment_in, assignment)


def open_assignment_in(session: Session, assignment: Assignment) -> None:
    """`open_assignment` in a synchronous session (an edit's own transaction)."""
    if assignment.opened_at is None:
        assignment.opened_at = utcnow()
        _lock_suggestion_set(session, assignment)


def _lock_suggestion_set(session: Session, assignment: Assignment) -> None:
    if assignment.suggestion_set_id is None:
        return
    suggestion_set = session.get(SuggestionSet, assignment.suggestion_set_id)
    if suggestion_set is not None and suggestion_set.locked_at is None:
        suggestion_set.locked_at = utcnow()


def require_unfinished(assignment: Assignment) -> None:
    if assignment.status == AssignmentStatus.finished:
        raise Conflict("this assignment is finished; its annotations can no longer change")


async def create_assignment(
    session: AsyncSession,
    task: Task,
    expert_name: str,
    mode: str,
    suggestion_set_id: int | None,
) -> Assignment:
    expert = await accounts_repository.user_by_name(session, expert_name)
    if expert is None:
        raise Invalid(f"no user named {expert_name!r}")
    if await repository.assignment_for(session, expert.id, task.id, mode):
        raise Conflict(f"{expert_name} already has a {mode} assignment for this task")
    if suggestion_set_id is not None:
        await _check_suggestion_set(session, task, mode, suggestion_set_id)
    assignment = Assignment(
        task_id=task.id,
        expert_id=expert.id,
        mode=mode,
        suggestion_set_id=suggestion_set_id,
    )
    session.add(assignment)
    await session.flush()
    return assignment


async def _check_suggestion_set(session: AsyncSession, task: Task, mode: str, suggestion_set_id: int) -> None:
    if mode != Mode.aided:
        raise Invalid("only aided assignments show suggestions")
    suggestion_set = await session.get(SuggestionSet, suggestion_set_id)
    if suggestion_set is None or suggestion_set.task_id != task.id:
        raise Invalid(f"suggestion set {suggestion_set_id} does not belong to task {task.id}")


async def get_assignment(session: AsyncSession, user: User, assignment_id: int) -> Assignment:
    assignment = await session.get(Assignment, assignment_id)
    if assignment is None or not (user.is_admin or assignment.expert_id == user.id):
        raise NotFound(f"no assignment {assignment_id}")
    return assignment


async def finish_assignment(session: AsyncSession, assignment: Assignment) -> None:
    """Finish an assignment; finishing a finished one changes nothing (a retry whose answer was lost)."""
    if assignment.status == AssignmentStatus.finished:
        return
    assignment.status = AssignmentStatus.finished
    assignment.finished_at = utcnow()


@dataclass(frozen=True)
class FinishPreview:
    """What finishing an assignment means: images left, and the aided assignment whose washout it starts."""

    assignment: Assignment
    images_total: int
    images_left: int
    aided: Assignment | None
    washout_days: int
    aided_opens_at: datetime | None  # if finished now (or when it was finished); None without an aided one


async def finish_preview(session: AsyncSession, assignment: Assignment) -> FinishPreview:
    task = await session.get(Task, assignment.task_id)
    assert task is not None
    study = await session.get(Study, task.study_id)
    assert study is not None
    purpose = purpose_of_mode(assignment.mode)
    total = (await repository.image_counts(session, {task.id}, purpose)).get(task.id, 0)
    done = len(await repository.completed_image_ids(session, assignment.id))
    aided = None
    if assignment.mode == Mode.unaided:
        aided = await repository.assignment_for(session, assignment.expert_id, task.id, Mode.aided)
    finished_at = assignment.finished_at or utcnow()
    opens_at = finished_at + timedelta(days=study.washout_days) if aided is not None else None
    return FinishPreview(assignment, total, max(total - done, 0), aided, study.washout_days, opens_at)


async def finish_when_all_done(session: AsyncSession, assignment: Assignment) -> None:
    """The pages' finish: only once every image is marked done (the API lets a client finish any time)."""
    preview = await finish_preview(session, assignment)
    if assignment.status != AssignmentStatus.finished and preview.images_left:
        left = preview.images_left
        raise Conflict(f"{left} image{'' if left == 1 else 's'} of this assignment not marked done yet")
    await finish_assignment(session, assignment)


async def override_washout(session: AsyncSession, admin: User, assignment: Assignment, reason: str) -> None:
    if assignment.mode != Mode.aided:
        raise Invalid("only aided assignments have a washout period")
    assignment.washout_override_by = admin.id
    assignment.washout_override_at = utcnow()
    assignment.washout_override_reason = reason


async def mark_image_done(session: AsyncSession, user: User, image: Image, mode: str) -> Assignment:
    require_image_of_mode(image, mode)
    task = await get_task(session, user, image.task_id)
    assignment = await require_working_assignment(session, user, task, mode)
    require_unfinished(assignment)
    done = await repository.completed_image_ids(session, assignment.id)
    if image.id not in done:
        session.add(ImageCompletion(assignment_id=assignment.id, image_id=image.id, completed_at=utcnow()))
        await session.flush()
    return assignment


async def describe_assignments(
    session: AsyncSession, user: User, task_id: int | None = None
) -> list[AssignmentOut]:
    rows = await repository.list_assignments(session, None if user.is_admin else user.id, task_id)
    task_ids = {task.id for _, task, _ in rows}
    totals = {purpose: await repository.image_counts(session, task_ids, purpose) for purpose in ImagePurpose}
    done = await repository.completion_counts(session, {assignment.id for assignment, _, _ in rows})
    studies: dict[int, Study] = {}
    described = []
    for assignment, task, expert in rows:
        study = studies.get(task.study_id) or await session.get(Study, task.study_id)
        assert study is not None
        studies[study.id] = study
        is_open, opens_at = await assignment_opens_at(session, assignment, study)
        described.append(_assignment_out(assignment, task, expert, is_open, opens_at, done, totals))
    return described


def _assignment_out(
    assignment: Assignment,
    task: Task,
    expert: User,
    is_open: bool,
    opens_at: datetime | None,
    done: dict[int, int],
    totals: dict[ImagePurpose, dict[int, int]],
) -> AssignmentOut:
    return AssignmentOut(
        id=assignment.id,
        task_id=task.id,
        task_name=task.name,
        study_id=task.study_id,
        expert=expert.name,
        mode=assignment.mode,
        status=assignment.status,
        is_open=is_open,
        opens_at=opens_at,
        images_done=done.get(assignment.id, 0),
        images_total=totals[purpose_of_mode(assignment.mode)].get(task.id, 0),
        suggestion_set_id=assignment.suggestion_set_id,
        finished_at=assignment.finished_at,
        washout_override_reason=assignment.washout_override_reason,
    )


async def experts(session: AsyncSession) -> Sequence[User]:
    return [user for user in await accounts_repository.list_users(session) if user.role == Role.expert]


@dataclass(frozen=True)
class StudySummary:
    """A study's size and progress for the admin's lists: images count study images only."""

    study: Study
    tasks: int
    images: int
    experts: int
    assignments: int
    finished: int
    images_done: int
    images_total: int


async def study_summaries(session: AsyncSession, admin: User) -> list[StudySummary]:
    assignments = await describe_assignments(session, admin)
    summaries = []
    for study in await repository.list_studies(session, None):
        tasks = await repository.tasks_of_study(session, study.id, None)
        images = await repository.image_counts(session, {task.id for task in tasks})
        own = [item for item in assignments if item.study_id == study.id]
        summaries.append(
            StudySummary(
                study=study,
                tasks=len(tasks),
                images=sum(images.values()),
                experts=len({item.expert for item in own}),
                assignments=len(own),
                finished=sum(1 for item in own if item.status == AssignmentStatus.finished),
                images_done=sum(item.images_done for item in own),
                images_total=sum(item.images_total for item in own),
            )
        )
    return summaries
