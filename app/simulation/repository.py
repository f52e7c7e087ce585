"""Queries of simulated studies."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Image, ImageVisit, Study, Task


async def time_scale_of_visit(session: AsyncSession, image_id: int, expert_id: int) -> float:
    """How many seconds a wall second of this visit counts: the study's time scale for its simulated experts,
    1 for everyone else (a person trying the demo's workspace by hand counts real seconds)."""
    query = (
        select(Study.simulation_time_scale, Study.simulation)
        .join(Task, Task.study_id == Study.id)
        .join(Image, Image.task_id == Task.id)
        .where(Image.id == image_id)
    )
    row = (await session.execute(query)).first()
    return 1.0 if row is None else time_scale_for(expert_id, row[0], row[1])


def time_scale_for(expert_id: int, simulation_time_scale: float | None, simulation: Any) -> float:
    """The study's time scale for its simulated experts (`simulation["expert_ids"]`), else 1."""
    if simulation_time_scale is None or not isinstance(simulation, dict):
        return 1.0
    return float(simulation_time_scale) if expert_id in simulation.get("expert_ids", []) else 1.0


async def study_has_visits(session: AsyncSession, study_id: int) -> bool:
    query = (
        select(ImageVisit.id)
        .join(Image, Image.id == ImageVisit.image_id)
        .join(Task, Task.id == Image.task_id)
        .where(Task.study_id == study_id)
        .limit(1)
    )
    return await session.scalar(query) is not None
