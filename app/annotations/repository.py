"""Queries of annotations, their events, visits and image views."""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import BindParameter

from app.models import (
    Annotation,
    AnnotationEvent,
    Assignment,
    IdempotentRequest,
    Image,
    ImageView,
    ImageVisit,
    Label,
    Study,
    Suggestion,
    Task,
)
from app.models.study import purpose_of_mode


@dataclass(frozen=True)
class WorkspaceRow:
    image: Image
    task: Task
    study: Study
    assignment: Assignment
    seen: bool
    labels: list[Label]


# The edit routes' statements are built once, with bound parameters: building a statement costs more CPU
# than SQLAlchemy's cached compilation and the database's own work together.
_expert: BindParameter[int] = bindparam("b_expert")
_image: BindParameter[int] = bindparam("b_image")
_mode: BindParameter[str] = bindparam("b_mode")
_WORKSPACE_ROWS = (
    select(Image, Task, Study, Assignment, ImageView.id, Label)
    .join(Task, Task.id == Image.task_id)
    .join(Study, Study.id == Task.study_id)
    .join(
        Assignment,
        and_(Assignment.task_id == Task.id, Assignment.expert_id == _expert, Assignment.mode == _mode),
    )
    .outerjoin(
        ImageView,
        and_(ImageView.image_id == Image.id, ImageView.expert_id == _expert, ImageView.mode == _mode),
    )
    .outerjoin(Label, Label.task_id == Task.id)
    .where(Image.id == _image, Image.purpose == bindparam("b_purpose"))
    .order_by(Label.position)
)


async def workspace_row(
    session: AsyncSession, expert_id: int, image_id: int, mode: str
) -> WorkspaceRow | None:
    """In one query: the image, its task and study, the expert's assignment of that task in the mode,
    whether the expert has opened the image in the mode before, and the task's labels (one row each).
    None when any of them is missing or the image is not of the mode's purpose (practice images for
    training, study images otherwise)."""
    parameters = {
        "b_expert": expert_id,
        "b_image": image_id,
        "b_mode": mode,
        "b_purpose": purpose_of_mode(mode),
    }
    rows = (await session.execute(_WORKSPACE_ROWS, parameters)).all()
    if not rows:
        return None
    image, task, study, assignment, view_id, _ = rows[0]
    labels = [row[5] for row in rows if row[5] is not None]
    return WorkspaceRow(image, task, study, assignment, view_id is not None, labels)


async def annotations_of(
    session: AsyncSession,
    image_id: int,
    expert_id: int,
    mode: str,
    include_deleted: bool,
) -> Sequence[Annotation]:
    query = select(Annotation).where(
        Annotation.image_id == image_id,
        Annotation.expert_id == expert_id,
        Annotation.mode == mode,
    )
    if not include_deleted:
        query = query.where(Annotation.deleted.is_(False))
    return (await session.scalars(query.order_by(Annotation.position, Annotation.id))).all()


_NEXT_POSITION = select(func.max(Annotation.position)).where(
    Annotation.image_id == _image, Annotation.expert_id == _expert, Annotation.mode == _mode
)


def next_position(session: Session, image_id: int, expert_id: int, mode: str) -> int:
    parameters = {"b_image": image_id, "b_expert": expert_id, "b_mode": mode}
    current = session.scalar(_NEXT_POSITION, parameters)
    return 0 if current is None else current + 1


def _claim_statement(insert: Any) -> Any:
    return (
        insert(IdempotentRequest)
        .values(expert_id=_expert, key=bindparam("b_key"), fingerprint=bindparam("b_fingerprint"))
        .on_conflict_do_nothing(index_elements=["expert_id", "key"])
        .returning(IdempotentRequest.id)
    )


_CLAIM = {"postgresql": _claim_statement(postgresql.insert), "sqlite": _claim_statement(sqlite.insert)}
_REQUEST_BY_KEY = select(IdempotentRequest).where(
    IdempotentRequest.expert_id == _expert, IdempotentRequest.key == bindparam("b_key")
)
_REMEMBER_ANSWER = (
    update(IdempotentRequest)
    .where(IdempotentRequest.expert_id == _expert, IdempotentRequest.key == bindparam("b_key"))
    .values(response=bindparam("b_response", type_=IdempotentRequest.response.type))
)


def claim_key(session: Session, expert_id: int, key: str, fingerprint: str) -> bool:
    """Insert the key's row unless the key is taken; a concurrent holder is waited for until it ends."""
    statement = _CLAIM[session.get_bind().dialect.name]
    parameters = {"b_expert": expert_id, "b_key": key, "b_fingerprint": fingerprint}
    return session.execute(statement, parameters).first() is not None


def request_by_key(session: Session, expert_id: int, key: str) -> IdempotentRequest | None:
    return session.scalar(_REQUEST_BY_KEY, {"b_expert": expert_id, "b_key": key})


def remember_answer(session: Session, expert_id: int, key: str, response: Any) -> None:
    session.execute(_REMEMBER_ANSWER, {"b_expert": expert_id, "b_key": key, "b_response": response})


async def events_of(
    session: AsyncSession, image_id: int, expert_id: int, mode: str
) -> Sequence[AnnotationEvent]:
    query = (
        select(AnnotationEvent)
        .where(
            AnnotationEvent.image_id == image_id,
            AnnotationEvent.expert_id == expert_id,
            AnnotationEvent.mode == mode,
        )
        .order_by(AnnotationEvent.id)
    )
    return (await session.scalars(query)).all()


async def visits_of(session: AsyncSession, image_id: int, expert_id: int, mode: str) -> Sequence[ImageVisit]:
    query = (
        select(ImageVisit)
        .where(
            ImageVisit.image_id == image_id,
            ImageVisit.expert_id == expert_id,
            ImageVisit.mode == mode,
        )
        .order_by(ImageVisit.id)
    )
    return (await session.scalars(query)).all()


async def image_view(session: AsyncSession, image_id: int, expert_id: int, mode: str) -> ImageView | None:
    query = select(ImageView).where(
        ImageView.image_id == image_id,
        ImageView.expert_id == expert_id,
        ImageView.mode == mode,
    )
    return await session.scalar(query)


async def suggestions_of(
    session: AsyncSession, suggestion_set_id: int, image_id: int
) -> Sequence[Suggestion]:
    query = (
        select(Suggestion)
        .where(
            Suggestion.suggestion_set_id == suggestion_set_id,
            Suggestion.image_id == image_id,
        )
        .order_by(Suggestion.position, Suggestion.id)
    )
    return (await session.scalars(query)).all()
