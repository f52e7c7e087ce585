"""Every query of the evaluation domain: the import's look-ups and writes, and the study read for metrics.

The metrics read uses SQLAlchemy Core, one query per table, so that a study of tens of thousands of objects
loads as plain tuples without ORM identity-map cost.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Float, Row, Select, and_, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import (
    Annotation,
    Assignment,
    GroundTruthObject,
    Image,
    ImageView,
    ImageVisit,
    InjectedError,
    Label,
    Mode,
    Study,
    Suggestion,
    SuggestionSet,
    Task,
    User,
)

Rows = Sequence[Row[*tuple[Any, ...]]]
AnySelect = Select[*tuple[Any, ...]]
EVALUATED_MODES = (Mode.unaided.value, Mode.aided.value)
INJECTED_SOURCE = "injected"
IMPORTED_REGISTER_NAME = "imported register"


# ---------------------------------------------------------------- look-ups of the import


async def study_by_name(session: AsyncSession, name: str) -> Study | None:
    return await session.scalar(select(Study).where(Study.name == name))


async def task_by_name(session: AsyncSession, study_id: int, name: str) -> Task | None:
    return await session.scalar(select(Task).where(Task.study_id == study_id, Task.name == name))


async def labels_of_task(session: AsyncSession, task_id: int) -> list[Label]:
    query = select(Label).where(Label.task_id == task_id).order_by(Label.position, Label.id)
    return list(await session.scalars(query))


async def images_of_task(session: AsyncSession, task_id: int) -> list[Image]:
    query = select(Image).where(Image.task_id == task_id).order_by(Image.position, Image.id)
    return list(await session.scalars(query))


async def users_by_name(session: AsyncSession, names: Sequence[str]) -> dict[str, User]:
    users = await session.scalars(select(User).where(User.name.in_(list(names))))
    return {user.name: user for user in users}


async def assignment_for(session: AsyncSession, task_id: int, expert_id: int, mode: str) -> Assignment | None:
    query = select(Assignment).where(
        Assignment.task_id == task_id, Assignment.expert_id == expert_id, Assignment.mode == mode
    )
    return await session.scalar(query)


async def has_annotations(session: AsyncSession, task_id: int, expert_id: int, mode: str) -> bool:
    query = (
        select(Annotation.id)
        .join(Image, Image.id == Annotation.image_id)
        .where(Image.task_id == task_id, Annotation.expert_id == expert_id, Annotation.mode == mode)
        .limit(1)
    )
    return await session.scalar(query) is not None


async def has_ground_truth(session: AsyncSession, task_id: int) -> bool:
    query = (
        select(GroundTruthObject.id)
        .join(Image, Image.id == GroundTruthObject.image_id)
        .where(Image.task_id == task_id)
        .limit(1)
    )
    return await session.scalar(query) is not None


async def imported_register(session: AsyncSession, task_id: int) -> SuggestionSet | None:
    query = select(SuggestionSet).where(
        SuggestionSet.task_id == task_id,
        SuggestionSet.source == INJECTED_SOURCE,
        SuggestionSet.name == IMPORTED_REGISTER_NAME,
    )
    return await session.scalar(query)


async def next_register_position(session: AsyncSession, suggestion_set_id: int) -> int:
    query = select(func.max(InjectedError.position)).where(
        InjectedError.suggestion_set_id == suggestion_set_id
    )
    current = await session.scalar(query)
    return 0 if current is None else current + 1


async def next_image_position(session: AsyncSession, task_id: int) -> int:
    current = await session.scalar(select(func.max(Image.position)).where(Image.task_id == task_id))
    return 0 if current is None else current + 1


async def tasks_of_study(session: AsyncSession, study_id: int) -> list[Task]:
    return list(await session.scalars(select(Task).where(Task.study_id == study_id).order_by(Task.id)))


# ---------------------------------------------------------------- export reads


async def annotations_for_export(
    session: AsyncSession, task_id: int, expert_id: int | None, mode: str | None
) -> Rows:
    """(Annotation, Image, Label, User name, view first_seen_at, view id) in detection order."""
    query = (
        select(Annotation, Image, Label, User.name, ImageView.first_seen_at, ImageView.id)
        .join(Image, Image.id == Annotation.image_id)
        .join(Label, Label.id == Annotation.label_id)
        .join(User, User.id == Annotation.expert_id)
        .outerjoin(ImageView, _view_of_annotation())
        .where(Image.task_id == task_id)
    )
    if expert_id is not None:
        query = query.where(Annotation.expert_id == expert_id)
    if mode is not None:
        query = query.where(Annotation.mode == mode)
    query = query.order_by(
        Annotation.expert_id,
        Annotation.mode,
        ImageView.first_seen_at.is_(None),
        ImageView.first_seen_at,
        ImageView.id,
        Image.position,
        Image.id,
        Annotation.position,
        Annotation.id,
    )
    return (await session.execute(query)).all()


def _view_of_annotation() -> ColumnElement[bool]:
    return and_(
        ImageView.image_id == Annotation.image_id,
        ImageView.expert_id == Annotation.expert_id,
        ImageView.mode == Annotation.mode,
    )


async def views_for_export(session: AsyncSession, task_id: int, expert_id: int, mode: str) -> list[Image]:
    query = (
        select(Image)
        .join(ImageView, ImageView.image_id == Image.id)
        .where(Image.task_id == task_id, ImageView.expert_id == expert_id, ImageView.mode == mode)
        .order_by(ImageView.first_seen_at, ImageView.id)
    )
    return list(await session.scalars(query))


async def ground_truth_for_export(session: AsyncSession, task_id: int) -> Rows:
    query = (
        select(GroundTruthObject, Image, Label)
        .join(Image, Image.id == GroundTruthObject.image_id)
        .join(Label, Label.id == GroundTruthObject.label_id)
        .where(Image.task_id == task_id)
        .order_by(GroundTruthObject.position, GroundTruthObject.id)
    )
    return (await session.execute(query)).all()


# ---------------------------------------------------------------- the study read for metrics


@dataclass(frozen=True)
class StudyRows:
    """Plain tuples of every table the metrics need, each in the order the maths needs."""

    tasks: Rows
    labels: Rows
    images: Rows
    users: Rows
    annotations: dict[str, Rows]
    views: Rows
    visits: Rows
    ground_truth: Rows
    shown_sets: Rows
    suggestion_sets: Rows
    suggestions: Rows
    injected: Rows


async def read_study(session: AsyncSession, study_id: int) -> StudyRows:
    tasks = select(Task.id).where(Task.study_id == study_id).scalar_subquery()
    task_ids = list(await session.scalars(select(Task.id).where(Task.study_id == study_id)))
    connection = await session.connection()
    run = connection.execute  # Core execution: plain rows, no ORM loading step
    return StudyRows(
        tasks=(
            await run(select(Task.id, Task.name).where(Task.study_id == study_id).order_by(Task.id))
        ).all(),
        labels=(await run(_labels_query(task_ids))).all(),
        images=(await run(_images_query(task_ids))).all(),
        users=(await run(select(User.id, User.name))).all(),
        annotations={
            mode: (await run(_annotations_query(session, task_ids, mode))).all() for mode in EVALUATED_MODES
        },
        views=(await run(_views_query(task_ids))).all(),
        visits=(await run(_visits_query(task_ids))).all(),
        ground_truth=(await run(_ground_truth_query(task_ids))).all(),
        shown_sets=(await run(_shown_sets_query(task_ids))).all(),
        suggestion_sets=(await run(_suggestion_sets_query(tasks))).all(),
        suggestions=(await run(_suggestions_query(task_ids))).all(),
        injected=(await run(_injected_query(task_ids))).all(),
    )


def _labels_query(task_ids: list[int]) -> AnySelect:
    return (
        select(Label.id, Label.task_id, Label.name)
        .where(Label.task_id.in_(task_ids))
        .order_by(Label.task_id, Label.position, Label.id)
    )


def _images_query(task_ids: list[int]) -> AnySelect:
    return (
        select(Image.id, Image.task_id, Image.width, Image.height, Image.position)
        .where(Image.task_id.in_(task_ids))
        .order_by(Image.id)
    )


def epoch_seconds(session: AsyncSession, column: Any) -> ColumnElement[float]:
    """Whole seconds since 1970 of a stored timestamp (truncated), computed by the database."""
    if session.get_bind().dialect.name == "sqlite":
        if sqlite3.sqlite_version_info >= (3, 38, 0):
            return cast(func.unixepoch(column), Float)
        return cast(func.strftime("%s", column), Float)
    return cast(func.floor(func.extract("epoch", column)), Float)


ANNOTATION_COLUMNS = 10


def _annotations_query(session: AsyncSession, task_ids: list[int], mode: str) -> AnySelect:
    """Counted candidates (not deleted) of one mode, unordered: expert, image, label, box, seconds, position, id.

    Only numbers, and one query per mode, so that tens of thousands of rows load as few Python objects.
    """
    images = select(Image.id).where(Image.task_id.in_(task_ids))
    return select(
        Annotation.expert_id,
        Annotation.image_id,
        Annotation.label_id,
        Annotation.x1,
        Annotation.y1,
        Annotation.x2,
        Annotation.y2,
        epoch_seconds(session, Annotation.updated_at),
        Annotation.position,
        Annotation.id,
    ).where(Annotation.image_id.in_(images), Annotation.mode == mode, Annotation.deleted.is_(False))


def _views_query(task_ids: list[int]) -> AnySelect:
    """Images each expert saw, per mode, in the order first seen."""
    return (
        select(Image.task_id, ImageView.mode, ImageView.expert_id, ImageView.image_id)
        .join(Image, Image.id == ImageView.image_id)
        .where(Image.task_id.in_(task_ids), ImageView.mode.in_(EVALUATED_MODES))
        .order_by(ImageView.mode, ImageView.expert_id, ImageView.first_seen_at, ImageView.id)
    )


def _visits_query(task_ids: list[int]) -> AnySelect:
    """Active seconds per task, mode, expert and image."""
    return (
        select(
            Image.task_id,
            ImageVisit.mode,
            ImageVisit.expert_id,
            ImageVisit.image_id,
            func.sum(ImageVisit.active_seconds),
        )
        .join(Image, Image.id == ImageVisit.image_id)
        .where(Image.task_id.in_(task_ids), ImageVisit.mode.in_(EVALUATED_MODES))
        .group_by(Image.task_id, ImageVisit.mode, ImageVisit.expert_id, ImageVisit.image_id)
    )


def _ground_truth_query(task_ids: list[int]) -> AnySelect:
    return (
        select(
            Image.task_id,
            GroundTruthObject.image_id,
            GroundTruthObject.label_id,
            GroundTruthObject.x1,
            GroundTruthObject.y1,
            GroundTruthObject.x2,
            GroundTruthObject.y2,
        )
        .join(Image, Image.id == GroundTruthObject.image_id)
        .where(Image.task_id.in_(task_ids))
        .order_by(Image.task_id, GroundTruthObject.position, GroundTruthObject.id)
    )


def _shown_sets_query(task_ids: list[int]) -> AnySelect:
    """How many aided assignments show each suggestion set."""
    return (
        select(Assignment.task_id, Assignment.suggestion_set_id, func.count())
        .where(
            Assignment.task_id.in_(task_ids),
            Assignment.mode == Mode.aided.value,
            Assignment.suggestion_set_id.is_not(None),
        )
        .group_by(Assignment.task_id, Assignment.suggestion_set_id)
    )


def _suggestion_sets_query(tasks: Any) -> AnySelect:
    """Sets that hold suggestions, newest last."""
    holding = select(Suggestion.suggestion_set_id).distinct()
    return (
        select(SuggestionSet.task_id, SuggestionSet.id)
        .where(SuggestionSet.task_id.in_(tasks), SuggestionSet.id.in_(holding))
        .order_by(SuggestionSet.task_id, SuggestionSet.id)
    )


def _suggestions_query(task_ids: list[int]) -> AnySelect:
    return (
        select(
            Suggestion.suggestion_set_id,
            Suggestion.image_id,
            Suggestion.label_id,
            Suggestion.x1,
            Suggestion.y1,
            Suggestion.x2,
            Suggestion.y2,
        )
        .join(SuggestionSet, SuggestionSet.id == Suggestion.suggestion_set_id)
        .where(SuggestionSet.task_id.in_(task_ids))
        .order_by(Suggestion.suggestion_set_id, Suggestion.position, Suggestion.id)
    )


def _injected_query(task_ids: list[int]) -> AnySelect:
    return (
        select(
            SuggestionSet.task_id,
            InjectedError.kind,
            InjectedError.group,
            InjectedError.image_id,
            InjectedError.ref_label_id,
            InjectedError.ref_x1,
            InjectedError.ref_y1,
            InjectedError.ref_x2,
            InjectedError.ref_y2,
        )
        .join(SuggestionSet, SuggestionSet.id == InjectedError.suggestion_set_id)
        .where(SuggestionSet.task_id.in_(task_ids), InjectedError.ref_label_id.is_not(None))
        .order_by(
            SuggestionSet.task_id, InjectedError.suggestion_set_id, InjectedError.position, InjectedError.id
        )
    )
