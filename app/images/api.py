"""JSON routes of images: upload, listing, regions, tiles, thumbnails; ground truth (admin)."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.responses import Response
from fastapi.routing import APIRoute
from starlette.convertors import StringConvertor
from starlette.routing import Match, request_response
from starlette.types import Receive, Scope, Send

from app.deps import AdminUser, CurrentUser, SessionDep, SettingsDep, request_credential
from app.errors import Invalid, NotAuthenticated, NotFound
from app.images import repository, service
from app.images.schemas import GroundTruthOut, GroundTruthUpload, ImageOut
from app.images.stored_jpeg import WouldBlock
from app.images.tiles import EncodeFormat, TileCache, Window
from app.models import ImagePurpose
from app.schemas_common import DB_ID_MAX, FiniteFloat, PathId, file_responses
from app.studies import service as studies

router = APIRouter(tags=["images"])

Format = Annotated[Literal["jpeg", "png"], Query(description="jpeg (default) or png")]
IMMUTABLE = {"Cache-Control": "private, max-age=86400, immutable"}
MEDIA = {"jpeg": "image/jpeg", "png": "image/png"}
IMMUTABLE_HEADER = (b"cache-control", IMMUTABLE["Cache-Control"].encode())
MEDIA_HEADERS = {fmt: (b"content-type", media.encode()) for fmt, media in MEDIA.items()}


class ImmutableImage(Response):
    """An image as Response(content, media_type=MEDIA[fmt], headers=IMMUTABLE) answers it, the same headers
    in the same order, but encoded once: Starlette encodes and scans them per answer, 2-4 µs that every
    tile's answer spent on the event loop (a third of a cached tile's own work)."""

    def __init__(self, content: bytes, fmt: EncodeFormat) -> None:
        self.status_code = 200
        self.media_type = MEDIA[fmt]
        self.background = None
        self.body = content
        self.raw_headers = [IMMUTABLE_HEADER, (b"content-length", b"%d" % len(content)), MEDIA_HEADERS[fmt]]


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
    request: Request,
    image_id: PathId,
    session: SessionDep,
    settings: SettingsDep,
    cache: CacheDep,
    user: CurrentUser,
) -> ImageOut:
    """One image with its pyramid levels, and its granted tile URL (`tile_url`, valid until
    `tile_url_expires_at` for requests with the same credential as this one)."""
    image = await studies.get_image(session, user, image_id)
    described = await service.describe(cache, settings, image)
    credential = request_credential(request)
    if image.file_format == "missing" or credential is None:
        return described
    state = request.app.state
    url, expires_at = service.grant_tiles(
        state.tile_grants, state.image_files, state.tile_cache, settings, image, user, credential
    )
    return described.model_copy(update={"tile_url": url, "tile_url_expires_at": expires_at})


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
    return ImmutableImage(content, format)


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
    return ImmutableImage(content, format)


@dataclass(slots=True)  # not frozen: made for every tile, in a fifth of a frozen one's time
class GrantedTileAsk:
    image_id: int
    grant: str
    level: int
    col: int
    row: int
    size: int
    format: EncodeFormat


def _integer(value: str, name: str, low: int, high: int) -> int:
    if value.isascii() and value.isdigit() and len(value) <= 10:
        number = int(value)  # once: parsing it again cost every tile 4 × 0.1 µs
        if low <= number <= high:
            return number
    raise Invalid(f"{name} must be an integer from {low} to {high}")


def _image_id(value: str) -> int:
    """As PathId: an id out of the database's range names nothing (404)."""
    if value.isascii() and value.isdigit() and len(value) <= 10:
        number = int(value)
        if 1 <= number <= DB_ID_MAX:
            return number
    raise NotFound(f"no image {value}")


def granted_tile_ask(request: Request) -> GrantedTileAsk:
    """The route's parameters, checked here rather than by FastAPI's per-parameter validation, which costs
    more than answering a cached tile (the parameters are documented in GRANTED_TILE_PARAMETERS)."""
    path = request.path_params
    query = request.query_params if request.scope["query_string"] else None  # parsing costs when empty
    fmt = "jpeg" if query is None else _format(query.get("format", "jpeg"))
    return GrantedTileAsk(
        image_id=_image_id(path["image_id"]),
        grant=path["grant"],
        level=_integer(path["level"], "level", 0, 64),
        col=_integer(path["col"], "col", 0, 2**31 - 1),
        row=_integer(path["row"], "row", 0, 2**31 - 1),
        size=DEFAULT_TILE_SIZE if query is None else _integer(query.get("size", "256"), "size", 64, 2048),
        format=fmt,
    )


DEFAULT_TILE_SIZE = 256  # a viewer's tile URL has no query: nothing to parse


