"""A small simulated study: the demo's classify task on a few patches, injection sized to fit them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import make_engine, make_sessionmaker
from app.demo import DEMO_STUDY, DemoShape, create_demo
from app.models import (
    Annotation,
    AnnotationEvent,
    Assignment,
    Image,
    ImageCompletion,
    ImageVisit,
    Label,
    Study,
    Task,
    User,
)

SMALL_CLASSIFY = DemoShape(
    kinds=("classify",),
    injection_overrides={
        "classify": {
            "steps": [
                {"kind": "class_changed", "count": 4, "images": 2},
                {"kind": "removed", "per_image": 1, "images": 2},
                {"kind": "duplicate", "count": 2},
                {"kind": "false_positive", "count": 2, "source": "random"},
            ]
        }
    },
)
SMALL_PATCHES = 5


async def small_study(settings: Settings) -> None:
    await create_demo(settings, seed=0, patches=SMALL_PATCHES, shape=SMALL_CLASSIFY)


async def study_content(settings: Settings) -> dict[str, Any]:
    """What the simulated experts did, in terms of content only: no ids, no server timestamps; experts by
    their position among the study's simulated experts."""
    engine = make_engine(settings.resolved_database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            return await _content(session)
    finally:
        await engine.dispose()


async def _content(session: AsyncSession) -> dict[str, Any]:
    study = await session.scalar(select(Study).where(Study.name == DEMO_STUDY))
    assert study is not None
    users = list(
        await session.scalars(select(User).where(User.name.like(f"sim{study.id}-%")).order_by(User.name))
    )
    rank = {user.id: index for index, user in enumerate(users)}
    labels = {label.id: label.name for label in await session.scalars(select(Label))}
    images = {image.id: image.name for image in await session.scalars(select(Image))}
    tasks = {task.id: task.name for task in await session.scalars(select(Task))}
    annotations = sorted(
        (
            rank[a.expert_id],
            images[a.image_id],
            a.mode,
            a.position,
            labels[a.label_id],
            a.x1,
            a.y1,
            a.x2,
            a.y2,
            a.origin,
            a.deleted,
            a.version,
        )
        for a in await session.scalars(select(Annotation).where(Annotation.expert_id.in_(rank)))
    )
    events = [
        (rank[e.expert_id], images[e.image_id], e.mode, e.kind, e.before, e.after)
        for e in await session.scalars(
            select(AnnotationEvent).where(AnnotationEvent.expert_id.in_(rank)).order_by(AnnotationEvent.id)
        )
    ]
    assignments = sorted(
        (rank[a.expert_id], tasks[a.task_id], a.mode, a.status, a.washout_override_reason)
        for a in await session.scalars(select(Assignment).where(Assignment.expert_id.in_(rank)))
    )
    done = sorted(
        (rank[a.expert_id], a.mode, images[c.image_id])
        for c, a in (
            await session.execute(
                select(ImageCompletion, Assignment).join(
                    Assignment, Assignment.id == ImageCompletion.assignment_id
                )
            )
        ).all()
        if a.expert_id in rank
    )
    visits = await session.scalar(
        select(func.count()).select_from(ImageVisit).where(ImageVisit.expert_id.in_(rank))
    )
    return {
        "study": (study.simulated, study.simulation),
        "annotations": annotations,
        "events_per_expert": sorted(events, key=lambda event: event[0]),  # stable: each expert's own order
        "assignments": assignments,
        "done": done,
        "visits": visits,
    }


async def visit_seconds(settings: Settings) -> dict[str, float]:
    """Σ active seconds of the simulated experts' visits per mode."""
    engine = make_engine(settings.resolved_database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            rows = await session.execute(
                select(ImageVisit.mode, func.sum(ImageVisit.active_seconds))
                .join(User, User.id == ImageVisit.expert_id)
                .where(User.name.like("sim%"))
                .group_by(ImageVisit.mode)
            )
            return {str(mode): float(total) for mode, total in rows.all()}
    finally:
        await engine.dispose()
