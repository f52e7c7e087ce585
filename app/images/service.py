"""Image rules: validated uploads stored once, lazy tiles of the stored files, ground truth."""

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal, TypeVar

from anyio import sleep, to_thread
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.errors import AppError, Conflict, Forbidden, Invalid, NotFound
from app.images import rawcache, repository, storage, tile_grants
from app.images.placement import place_named
from app.images.schemas import GroundTruthIn, ImageOut
from app.images.stored_jpeg import WouldBlock
from app.images.tile_grants import TileGrants
from app.images.tiles import RegionError, TileCache, Window
from app.images.validation import ImageInfo, ImageRejected, is_slide_format
from app.models import GroundTruthObject, Image, ImagePurpose, Label, Task, User

EncodeFormat = Literal["jpeg", "png"]
T = TypeVar("T")
# Sleeps between page-cache tries of a stored tile whose read-ahead was asked (about 23 ms in all).
PAGE_CACHE_WAITS_S = (0.0002, 0.0005, 0.001, 0.001, 0.002, 0.002, 0.004, 0.004, 0.008)
GRANTED_TILE_URL = "/api/v1/images/{image_id}/granted-tiles/{grant}/{{level}}/{{col}}/{{row}}"


def make_tile_cache(settings: Settings) -> TileCache:
    return TileCache(max_open_sources=settings.open_file_cache, max_encoded_bytes=settings.tile_cache_bytes)


@dataclass(frozen=True)
class NewImage:
    """One file to add to a task: a readable stream, its name, and optionally a region of it."""

    name: str
    stream: BinaryIO
    window: Window | None = None
    microns_per_pixel: float | None = None
    purpose: ImagePurpose = ImagePurpose.study


def _stage_all(settings: Settings, items: Sequence[NewImage]) -> list[storage.StagedFile]:
    """Every file staged and checked; when any is refused, none is kept and the answer names each refused
    file with its reason (all or nothing: an upload never adds part of a batch)."""
    staged: list[storage.StagedFile] = []
    refused: list[tuple[str, ImageRejected]] = []
    try:
        for item in items:
            try:
                staged.append(storage.stage_stream(settings, item.stream))
            except ImageRejected as rejected:
                refused.append((item.name, rejected))
    except BaseException:
        storage.discard(staged)
        raise
    if refused:
        storage.discard(staged)
        raise AppError(_refusal_message(refused, len(items)), status_code=refused[0][1].status)
    return staged


def _refusal_message(refused: list[tuple[str, ImageRejected]], total: int) -> str:
    reasons = "; ".join(f"{name}: {rejected.reason}" for name, rejected in refused)
    if total == 1:
        return reasons
    fine = total - len(refused)
    if not fine:
        return f"nothing was added: all {total} files refused ({reasons})"
    return (
        f"nothing was added: {len(refused)} of {total} files refused ({reasons}); "
        f"upload the other {fine} again without {'it' if len(refused) == 1 else 'them'}"
    )


async def add_images(
    session: AsyncSession, settings: Settings, task: Task, items: Sequence[NewImage]
) -> list[Image]:
    """All or nothing: every file is validated before any row, stored file or raw cache is created."""
    _check_names(items, await repository.image_names(session, task.id))
    staged = await to_thread.run_sync(_stage_all, settings, items)
    created_files: list[Path] = []
    try:
        for item, file in zip(items, staged, strict=True):
            _check_window(item, file.info.width, file.info.height)
        position = await repository.next_image_position(session, task.id)
        await to_thread.run_sync(_store_all, settings, items, staged, created_files)
        images = [
            _image_row(task, item, file, position + offset)
            for offset, (item, file) in enumerate(zip(items, staged, strict=True))
        ]
        session.add_all(images)
        await session.flush()
        return images
    except BaseException:
        storage.discard(staged)
        for path in created_files:
            storage.remove_stored(settings, path)
        raise


