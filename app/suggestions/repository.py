"""Queries of suggestion sets, their suggestions and the hidden register of injected errors."""

from collections.abc import Sequence

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import InjectedError, Suggestion, SuggestionSet


async def set_by_id(session: AsyncSession, set_id: int) -> SuggestionSet | None:
    return await session.get(SuggestionSet, set_id)


async def sets_of_task(session: AsyncSession, task_id: int) -> Sequence[SuggestionSet]:
    query = select(SuggestionSet).where(SuggestionSet.task_id == task_id).order_by(SuggestionSet.id)
    return (await session.scalars(query)).all()


async def suggestion_counts(session: AsyncSession, set_ids: Sequence[int]) -> dict[int, int]:
    query = (
        select(Suggestion.suggestion_set_id, func.count())
        .where(Suggestion.suggestion_set_id.in_(set_ids))
        .group_by(Suggestion.suggestion_set_id)
    )
    return dict((await session.execute(query)).all())


async def error_counts(session: AsyncSession, set_ids: Sequence[int]) -> dict[int, int]:
    query = (
        select(InjectedError.suggestion_set_id, func.count())
        .where(InjectedError.suggestion_set_id.in_(set_ids))
        .group_by(InjectedError.suggestion_set_id)
    )
    return dict((await session.execute(query)).all())


async def suggestions_of_set(session: AsyncSession, set_id: int) -> Sequence[Suggestion]:
    query = (
        select(Suggestion)
        .where(Suggestion.suggestion_set_id == set_id)
        .order_by(Suggestion.position, Suggestion.id)
    )
    return (await session.scalars(query)).all()


async def register_of_set(session: AsyncSession, set_id: int) -> Sequence[InjectedError]:
    query = (
        select(InjectedError)
        .where(InjectedError.suggestion_set_id == set_id)
        .order_by(InjectedError.position, InjectedError.id)
    )
    return (await session.scalars(query)).all()
