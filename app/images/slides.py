"""Whole slides kept once per study; their regions of interest become images of tasks without a copy.

A slide's file is stored like any image (by SHA-256). A region is an ordinary image row pointing at the
same file with a window (offset and size in level-0 pixels), so tiles, annotations, detection and the
evaluation treat it like any other image; ``slide_region`` records which slide it came from. Nothing
of the slide's pixels is copied or re-encoded.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from anyio import to_thread
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.errors import AppError, Conflict, Invalid, NotFound
from app.images import repository, storage
from app.images.tiles import Window
from app.images.validation import ImageRejected
from app.models import Image, ImagePurpose, Slide, SlideRegion, Study, Task

# The paper's mitotic-figure regions: 10 high-power fields, 2.37 mm² in all, 4:3 wide.
HPF_AREA_MM2 = 0.237
HPF_ASPECT = 4 / 3


@dataclass(frozen=True)
class Region:
    name: str
    window: Window


def hpf_window(slide: Slide, center_x: float, center_y: float, fields: int = 10) -> Window:
    """A 4:3 window of `fields` high-power fields (0.237 mm² each) centred on a point of the slide,
    sized from the slide's resolution and moved inside the slide where it would stick out."""
    if slide.microns_per_pixel is None:
        raise Invalid(f"slide {slide.name!r} has no resolution: give the region in pixels")
    area_px = fields * HPF_AREA_MM2 * 1e6 / slide.microns_per_pixel**2
    height = round(math.sqrt(area_px / HPF_ASPECT))
    width = round(height * HPF_ASPECT)
    if width > slide.width or height > slide.height:
        raise Invalid(
            f"{fields} HPF ({width}×{height} px) do not fit in the {slide.width}×{slide.height} slide"
        )
    x = min(max(0, round(center_x - width / 2)), slide.width - width)
    y = min(max(0, round(center_y - height / 2)), slide.height - height)
    return Window(x, y, width, height)


async def add_slide(
    session: AsyncSession,
    settings: Settings,
    study: Study,
    name: str,
    stream: BinaryIO,
    microns_per_pixel: float | None = None,
) -> Slide:
    """Validate and store the file once (a file already stored is not stored again)."""
    _check_name(name)
    if await _slide_named(session, study.id, name) is not None:
        raise Conflict(f"the study already has a slide named {name!r}")
    try:
        staged = await to_thread.run_sync(storage.stage_stream, settings, stream)
    except ImageRejected as rejected:
        raise AppError(f"{name}: {rejected.reason}", status_code=rejected.status) from rejected
    await to_thread.run_sync(storage.commit_staged, settings, staged)
    info = staged.info
    slide = Slide(
        study_id=study.id,
        name=name,
        sha256=staged.sha256,
        file_format=info.format,
        width=info.width,
        height=info.height,
        level_count=info.levels,
        microns_per_pixel=microns_per_pixel if microns_per_pixel is not None else info.microns_per_pixel,
    )
    session.add(slide)
    await session.flush()
    return slide


async def slides_of_study(session: AsyncSession, study_id: int) -> Sequence[Slide]:
    return (await session.scalars(select(Slide).where(Slide.study_id == study_id).order_by(Slide.id))).all()


async def get_slide(session: AsyncSession, slide_id: int) -> Slide:
    slide = await session.get(Slide, slide_id)
    if slide is None:
        raise NotFound(f"no slide {slide_id}")
    return slide


async def add_regions(
    session: AsyncSession,
    task: Task,
    slide: Slide,
    regions: Sequence[Region],
    purpose: ImagePurpose = ImagePurpose.study,
) -> list[Image]:
    """All or nothing: every region must lie inside the slide and have a name new to the task."""
    if slide.study_id != task.study_id:
        raise Invalid(f"slide {slide.id} belongs to another study than task {task.id}")
    _check_region_names([region.name for region in regions], await repository.image_names(session, task.id))
    for region in regions:
        _check_inside(slide, region)
    position = await repository.next_image_position(session, task.id)
    images = [
        _region_image(task, slide, region, purpose, position + index) for index, region in enumerate(regions)
    ]
    session.add_all(images)
    await session.flush()
    session.add_all(SlideRegion(image_id=image.id, slide_id=slide.id) for image in images)
    await session.flush()
    return images


async def regions_of_slide(session: AsyncSession, slide_id: int) -> Sequence[Image]:
    query = (
        select(Image)
        .join(SlideRegion, SlideRegion.image_id == Image.id)
        .where(SlideRegion.slide_id == slide_id)
        .order_by(Image.task_id, Image.position, Image.id)
    )
    return (await session.scalars(query)).all()


def slide_as_image(slide: Slide) -> Image:
    """An unsaved image row of the whole slide, to read its pixels (thumbnail) through the image paths."""
    return Image(
        id=0,
        task_id=0,
        name=slide.name,
        sha256=slide.sha256,
        file_format=slide.file_format,
        file_width=slide.width,
        file_height=slide.height,
        offset_x=0,
        offset_y=0,
        width=slide.width,
        height=slide.height,
    )


def _region_image(task: Task, slide: Slide, region: Region, purpose: ImagePurpose, position: int) -> Image:
    window = region.window
    return Image(
        task_id=task.id,
        name=region.name,
        sha256=slide.sha256,
        file_format=slide.file_format,
        file_width=slide.width,
        file_height=slide.height,
        offset_x=window.x,
        offset_y=window.y,
        width=window.width,
        height=window.height,
        microns_per_pixel=slide.microns_per_pixel,
        position=position,
        purpose=purpose,
    )


async def _slide_named(session: AsyncSession, study_id: int, name: str) -> Slide | None:
    query = select(Slide).where(Slide.study_id == study_id, Slide.name == name)
    return (await session.scalars(query)).first()


def _check_name(name: str) -> None:
    if not name or len(name) > 300 or "/" in name or "\\" in name:
        raise Invalid(f"bad name {name!r}")


def _check_region_names(names: list[str], existing: set[str]) -> None:
    if not names:
        raise Invalid("no regions were given")
    for name in names:
        _check_name(name)
    if len(set(names)) != len(names):
        raise Invalid("two regions have the same name")
    taken = sorted(set(names) & existing)
    if taken:
        raise Conflict(f"the task already has images named {', '.join(taken)}")


def _check_inside(slide: Slide, region: Region) -> None:
    window = region.window
    if window.x < 0 or window.y < 0 or window.width < 1 or window.height < 1:
        raise Invalid(f"{region.name}: a region needs a non-negative offset and a positive size")
    if window.x + window.width > slide.width or window.y + window.height > slide.height:
        raise Invalid(f"{region.name}: region lies outside the {slide.width}×{slide.height} slide")
