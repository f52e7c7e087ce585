"""JSON routes of whole slides (admin): upload once per study, list, preview, and make regions into images."""

from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import Response

from app.deps import AdminUser, SessionDep, SettingsDep
from app.images import service, slides
from app.images.schemas import ImageOut, RegionIn, SlideOut, SlideRegionsIn
from app.images.tiles import TileCache, Window
from app.models import Slide
from app.schemas_common import FiniteFloat, PathId, file_responses
from app.studies import service as studies

router = APIRouter(tags=["slides"])


async def _tile_cache(request: Request) -> TileCache:
    cache: TileCache = request.app.state.tile_cache
    return cache


CacheDep = Annotated[TileCache, Depends(_tile_cache)]


@router.post("/studies/{study_id}/slides", status_code=201)
async def upload_slide(
    study_id: PathId,
    file: Annotated[UploadFile, File(description="SVS, NDPI, SCN, a tiled TIFF, PNG or JPEG")],
    session: SessionDep,
    settings: SettingsDep,
    admin: AdminUser,
    name: Annotated[str | None, Form(min_length=1, max_length=300)] = None,
    microns_per_pixel: Annotated[FiniteFloat | None, Form(gt=0, le=100)] = None,
) -> SlideOut:
    """Store a whole slide once for the study (admin); experts never see it, only regions made from it."""
    study = await studies.get_study(session, admin, study_id)
    slide_name = name or file.filename or "slide"
    slide = await slides.add_slide(session, settings, study, slide_name, file.file, microns_per_pixel)
    return SlideOut.model_validate(slide)


@router.get("/studies/{study_id}/slides")
async def list_slides(study_id: PathId, session: SessionDep, admin: AdminUser) -> list[SlideOut]:
    """The study's slides (admin)."""
    study = await studies.get_study(session, admin, study_id)
    return [SlideOut.model_validate(slide) for slide in await slides.slides_of_study(session, study.id)]


@router.get("/slides/{slide_id}")
async def get_slide(slide_id: PathId, session: SessionDep, admin: AdminUser) -> SlideOut:
    return SlideOut.model_validate(await slides.get_slide(session, slide_id))


@router.get("/slides/{slide_id}/thumbnail", responses=file_responses("image/jpeg"))
async def slide_thumbnail(
    slide_id: PathId,
    session: SessionDep,
    settings: SettingsDep,
    cache: CacheDep,
    admin: AdminUser,
    max_side: Annotated[int, Query(ge=16, le=2048)] = 1024,
) -> Response:
    """The whole slide, small, from its smallest sufficient level, to choose regions on (admin)."""
    slide = await slides.get_slide(session, slide_id)
    content = await service.thumbnail(cache, settings, slides.slide_as_image(slide), max_side, "jpeg")
    return Response(content, media_type="image/jpeg")


@router.get("/slides/{slide_id}/regions")
async def list_regions(
    slide_id: PathId, session: SessionDep, settings: SettingsDep, cache: CacheDep, admin: AdminUser
) -> list[ImageOut]:
    """The images made from regions of this slide, in every task (admin)."""
    slide = await slides.get_slide(session, slide_id)
    images = await slides.regions_of_slide(session, slide.id)
    return [await service.describe(cache, settings, image) for image in images]


@router.post("/tasks/{task_id}/slide-regions", status_code=201)
async def add_slide_regions(
    task_id: PathId,
    data: SlideRegionsIn,
    session: SessionDep,
    settings: SettingsDep,
    cache: CacheDep,
    admin: AdminUser,
) -> list[ImageOut]:
    """Make regions of a slide of the task's study into images of the task (admin); the slide is not copied.

    A region is a rectangle in level-0 pixels or a number of high-power fields around a point."""
    task = await studies.get_task(session, admin, task_id)
    slide = await slides.get_slide(session, data.slide_id)
    regions = [slides.Region(item.name, _window(slide, item)) for item in data.regions]
    images = await slides.add_regions(session, task, slide, regions, data.purpose)
    return [await service.describe(cache, settings, image) for image in images]


def _window(slide: Slide, item: RegionIn) -> Window:
    if item.hpf is not None and item.center_x is not None and item.center_y is not None:
        return slides.hpf_window(slide, item.center_x, item.center_y, item.hpf)
    return Window(item.x or 0, item.y or 0, item.width or 0, item.height or 0)
