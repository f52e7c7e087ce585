"""Queries of registered detector models."""

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import DetectorModel


async def detector_by_id(session: AsyncSession, detector_id: int) -> DetectorModel | None:
    return await session.get(DetectorModel, detector_id)


async def detector_by_sha256(session: AsyncSession, sha256: str) -> DetectorModel | None:
    return await session.scalar(select(DetectorModel).where(DetectorModel.sha256 == sha256))


async def all_detectors(session: AsyncSession) -> Sequence[DetectorModel]:
    return (await session.scalars(select(DetectorModel).order_by(DetectorModel.id))).all()


async def add_detector(session: AsyncSession, detector: DetectorModel) -> DetectorModel:
    session.add(detector)
    await session.flush()
    return detector