def _store_all(
    settings: Settings, items: Sequence[NewImage], staged: Sequence[storage.StagedFile], created: list[Path]
) -> None:
    """Move each staged file into place and write its raw cache; ``created`` gets every new file."""
    for item, file in zip(items, staged, strict=True):
        path, new_file = storage.commit_staged(settings, file)
        if new_file:
            created.append(path)
        try:
            cache = rawcache.write_raw_cache(settings, file.sha256, path, file.info.width, file.info.height)
        except (RegionError, ValueError, RuntimeError) as error:
            raise AppError(f"{item.name}: its pixels cannot be read ({error})", status_code=422) from error
        if cache is not None:
            created.append(cache)


def _check_names(items: Sequence[NewImage], existing: set[str]) -> None:
    names = [item.name for item in items]
    if not names:
        raise Invalid("no files were sent")
    if len(set(names)) != len(names):
        raise Invalid("two uploaded files have the same name")
    taken = sorted(set(names) & existing)
    if taken:
        raise Conflict(f"the task already has images named {', '.join(taken)}")
    for name in names:
        if not name or len(name) > 300 or "/" in name or "\\" in name:
            raise Invalid(f"bad image name {name!r}")


def _check_window(item: NewImage, width: int, height: int) -> None:
    window = item.window
    if window is None:
        return
    if window.x < 0 or window.y < 0 or window.width < 1 or window.height < 1:
        raise Invalid(f"{item.name}: region must have a non-negative offset and a positive size")
    if window.x + window.width > width or window.y + window.height > height:
        raise Invalid(f"{item.name}: region lies outside the {width}×{height} file")


def _image_row(task: Task, item: NewImage, file: storage.StagedFile, position: int) -> Image:
    window = item.window or Window(0, 0, file.info.width, file.info.height)
    return Image(
        task_id=task.id,
        name=item.name,
        sha256=file.sha256,
        file_format=file.info.format,
        file_width=file.info.width,
        file_height=file.info.height,
        offset_x=window.x,
        offset_y=window.y,
        width=window.width,
        height=window.height,
        microns_per_pixel=_resolution(item, file.info),
        position=position,
        purpose=item.purpose,
    )


def _resolution(item: NewImage, info: ImageInfo) -> float | None:
    """The resolution given with the upload, else the one the scanner recorded in a slide."""
    return item.microns_per_pixel if item.microns_per_pixel is not None else info.microns_per_pixel


def file_of(settings: Settings, image: Image) -> tuple[Path, Window | None]:
    if image.file_format == "missing":
        raise NotFound(f"image {image.name!r} was imported without its pixels")
    extension = rawcache.STORED_EXTENSIONS[image.file_format]
    if is_slide_format(image.file_format):
        path = storage.local_path(settings, image.sha256, extension)
    else:
        path = storage.stored_path(settings, image.sha256, extension)
    whole = image.offset_x == 0 and image.offset_y == 0
    whole = whole and (image.width, image.height) == (image.file_width, image.file_height)
    window = None if whole else Window(image.offset_x, image.offset_y, image.width, image.height)
    return path, window


async def _pixels(work: Callable[[], T]) -> T:
    """Run a blocking read in a thread; bad requests answer 422, a missing file 404."""
    try:
        return await to_thread.run_sync(work)
    except RegionError as error:
        raise Invalid(str(error)) from error
    except FileNotFoundError as error:
        raise NotFound("the pixels of this image are not stored here") from error


@dataclass(frozen=True)
class ImageFile:
    """Where an image's pixels are, and what a tile grant of it is bound to."""

    path: Path
    window: Window | None
    identity: str


def image_file(settings: Settings, image: Image) -> ImageFile:
    path, window = file_of(settings, image)
    box = (image.offset_x, image.offset_y, image.width, image.height)
    return ImageFile(path, window, tile_grants.file_identity(image.sha256, box))


class ImageFiles:
    """Image id -> ImageFile, in this process: filled when a descriptor is asked, read by granted tiles.
    A row's file and window never change; a deleted image's id may come back with another file, which the
    grant's signature (over the file identity) then refuses."""

    def __init__(self, max_items: int = 4096) -> None:
        self._items: OrderedDict[int, ImageFile] = OrderedDict()
        self._max_items = max_items

    def remember(self, image_id: int, file: ImageFile) -> None:
        self._items[image_id] = file
        self._items.move_to_end(image_id)
        while len(self._items) > self._max_items:
            self._items.popitem(last=False)

    def get(self, image_id: int) -> ImageFile | None:
        return self._items.get(image_id)