def _format(value: str) -> EncodeFormat:
    if value == "png":
        return "png"
    if value == "jpeg":
        return "jpeg"
    raise Invalid("format must be jpeg or png")


def _parameter(name: str, where: str, schema: dict[str, object], description: str) -> dict[str, object]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "schema": schema,
        "description": description,
    }


GRANTED_TILE_PARAMETERS = [
    _parameter("image_id", "path", {"type": "integer", "minimum": 1}, "the image"),
    _parameter("grant", "path", {"type": "string"}, "the grant of the image's tile_url"),
    *(
        _parameter(name, "path", {"type": "integer", "minimum": 0}, "pyramid level, column, row")
        for name in ("level", "col", "row")
    ),
    _parameter(
        "size", "query", {"type": "integer", "minimum": 64, "maximum": 2048, "default": 256}, "tile side"
    ),
    _parameter(
        "format", "query", {"type": "string", "enum": ["jpeg", "png"], "default": "jpeg"}, "jpeg or png"
    ),
]


async def get_granted_tile(request: Request) -> Response:
    """One tile by the grant in the image's `tile_url` (GET /images/{id}), with the same credential as that
    request; no database work. 401 without a credential, 403 for a grant that is expired, tampered with, of
    another image or another credential, 422 for bad parameters."""
    credential = request_credential(request)
    if credential is None:
        raise NotAuthenticated("log in or send an API token (Authorization: Bearer …)")
    ask = granted_tile_ask(request)
    state = request.app.state
    # at once, with no coroutine, in the usual case: the image's file remembered, the tile cached or stored
    file = service.remembered_granted_file(
        state.tile_grants, state.image_files, ask.image_id, ask.grant, credential
    )
    if file is None:
        file = await service.granted_file(
            state.tile_grants,
            state.image_files,
            state.sessionmaker,
            state.settings,
            ask.image_id,
            ask.grant,
            credential,
        )
    cache, level, col, row, size, fmt = state.tile_cache, ask.level, ask.col, ask.row, ask.size, ask.format
    try:
        content = service.file_tile_at_once(cache, file, level, col, row, size, fmt)
    except WouldBlock:
        content = await service.file_tile_awaited(cache, file, level, col, row, size, fmt)
    if content is None:
        content = await service.file_tile_rendered(cache, file, level, col, row, size, fmt)
    return ImmutableImage(content, ask.format)


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
    return ImmutableImage(content, format)


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


class GrantedTileRoute(APIRoute):
    """The granted tile route's matching and dispatch without what its place spares: it sits on the app's
    own router (no included router's route context to look up) and its parameters are plain strings (no
    conversion), so a match is the path's regex alone, the same scope as APIRoute's (3 µs less a tile)."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        if not all(type(convertor) is StringConvertor for convertor in self.param_convertors.values()):
            raise ValueError("the granted tile route's parameters are plain strings")
        self.allowed = frozenset(self.methods or ())

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or "fastapi" in scope or scope.get("root_path"):
            return super().matches(scope)  # the general case, as FastAPI matches any route
        found = self.path_regex.match(scope["path"])
        if found is None:
            return Match.NONE, {}
        path_params = found.groupdict()
        outer = scope.get("path_params")
        if outer:  # as Starlette merges them (a mount's own parameters); a new dict either way
            path_params = {**outer, **path_params}
        child_scope = {"endpoint": self.endpoint, "path_params": path_params, "route": self}
        return (Match.FULL if scope["method"] in self.allowed else Match.PARTIAL), child_scope

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if "fastapi" in scope or scope["method"] not in self.allowed:
            await super().handle(scope, receive, send)  # the general case, and the 405 answer
            return
        await self.app(scope, receive, send)


def add_granted_tile_route(app: FastAPI, prefix: str) -> None:
    """The granted tile route on the app's own router, before any other is added: a viewer asks it most,
    a request is matched against the routes in order, and an included router would be one more level.

    Documented and matched as any API route, but its endpoint (whose one parameter is the Request) is called
    as Starlette calls one, errors going to the app's handlers alike: FastAPI's per-request wrapper (two exit
    stacks, the dependency solver, the endpoint's error context) cost a tile about 30 µs, more than a cached
    tile's own work."""
    app.router.add_api_route(
        f"{prefix}/images/{{image_id}}/granted-tiles/{{grant}}/{{level}}/{{col}}/{{row}}",
        get_granted_tile,
        methods=["GET"],
        tags=["images"],
        responses=file_responses(*MEDIA.values()),
        openapi_extra={"parameters": GRANTED_TILE_PARAMETERS},
        route_class_override=GrantedTileRoute,
    )
    route = next(
        route
        for route in app.router.routes
        if isinstance(route, APIRoute) and route.endpoint is get_granted_tile
    )
    route.app = request_response(get_granted_tile)
