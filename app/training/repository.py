"""Every query of the training domain: the experts' boxes, detector candidates, ground truth and runs."""

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import (
    Annotation,
    GroundTruthObject,
    Image,
    ImagePurpose,
    Suggestion,
    SuggestionSet,
    TrainingRun,
    User,
)

BoxRows = Sequence[tuple[int, int, float, float, float, float]]


async def annotating_experts(session: AsyncSession, task_id: int, mode: str) -> dict[str, int]:
    """Name → id of every expert with at least one current object on the task in the mode."""
    rows = await session.execute(
        select(User.name, User.id)
        .join(Annotation, Annotation.expert_id == User.id)
        .join(Image, Image.id == Annotation.image_id)
        .where(Image.task_id == task_id, Annotation.mode == mode, Annotation.deleted.is_(False))
        .distinct()
    )
    return dict(rows.all())


async def expert_boxes(session: AsyncSession, task_id: int, mode: str, expert_ids: Sequence[int]) -> BoxRows:
    """(image_id, expert_id, x1, y1, x2, y2) of the experts' current objects, in image and creation order."""
    result = await session.execute(
        select(
            Annotation.image_id,
            Annotation.expert_id,
            Annotation.x1,
            Annotation.y1,
            Annotation.x2,
            Annotation.y2,
        )
        .join(Image, Image.id == Annotation.image_id)
        .where(
            Image.task_id == task_id,
            Annotation.mode == mode,
            Annotation.deleted.is_(False),
            Annotation.expert_id.in_(expert_ids),
        )
        .order_by(Image.position, Image.id, Annotation.position, Annotation.id)
    )
    return result.all()


async def candidate_boxes(session: AsyncSession, task_id: int) -> BoxRows:
    """(image_id, suggestion_set_id, x1, y1, x2, y2) of every suggestion of the task's suggestion sets."""
    result = await session.execute(
        select(
            Suggestion.image_id,
            Suggestion.suggestion_set_id,
            Suggestion.x1,
            Suggestion.y1,
            Suggestion.x2,
            Suggestion.y2,
        )
        .join(SuggestionSet, SuggestionSet.id == Suggestion.suggestion_set_id)
        .where(SuggestionSet.task_id == task_id)
        .order_by(Suggestion.image_id, Suggestion.suggestion_set_id, Suggestion.position, Suggestion.id)
    )
    return result.all()


async def ground_truth_boxes(session: AsyncSession, task_id: int) -> BoxRows:
    """(image_id, label_id, x1, y1, x2, y2) of the ground truth on the task's study images."""
    result = await session.execute(
        select(
            GroundTruthObject.image_id,
            GroundTruthObject.label_id,
            GroundTruthObject.x1,
            GroundTruthObject.y1,
            GroundTruthObject.x2,
            GroundTruthObject.y2,
        )
        .join(Image, Image.id == GroundTruthObject.image_id)
        .where(Image.task_id == task_id, Image.purpose == ImagePurpose.study)
        .order_by(Image.position, Image.id, GroundTruthObject.position, GroundTruthObject.id)
    )
    return result.all()


def add_run(session: AsyncSession, values: dict[str, Any]) -> TrainingRun:
    run = TrainingRun(**values)
    session.add(run)
    return run


async def runs_of_study(session: AsyncSession, study_id: int) -> Sequence[TrainingRun]:
    result = await session.scalars(
        select(TrainingRun).where(TrainingRun.study_id == study_id).order_by(TrainingRun.id)
    )
    return result.all()
