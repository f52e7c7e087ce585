"""Queries of simulated studies."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Image, Study, Task


async def time_scale_of_image(session: AsyncSession, image_id: int) -> float:
    """The time scale of the study an image belongs to: 1 for a study of real experts."""
    query = (
        select(Study.simulation_time_scale)
        .join(Task, Task.study_id == Study.id)
        .join(Image, Image.task_id == Task.id)
        .where(Image.id == image_id)
    )
    scale = await session.scalar(query)
    return 1.0 if scale is None else float(scale)
