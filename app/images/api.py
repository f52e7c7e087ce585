"""JSON routes of images: upload, listing, regions, tiles, thumbnails; ground truth (admin)."""

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import Response

from app.deps import AdminUser, CurrentUser, SessionDep, SettingsDep
from app.images import repository, service
from app.images.schemas import GroundTruthOut, GroundTruthUpload, ImageOut
from app.images.tiles import TileCache, Window
from app.models import ImagePurpose
from app.schemas_common import FiniteFloat, PathId, file_responses
from app.studies import service as studies

router = APIRouter(tags=["images"])

Format = Annotated[Literal["jpeg", "png"], Query(description="jpeg (default) or png")]
IMMUTABLE = {"Cache-Control": "private, max-age=86400, immutable"}
MEDIA = {"jpeg": "image/jpeg", "png": "image/png"}


async def tile_cache(request: Request) -> TileCache:
    cache: TileCache = request.app.state.tile_cache
    return cache


CacheDep = Annotated[TileCache, Depends(tile_cache)]


@router.post("/tasks/{task_id}/images", status_code=201)
async def upload_images(
    task_id: PathId,
    files: Annotated[list[UploadFile], File(description="PNG, JPEG or TIFF files")],
    session: SessionDep,
    settings: SettingsDep,
    cache: CacheDep,
    admin: AdminUser,
    purpose: Annotated[
        ImagePurpose, Form(description="study (unaided, aided) or practice (training mode only)")
    ] = ImagePurpose.study,
    microns_per_pixel: Annotated[FiniteFloat | None, Form(gt=0, le=100)] = None,
    region_x: Annotated[int | None, Form(ge=0)] = None,
    region_y: Annotated[int | None, Form(ge=0)] = None,
    region_width: Annotated[int | None, Form(ge=1)] = None,
    region_height: Annotated[int | None, Form(ge=1)] = None,
) -> list[ImageOut]:
    """Upload images to a task (admin); all files are validated first, a bad one rejects the upload.

    The credential and the body size are checked before the body is read (app/upload_guard.py).
    """
    task = await studies.get_task(session, admin, task_id)
    window = _window(region_x, region_y, region_width, region_height)
    items = [
        service.NewImage(
            name=upload.filename or f"upload-{index}",
            stream=upload.file,
            window=window,
            microns_per_pixel=microns_per_pixel,
            purpose=purpose,
        )
        for index, upload in enumerate(files)
    ]
    images = await service.add_images(session, settings, task, items)
    return [await service.describe(cache, settings, image) for image in images]


def _window(x: int | None, y: int | None, width: int | None, height: int | None) -> Window | None:
    if x is None and y is None and width is None and height is None:
        return None
    return Window(x or 0, y or 0, width or 0, height or 0)


@router.get("/tasks/{task_id}/images")
async def list_images(
    task_id: PathId,
    session: SessionDep,
    settings: SettingsDep,
    cache: CacheDep,
    user: CurrentUser,
    purpose: Annotated[ImagePurpose | None, Query(description="only study or only practice images")] = None,
) -> list[ImageOut]:
    """Images of a task in their order; experts get practice images only with a training assignment."""
    task = await studies.get_task(session, user, task_id)
    visible = await studies.visible_purposes(session, user, task)
    images = await repository.images_of_task(session, task_id, None)
    shown = [image for image in images if image.purpose in visible and purpose in (None, image.purpose)]
    return [await service.describe(cache, settings, image) for image in shown]


@router.get("/images/{image_id}")
async def get_image(
    image_id: PathId, session: SessionDep, settings: SettingsDep, cache: CacheDep, user: CurrentUser
) -> ImageOut:
    """One image with its pyramid levels."""
    image = await studies.get_image(session, user, image_id)
    return await service.describe(cache, settings, image)


@router.get("/images/{image_id}/region", responses=file_responses(*MEDIA.values()))
async def get_region(
    image_id: PathId,
    session: SessionDep,
    settings: SettingsDep,
    cache: CacheDep,
    user: CurrentUser,
    x: Annotated[int, Query()],
    y: Annotated[int, Query()],
    w: Annotated[int, Query(ge=1, le=4096)],
    h: Annotated[int, Query(ge=1, le=4096)],
    level: Annotated[int, Query(ge=0, le=30)] = 0,
    format: Format = "jpeg",
) -> Response:
    """Any rectangle of an image at a pyramid level, in that level's pixels."""
    image = await studies.get_image(session, user, image_id)
    content = await service.region(cache, settings, image, level, (x, y, w, h), format)
    return Response(content, media_type=MEDIA[format], headers=IMMUTABLE)


@router.get("/images/{image_id}/tiles/{level}/{col}/{row}", responses=file_responses(*MEDIA.values()))
async def get_tile(
    image_id: PathId,
    level: int,
    col: int,
    row: int,
    session: SessionDep,
    settings: SettingsDep,
    cache: CacheDep,
    user: CurrentUser,
    size: Annotated[int, Query(ge=64, le=2048)] = 256,
    format: Format = "jpeg",
) -> Response:
    """One tile of the image pyramid (col, row counted from the top left)."""
    image = await service.visible_image(session, user, image_id)
    content = await service.tile(cache, settings, image, level, col, row, size, format)
    return Response(content, media_type=MEDIA[format], headers=IMMUTABLE)


@router.get("/images/{image_id}/thumbnail", responses=file_responses(*MEDIA.values()))
async def get_thumbnail(
    image_id: PathId,
    session: SessionDep,
    settings: SettingsDep,
    cache: CacheDep,
    user: CurrentUser,
    max_side: Annotated[int, Query(ge=16, le=1024)] = 256,
    format: Format = "jpeg",
) -> Response:
    """A small preview of the whole image."""
    image = await studies.get_image(session, user, image_id)
    content = await service.thumbnail(cache, settings, image, max_side, format)
    return Response(content, media_type=MEDIA[format], headers=IMMUTABLE)


@router.post("/tasks/{task_id}/ground-truth", status_code=201)
async def upload_ground_truth(
    task_id: PathId, data: GroundTruthUpload, session: SessionDep, admin: AdminUser
) -> dict[str, int]:
    """Upload reference objects of a task (admin); all or nothing."""
    task = await studies.get_task(session, admin, task_id)
    labels = await studies.label_map(session, task.id)
    count = await service.upload_ground_truth(session, task, labels, data.objects, data.replace)
    return {"created": count}


@router.get("/tasks/{task_id}/ground-truth")
async def list_ground_truth(task_id: PathId, session: SessionDep, admin: AdminUser) -> list[GroundTruthOut]:
    """Reference objects of a task (admin only: experts never see ground truth)."""
    task = await studies.get_task(session, admin, task_id)
    labels = {label.id: label.name for label in (await studies.label_map(session, task.id)).values()}
    return [
        GroundTruthOut(
            id=item.id,
            image_id=item.image_id,
            label=labels[item.label_id],
            x1=item.x1,
            y1=item.y1,
            x2=item.x2,
            y2=item.y2,
            difficulty=item.difficulty,
        )
        for item in await repository.ground_truth_of_task(session, task.id, None)
    ]