def grant_tiles(
    grants: TileGrants,
    files: ImageFiles,
    cache: TileCache,
    settings: Settings,
    image: Image,
    user: User,
    credential: str,
) -> tuple[str, int]:
    """The image's granted tile URL template ({level}, {col}, {row} left to fill) and its expiry (Unix s);
    the caller has authorised the user for the image. A viewer asks its tiles next: the edge tiles of its
    file that need a decode are prepared meanwhile when the file is open (else at its first such tile)."""
    file = image_file(settings, image)
    files.remember(image.id, file)
    if file.window is None:
        cache.prepare_edge_tiles(file.path)
    grant = grants.issue(image.id, user.id, credential, file.identity)
    return GRANTED_TILE_URL.format(image_id=image.id, grant=grant.token), grant.expires_at


def remembered_granted_file(
    grants: TileGrants, files: ImageFiles, image_id: int, grant: str, credential: str
) -> ImageFile | None:
    """granted_file at once, with no coroutine, when this process remembers the image's file (nearly always);
    None when it does not (granted_file then reads the row). Forbidden as granted_file."""
    file = files.get(image_id)
    try:
        if file is None:
            tile_grants.unexpired(grant)  # a malformed or expired grant is refused before any look-up
        else:
            grants.check(grant, image_id, credential, file.identity)
    except tile_grants.GrantRefused as refused:
        raise Forbidden(str(refused)) from refused
    return file


async def granted_file(
    grants: TileGrants,
    files: ImageFiles,
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    image_id: int,
    grant: str,
    credential: str,
) -> ImageFile:
    """The image's file when the grant is valid for it and the credential; Forbidden otherwise (an unknown
    image too: ids are not told apart from refusals). Reads the image row only when this process has not
    seen it yet (another server process issued the grant, or this one restarted); writes nothing."""
    known = remembered_granted_file(grants, files, image_id, grant, credential)
    if known is not None:
        return known
    try:
        tile_grants.unexpired(grant)
        file = await _read_image_file(sessionmaker, settings, image_id)
        if file is None:
            raise tile_grants.GrantRefused("no such image")
        files.remember(image_id, file)
        grants.check(grant, image_id, credential, file.identity)
    except tile_grants.GrantRefused as refused:
        raise Forbidden(str(refused)) from refused
    return file


async def _read_image_file(
    sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, image_id: int
) -> ImageFile | None:
    async with sessionmaker() as session:
        image = await repository.image_by_id(session, image_id)
        if image is None or image.file_format == "missing":
            return None
        return image_file(settings, image)


def file_tile_at_once(
    cache: TileCache, file: ImageFile, level: int, col: int, row: int, size: int, fmt: EncodeFormat
) -> bytes | None:
    """The tile with no coroutine when the cache holds it or the page cache its stored JPEG (nearly always);
    None when it must be rendered (file_tile_rendered); WouldBlock when its stored bytes are on their way
    (file_tile_awaited)."""
    cached = cache.cached_tile(file.path, level, col, row, size, fmt, window=file.window)
    if cached is None and file.window is None:
        cached = cache.stored_tile_nowait(file.path, level, col, row, size, fmt)
    return cached


async def file_tile(
    cache: TileCache, file: ImageFile, level: int, col: int, row: int, size: int, fmt: EncodeFormat
) -> bytes:
    try:  # at once when the page cache holds it (nearly always): no coroutine, no retry loop
        cached = file_tile_at_once(cache, file, level, col, row, size, fmt)
    except WouldBlock:
        return await file_tile_awaited(cache, file, level, col, row, size, fmt)
    if cached is not None:
        return cached
    return await file_tile_rendered(cache, file, level, col, row, size, fmt)


