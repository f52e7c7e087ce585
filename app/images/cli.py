"""`concord slide add|list|regions`: store whole slides once per study and make regions of them images."""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeAlias, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import make_engine, make_sessionmaker, unit_of_work
from app.errors import Invalid, NotFound
from app.images import slides
from app.images.schemas import SlideOut
from app.images.tiles import Window
from app.models import ImagePurpose, Slide, Study, Task
from app.studies import repository as studies_repository

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
T = TypeVar("T")


def register(commands: Subparsers) -> None:
    slide = commands.add_parser("slide", help="whole slides of a study and their regions of interest")
    actions = slide.add_subparsers(dest="slide_command", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="store a slide (SVS, NDPI, SCN, tiled TIFF, PNG, JPEG) for a study")
    add.add_argument("study", help="the study's name, or its id")
    add.add_argument("file", type=Path)
    add.add_argument("--name", help="default: the file's name")
    add.add_argument("--mpp", type=float, help="microns per pixel (default: what the scanner recorded)")
    add.set_defaults(handler=cmd_add)
    listing = actions.add_parser("list", help="the study's slides as JSON")
    listing.add_argument("study", help="the study's name, or its id")
    listing.set_defaults(handler=cmd_list)
    regions = actions.add_parser(
        "regions", help="make regions of a slide images of a task (the slide is not copied)"
    )
    regions.add_argument("task_id", type=int)
    regions.add_argument("slide_id", type=int)
    regions.add_argument(
        "--rect", action="append", default=[], metavar="NAME:X,Y,W,H", help="a rectangle in level-0 pixels"
    )
    regions.add_argument(
        "--hpf",
        action="append",
        default=[],
        metavar="NAME:CX,CY[,N]",
        help="N high-power fields (default 10, 0.237 mm² each, 4:3) centred on CX,CY",
    )
    regions.add_argument("--purpose", choices=[purpose.value for purpose in ImagePurpose], default="study")
    regions.set_defaults(handler=cmd_regions)


async def _in_transaction(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    engine = make_engine(settings.resolved_database_url)
    try:
        async with unit_of_work(make_sessionmaker(engine)) as session:
            return await work(session)
    finally:
        await engine.dispose()


async def _study(session: AsyncSession, reference: str) -> Study:
    """A study by name, or by id when no study has that name (as `concord evaluate --study`)."""
    study = await studies_repository.study_by_name(session, reference)
    if study is None and reference.isdigit():
        study = await session.get(Study, int(reference))
    if study is None:
        raise NotFound(f"no study {reference!r}")
    return study


def cmd_add(args: argparse.Namespace) -> int:
    from app.cli import run_async

    async def work(session: AsyncSession, settings: Settings) -> SlideOut:
        study = await _study(session, args.study)
        with args.file.open("rb") as stream:
            slide = await slides.add_slide(
                session, settings, study, args.name or args.file.name, stream, args.mpp
            )
        return SlideOut.model_validate(slide)

    slide = run_async(lambda settings: _in_transaction(settings, lambda session: work(session, settings)))
    print(slide.model_dump_json())
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from app.cli import run_async

    async def work(session: AsyncSession) -> list[SlideOut]:
        study = await _study(session, args.study)
        return [SlideOut.model_validate(slide) for slide in await slides.slides_of_study(session, study.id)]

    found = run_async(lambda settings: _in_transaction(settings, work))
    print(json.dumps([slide.model_dump(mode="json") for slide in found]))
    return 0


def cmd_regions(args: argparse.Namespace) -> int:
    from app.cli import run_async

    async def work(session: AsyncSession) -> list[tuple[int, str, Window]]:
        task = await session.get(Task, args.task_id)
        if task is None:
            raise NotFound(f"no task {args.task_id}")
        slide = await slides.get_slide(session, args.slide_id)
        regions = [_rect(text) for text in args.rect] + [_hpf(slide, text) for text in args.hpf]
        images = await slides.add_regions(session, task, slide, regions, ImagePurpose(args.purpose))
        return [
            (image.id, image.name, Window(image.offset_x, image.offset_y, image.width, image.height))
            for image in images
        ]

    for image_id, name, window in run_async(lambda settings: _in_transaction(settings, work)):
        print(f"image {image_id} {name}: x {window.x} y {window.y} {window.width}×{window.height}")
    return 0


def _split(text: str, counts: tuple[int, ...]) -> tuple[str, list[float]]:
    name, _, numbers = text.rpartition(":")
    try:
        values = [float(part) for part in numbers.split(",")]
    except ValueError:
        values = []
    if not name or len(values) not in counts:
        raise Invalid(f"cannot read the region {text!r}")
    return name, values


def _rect(text: str) -> slides.Region:
    name, (x, y, width, height) = _split(text, (4,))
    return slides.Region(name, Window(int(x), int(y), int(width), int(height)))


def _hpf(slide: Slide, text: str) -> slides.Region:
    name, values = _split(text, (2, 3))
    fields = int(values[2]) if len(values) == 3 else 10
    return slides.Region(name, slides.hpf_window(slide, values[0], values[1], fields))
