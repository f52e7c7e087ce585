"""Queries of studies, tasks, labels and assignments."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.models import Assignment, Image, ImageCompletion, ImagePurpose, Label, Study, Task, User
from app.models.annotation import task_objects_revision


async def list_studies(session: AsyncSession, expert_id: int | None) -> Sequence[Study]:
    query = select(Study).order_by(Study.id)
    if expert_id is not None:
        assigned = select(Task.study_id).join(Assignment, Assignment.task_id == Task.id)
        query = query.where(Study.id.in_(assigned.where(Assignment.expert_id == expert_id)))
    return (await session.scalars(query)).all()


async def task_by_id(session: AsyncSession, task_id: int) -> Task | None:
    return await session.get(Task, task_id)


async def study_by_name(session: AsyncSession, name: str) -> Study | None:
    return await session.scalar(select(Study).where(Study.name == name))


async def tasks_of_study(session: AsyncSession, study_id: int, expert_id: int | None) -> Sequence[Task]:
    query = select(Task).where(Task.study_id == study_id).order_by(Task.id)
    if expert_id is not None:
        assigned = select(Assignment.task_id).where(Assignment.expert_id == expert_id)
        query = query.where(Task.id.in_(assigned))
    return (await session.scalars(query)).all()


async def objects_revision(session: AsyncSession, task_id: int) -> int:
    """The task's objects revision (`task_objects_revision`): it rises with every write of its annotations."""
    revision = await session.scalar(select(task_objects_revision(Task.id)).where(Task.id == task_id))
    return int(revision or 0)


async def task_by_name(session: AsyncSession, study_id: int, name: str) -> Task | None:
    return await session.scalar(select(Task).where(Task.study_id == study_id, Task.name == name))


_LABELS_OF_TASK = select(Label).where(Label.task_id == bindparam("task_id")).order_by(Label.position)


async def labels_of_task(session: AsyncSession, task_id: int) -> Sequence[Label]:
    return (await session.scalars(_LABELS_OF_TASK, {"task_id": task_id})).all()


async def has_assignment(session: AsyncSession, expert_id: int, task_id: int) -> bool:
    query = select(Assignment.id).where(Assignment.expert_id == expert_id, Assignment.task_id == task_id)
    return await session.scalar(query.limit(1)) is not None


async def assigned_modes(session: AsyncSession, expert_id: int, task_id: int) -> set[str]:
    query = select(Assignment.mode).where(Assignment.expert_id == expert_id, Assignment.task_id == task_id)
    return set(await session.scalars(query))


async def assignment_for(session: AsyncSession, expert_id: int, task_id: int, mode: str) -> Assignment | None:
    query = select(Assignment).where(
        Assignment.expert_id == expert_id,
        Assignment.task_id == task_id,
        Assignment.mode == mode,
    )
    return await session.scalar(query)


async def list_assignments(
    session: AsyncSession, expert_id: int | None, task_id: int | None = None
) -> Sequence[tuple[Assignment, Task, User]]:
    query = (
        select(Assignment, Task, User)
        .join(Task, Task.id == Assignment.task_id)
        .join(User, User.id == Assignment.expert_id)
        .order_by(Assignment.id)
    )
    if expert_id is not None:
        query = query.where(Assignment.expert_id == expert_id)
    if task_id is not None:
        query = query.where(Assignment.task_id == task_id)
    rows = (await session.execute(query)).all()
    return [(row[0], row[1], row[2]) for row in rows]


async def image_counts(
    session: AsyncSession, task_ids: set[int], purpose: ImagePurpose = ImagePurpose.study
) -> dict[int, int]:
    query = (
        select(Image.task_id, func.count())
        .where(Image.task_id.in_(task_ids), Image.purpose == purpose)
        .group_by(Image.task_id)
    )
    return dict((await session.execute(query)).all())


async def completion_counts(session: AsyncSession, assignment_ids: set[int]) -> dict[int, int]:
    query = (
        select(ImageCompletion.assignment_id, func.count())
        .where(ImageCompletion.assignment_id.in_(assignment_ids))
        .group_by(ImageCompletion.assignment_id)
    )
    return dict((await session.execute(query)).all())


def _completion_statement(insert: Any) -> Any:
    completed_at = bindparam("b_completed_at", type_=ImageCompletion.completed_at.type)
    return (
        insert(ImageCompletion)
        .values(
            assignment_id=bindparam("b_assignment"), image_id=bindparam("b_image"), completed_at=completed_at
        )
        .on_conflict_do_nothing(index_elements=["assignment_id", "image_id"])
    )


_COMPLETE_IMAGE = {
    "postgresql": _completion_statement(postgresql.insert),
    "sqlite": _completion_statement(sqlite.insert),
}


def complete_image(session: Session, assignment_id: int, image_id: int, now: datetime) -> None:
    """Record the image as done in the assignment, unless it is already (the first completion stays)."""
    statement = _COMPLETE_IMAGE[session.get_bind().dialect.name]
    session.execute(statement, {"b_assignment": assignment_id, "b_image": image_id, "b_completed_at": now})


async def completed_image_ids(session: AsyncSession, assignment_id: int) -> set[int]:
    query = select(ImageCompletion.image_id).where(ImageCompletion.assignment_id == assignment_id)
    return set(await session.scalars(query))