async def file_tile_awaited(
    cache: TileCache, file: ImageFile, level: int, col: int, row: int, size: int, fmt: EncodeFormat
) -> bytes:
    """After file_tile_at_once's WouldBlock: read on the loop when the page cache gets it, else rendered."""
    cached = await _stored_tile_on_loop(cache, file.path, level, col, row, size, fmt)
    if cached is not None:
        return cached
    return await file_tile_rendered(cache, file, level, col, row, size, fmt)


async def file_tile_rendered(
    cache: TileCache, file: ImageFile, level: int, col: int, row: int, size: int, fmt: EncodeFormat
) -> bytes:
    return await _pixels(lambda: cache.tile(file.path, level, col, row, size, fmt, window=file.window))


async def _stored_tile_on_loop(
    cache: TileCache, path: Path, level: int, col: int, row: int, size: int, fmt: EncodeFormat
) -> bytes | None:
    """After a first try refused (WouldBlock): the file's stored tile read on the event loop when the page
    cache gets it (read-ahead asked) and no thread holds the source, within PAGE_CACHE_WAITS_S; else None
    (a thread reads it). A thread that reads for a busy loop waits for the GIL at each step (5 ms switch
    interval): 15-27 ms for bytes the disk gave in under 2 ms, and while it held the source every other
    missed tile went to a thread too."""
    for wait in PAGE_CACHE_WAITS_S:
        await sleep(wait)
        try:
            return cache.stored_tile_nowait(path, level, col, row, size, fmt)
        except WouldBlock:
            pass
    return None


async def visible_image(session: AsyncSession, user: User, image_id: int) -> Image:
    """The image if the user may see it (else 404), in one query: the tile route's only database work
    after the credential's."""
    image = await repository.visible_image(session, user, image_id)
    if image is None:
        raise NotFound(f"no image {image_id}")
    return image


async def describe(cache: TileCache, settings: Settings, image: Image) -> ImageOut:
    levels: list[tuple[int, int]] = []
    if image.file_format != "missing":  # imported without pixels: described, no levels
        path, window = file_of(settings, image)
        levels = [(int(w), int(h)) for w, h in (await _pixels(lambda: cache.view(path, window))).levels]
    return ImageOut(
        id=image.id,
        task_id=image.task_id,
        name=image.name,
        width=image.width,
        height=image.height,
        microns_per_pixel=image.microns_per_pixel,
        file_format=image.file_format,
        position=image.position,
        purpose=ImagePurpose(image.purpose),
        levels=levels,
    )


async def region(
    cache: TileCache,
    settings: Settings,
    image: Image,
    level: int,
    box: tuple[int, int, int, int],
    fmt: EncodeFormat,
) -> bytes:
    path, window = file_of(settings, image)
    x, y, w, h = box
    return await _pixels(lambda: cache.region(path, level, x, y, w, h, fmt, window=window))


async def tile(
    cache: TileCache,
    settings: Settings,
    image: Image,
    level: int,
    col: int,
    row: int,
    size: int,
    fmt: EncodeFormat,
) -> bytes:
    return await file_tile(cache, image_file(settings, image), level, col, row, size, fmt)


async def thumbnail(
    cache: TileCache, settings: Settings, image: Image, max_side: int, fmt: EncodeFormat
) -> bytes:
    path, window = file_of(settings, image)
    return await _pixels(lambda: cache.thumbnail(path, max_side, fmt, window=window))


async def upload_ground_truth(
    session: AsyncSession, task: Task, labels: dict[str, Label], objects: list[GroundTruthIn], replace: bool
) -> int:
    """All or nothing: unknown images or labels and boxes outside the image answer 422."""
    images = {image.name: image for image in await repository.images_of_task(session, task.id, None)}
    rows = []
    for index, item in enumerate(objects):
        box = (item.x1, item.y1, item.x2, item.y2)
        image, label = place_named(f"object {index}", item.image, item.label, box, images, labels)
        rows.append(
            GroundTruthObject(
                image_id=image.id,
                label_id=label.id,
                x1=item.x1,
                y1=item.y1,
                x2=item.x2,
                y2=item.y2,
                difficulty=item.difficulty,
                position=index,
            )
        )
    if replace:
        await repository.delete_ground_truth(session, task.id)
    session.add_all(rows)
    await session.flush()
    return len(rows)
