"""Lazy region reads, tile encoding and caching for PNG, JPEG, tiled/pyramidal TIFF images and slides.

Every read returns RGB uint8 pixels of one pyramid level; parts outside the image are white.

TIFF levels are read through ``tifffile``'s zarr store, so only the tiles a region touches are
decoded. Below the file's smallest native level the source adds synthetic levels (each half the
previous) down to about ``MIN_LEVEL_SIDE``; they are computed region-wise by area-averaging the
smallest native level, and a read that would need more than ``MAX_SOURCE_PIXELS`` native pixels is
refused with ``RegionError`` (a 20 000 px TIFF without a pyramid cannot be thumbnailed; one with a
pyramid can). PNG and JPEG are decoded once and their pyramid is built by 2x averaging on demand.
Whole slides (a file named ``*.svs``, ``*.ndpi`` or ``*.scn``) are read through OpenSlide, whose levels
are the slide's own pyramid (often 4x apart); OpenSlide decodes only the tiles a region touches.

A source may be given the path of a raw cache of its level 0 (an uncompressed RGB uint8 ``.npy`` file,
see ``app/images/rawcache.py``); level-0 reads then copy from a read-only memory map of it, and every
other level and the thumbnails still come from the file.
"""

from __future__ import annotations

import io
import math
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal, Protocol

import imagecodecs
import numpy as np
import numpy.typing as npt
import openslide
import tifffile
import zarr
from PIL import Image
from tifffile.zarr import ZarrTiffStore

from app import storage
from app.images.stored_jpeg import StoredJpegTiles, StoredTile, WouldBlock
from app.images.validation import EXTENSIONS, MAGIC, SLIDE_FORMATS, sniff_format

Pixels = npt.NDArray[np.uint8]
EncodeFormat = Literal["jpeg", "png"]
LevelSize = tuple[int, int]

WHITE = 255
MIN_LEVEL_SIDE = 256
# The tiles a viewer asks (the granted tile URL's size and quality) whose stored JPEG is cut by a level's
# right edge are cropped and encoded in a background thread once a viewer is granted their image's tiles, and
# kept while their file is open (TileCache.prepare_edge_tiles): on the event loop each was a decode, crop and
# encode (0.3-1 ms) that every request in flight waited for.
EDGE_TILE_SIZE = 256
EDGE_TILE_QUALITY = 85
MAX_REGION_PIXELS = 4096 * 4096
MAX_SOURCE_PIXELS = 64 * 2**20
SOURCE_BAND_PIXELS = 2**20
PNG_COMPRESS_LEVEL = 3

# Pillow's JPEG and PNG plugins imported now, not on the event loop by the first cut edge tile's answer
# (a few ms of imports that every request in flight waited for).
Image.preinit()


class RegionError(ValueError):
    """A read asked for a level, tile or region that does not exist or is too large."""


@dataclass(frozen=True)
class Window:
    """A rectangle in level-0 pixels: an image record that is a region of a larger file."""

    x: int
    y: int
    width: int
    height: int


class PixelSource(Protocol):
    @property
    def width(self) -> int: ...

    @property
    def height(self) -> int: ...

    @property
    def levels(self) -> list[LevelSize]: ...

    def read_region(self, level: int, x: int, y: int, w: int, h: int) -> Pixels: ...


# ---------------------------------------------------------------- pixel helpers


def to_rgb8(array: npt.NDArray[np.generic]) -> Pixels:
    """Gray, RGB or RGBA, uint8 or uint16 -> RGB uint8; alpha is composited over white."""
    pixels = _to_uint8(array)
    if pixels.ndim == 2:
        return np.repeat(pixels[:, :, None], 3, axis=2)
    if pixels.shape[2] == 4 and pixels[:, :, 3].min() < 255:
        return _over_white(pixels)
    return np.ascontiguousarray(pixels[:, :, :3])


def _to_uint8(array: npt.NDArray[np.generic]) -> Pixels:
    if array.dtype == np.uint8:
        return array.astype(np.uint8, copy=False)
    if array.dtype == np.uint16:
        return ((array.astype(np.uint32) + 128) // 257).astype(np.uint8)
    raise RegionError(f"pixel type {array.dtype} is not supported")


def _over_white(rgba: Pixels) -> Pixels:
    alpha = rgba[:, :, 3:4].astype(np.uint32)
    rgb = rgba[:, :, :3].astype(np.uint32)
    return ((rgb * alpha + WHITE * (255 - alpha) + 127) // 255).astype(np.uint8)


def downsample(pixels: Pixels, factor: int) -> Pixels:
    """Area average over factor x factor blocks; partial blocks at the edges average what they hold."""
    if factor == 1:
        return pixels
    height, width = pixels.shape[:2]
    out_h, out_w = -(-height // factor), -(-width // factor)
    padded = np.zeros((out_h * factor, out_w * factor, 3), dtype=np.uint32)
    padded[:height, :width] = pixels
    sums = padded.reshape(out_h, factor, out_w, factor, 3).sum(axis=(1, 3))
    counts = np.outer(_block_counts(height, factor), _block_counts(width, factor))[:, :, None]
    averaged: Pixels = ((sums + counts // 2) // counts).astype(np.uint8)
    return averaged


def _block_counts(length: int, factor: int) -> npt.NDArray[np.uint32]:
    starts = np.arange(0, length, factor)
    return np.minimum(factor, length - starts).astype(np.uint32)


def halving_levels(width: int, height: int, stop_side: int = MIN_LEVEL_SIDE) -> list[LevelSize]:
    levels = [(width, height)]
    while max(levels[-1]) > stop_side:
        last_w, last_h = levels[-1]
        levels.append((-(-last_w // 2), -(-last_h // 2)))
    return levels


def encode(array: Pixels, fmt: EncodeFormat, quality: int = 85) -> bytes:
    """JPEG through imagecodecs' libjpeg-turbo: the same bytes as Pillow's encoder with its defaults (4:2:0,
    standard tables; tested), in about two thirds of its time. PNG through Pillow."""
    if fmt == "jpeg":
        encoded = imagecodecs.jpeg8_encode(_c_ordered(array), level=quality)
        return encoded if isinstance(encoded, bytes) else bytes(encoded)
    buffer = io.BytesIO()
    Image.fromarray(array, "RGB").save(buffer, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def _c_ordered(array: Pixels) -> Pixels:
    """C order with positive strides (imagecodecs refuses a negative one, which NumPy keeps on a dimension
    of length 1 even in an array it calls contiguous)."""
    if array.flags.c_contiguous and min(array.strides) > 0:
        return array
    return array.copy(order="C")


def served_jpeg(stored: StoredTile, quality: int) -> bytes:
    """A stored tile as served: its own bytes (for a tile cut by the bottom edge, with a frame header saying
    the rows kept), or for a tile cut by the right edge its part, encoded (decoded only down to the rows
    kept)."""
    if (as_stored := stored.served_as_stored()) is not None:
        return as_stored
    pixels = to_rgb8(imagecodecs.jpeg8_decode(stored.rows_to_decode()))
    return encode(pixels[: stored.height, : stored.width], "jpeg", quality)


# ---------------------------------------------------------------- region geometry


@dataclass(frozen=True)
class _Rect:
    x: int
    y: int
    w: int
    h: int

    @property
    def empty(self) -> bool:
        return self.w <= 0 or self.h <= 0

    def clip(self, width: int, height: int) -> _Rect:
        x0, y0 = max(self.x, 0), max(self.y, 0)
        x1, y1 = min(self.x + self.w, width), min(self.y + self.h, height)
        return _Rect(x0, y0, x1 - x0, y1 - y0)


def _check_request(levels: list[LevelSize], level: int, w: int, h: int) -> None:
    if not 0 <= level < len(levels):
        raise RegionError(f"level {level} does not exist; there are {len(levels)}")
    if w <= 0 or h <= 0:
        raise RegionError(f"region size {w}x{h} is empty")
    if w * h > MAX_REGION_PIXELS:
        raise RegionError(f"region of {w}x{h} pixels exceeds {MAX_REGION_PIXELS}")


def _white(request: _Rect) -> Pixels:
    return np.full((request.h, request.w, 3), WHITE, dtype=np.uint8)


def _paste_into_white(request: _Rect, inside: _Rect, patch: Pixels) -> Pixels:
    out = _white(request)
    top, left = inside.y - request.y, inside.x - request.x
    out[top : top + inside.h, left : left + inside.w] = patch
    return out


# ---------------------------------------------------------------- backends


class _Backend(Protocol):
    native_levels: list[LevelSize]
    # True when reads may run in several threads at once (the source then reads outside its lock).
    thread_safe: bool

    def read_native(self, level: int, rect: _Rect) -> Pixels: ...

    def stored_jpeg_tile(
        self, level: int, col: int, row: int, size: int, *, nowait: bool = False
    ) -> StoredTile | None: ...

    def resident_bytes(self) -> int: ...

    def close(self) -> None: ...


class _TiffBackend:
    """``file``: a path, or a seekable stream (ranged reads of a bucket's object), closed with the backend."""

    thread_safe = False

    def __init__(self, file: Path | BinaryIO) -> None:
        self._stream = None if isinstance(file, Path) else file
        self._tiff = tifffile.TiffFile(file)
        self._series = self._tiff.series[0]
        self.native_levels = [(level.shape[1], level.shape[0]) for level in self._series.levels]
        self._stores: dict[int, ZarrTiffStore] = {}
        self._arrays: dict[int, zarr.Array[Any]] = {}
        self._stored: StoredJpegTiles | None = None
        if isinstance(file, Path):
            levels = [level.keyframe for level in self._series.levels if len(level.pages) == 1]
            self._stored = StoredJpegTiles(file, levels)

    def stored_jpeg_tile(
        self, level: int, col: int, row: int, size: int, *, nowait: bool = False
    ) -> StoredTile | None:
        if self._stored is None:
            return None
        return self._stored.tile(self.native_levels[level], col, row, size, nowait=nowait)

    def read_native(self, level: int, rect: _Rect) -> Pixels:
        array = self._array(level)
        return to_rgb8(np.asarray(array[rect.y : rect.y + rect.h, rect.x : rect.x + rect.w]))

    def _array(self, level: int) -> zarr.Array[Any]:
        if level not in self._arrays:
            store = self._series.aszarr(level=level)
            opened = zarr.open(store, mode="r")
            if not isinstance(opened, zarr.Array):
                raise RegionError(f"TIFF level {level} is not a single array")
            self._stores[level] = store
            self._arrays[level] = opened
        return self._arrays[level]

    def resident_bytes(self) -> int:
        return 0

    def close(self) -> None:
        for store in self._stores.values():
            store.close()
        if self._stored is not None:
            self._stored.close()
        self._tiff.close()
        if self._stream is not None:
            self._stream.close()


class _OpenSlideBackend:
    """A scanner's whole slide; OpenSlide answers RGBA, transparent where the scanner stored nothing.

    OpenSlide handles are thread-safe, and ctypes lets other threads run while one decodes."""

    thread_safe = True

    def __init__(self, path: Path) -> None:
        self._slide = openslide.OpenSlide(path)
        self.native_levels = [(int(w), int(h)) for w, h in self._slide.level_dimensions]
        self._downsamples = list(self._slide.level_downsamples)
        # Aperio's levels are its TIFF's tiled pages, whole; other vendors' levels may be offset or
        # stitched (Leica's collection, Hamamatsu's stripes), so only Aperio's tiles are served as stored.
        vendor = self._slide.properties.get(openslide.PROPERTY_NAME_VENDOR)
        self._stored = StoredJpegTiles.of_file(path) if vendor == "aperio" else None

    def stored_jpeg_tile(
        self, level: int, col: int, row: int, size: int, *, nowait: bool = False
    ) -> StoredTile | None:
        if self._stored is None:
            return None
        return self._stored.tile(self.native_levels[level], col, row, size, nowait=nowait)

    def read_native(self, level: int, rect: _Rect) -> Pixels:
        factor = self._downsamples[level]
        origin = (round(rect.x * factor), round(rect.y * factor))
        region = self._slide.read_region(origin, level, (rect.w, rect.h))
        return to_rgb8(np.asarray(region))

    def resident_bytes(self) -> int:
        return 0

    def close(self) -> None:
        if self._stored is not None:
            self._stored.close()
        self._slide.close()


SLIDE_SUFFIXES = frozenset(EXTENSIONS[fmt] for fmt in SLIDE_FORMATS)


class _PillowBackend:
    thread_safe = False

    def __init__(self, path: Path) -> None:
        self._path = path
        with Image.open(path) as image:
            width, height = image.size
        self.native_levels = halving_levels(width, height)
        self._pyramid: list[Pixels] = []

    def read_native(self, level: int, rect: _Rect) -> Pixels:
        pixels = self._level(level)
        return pixels[rect.y : rect.y + rect.h, rect.x : rect.x + rect.w]

    def _level(self, level: int) -> Pixels:
        if not self._pyramid:
            self._pyramid.append(_decode_with_pillow(self._path))
        while len(self._pyramid) <= level:
            self._pyramid.append(downsample(self._pyramid[-1], 2))
        return self._pyramid[level]

    def stored_jpeg_tile(
        self, level: int, col: int, row: int, size: int, *, nowait: bool = False
    ) -> StoredTile | None:
        return None

    def resident_bytes(self) -> int:
        return sum(level.nbytes for level in self._pyramid)

    def close(self) -> None:
        self._pyramid.clear()


def _decode_with_pillow(path: Path) -> Pixels:
    with Image.open(path) as image:
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            wide = np.asarray(image).astype(np.uint16)
            return to_rgb8(wide)
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            return to_rgb8(np.asarray(image.convert("RGBA")))
        return np.asarray(image.convert("RGB")).copy()


class _RawLevel0Backend:
    """Level 0 from a memory-mapped raw cache; other levels from the file's own backend."""

    thread_safe = False

    def __init__(self, inner: _Backend, raw: Pixels) -> None:
        self._inner = inner
        self._raw: Pixels | None = raw
        self.native_levels = inner.native_levels

    def read_native(self, level: int, rect: _Rect) -> Pixels:
        if level != 0 or self._raw is None:
            return self._inner.read_native(level, rect)
        return np.array(self._raw[rect.y : rect.y + rect.h, rect.x : rect.x + rect.w])

    def stored_jpeg_tile(
        self, level: int, col: int, row: int, size: int, *, nowait: bool = False
    ) -> StoredTile | None:
        return self._inner.stored_jpeg_tile(level, col, row, size, nowait=nowait)

    def resident_bytes(self) -> int:
        return self._inner.resident_bytes()

    def close(self) -> None:
        self._raw = None
        self._inner.close()


def _with_raw_cache(backend: _Backend, raw_path: Path | None) -> _Backend:
    """Wrap the backend when a raw cache of the file's level-0 size exists; otherwise keep it."""
    if raw_path is None or not raw_path.is_file():
        return backend
    width, height = backend.native_levels[0]
    try:
        raw = np.load(raw_path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return backend
    if raw.dtype != np.uint8 or raw.shape != (height, width, 3):
        return backend
    return _RawLevel0Backend(backend, raw)


def _open_backend(path: Path) -> _Backend:
    if not path.is_file():
        return _open_stored_backend(path)
    fmt = sniff_format(path)
    if fmt == "tiff" and path.suffix.lower() in SLIDE_SUFFIXES:
        return _OpenSlideBackend(path)
    if fmt == "tiff":
        return _TiffBackend(path)
    if fmt in ("png", "jpeg"):
        return _PillowBackend(path)
    raise RegionError(f"{path.name} is not a PNG, JPEG, TIFF image or TIFF-based slide")


def _open_stored_backend(path: Path) -> _Backend:
    """An object of a shared bucket with no copy here: a TIFF is read by ranges (tiles of a large slide
    fetch only their bytes); a scanner's slide (OpenSlide reads files only) and any other file are copied
    here first."""
    if path.suffix.lower() in SLIDE_SUFFIXES:
        return _OpenSlideBackend(storage.local_copy(path))
    stream = storage.readable(path)
    if isinstance(stream, Path):
        return _open_backend(stream)
    try:
        head = stream.read(8)
        if next((fmt for magic, fmt in MAGIC if head.startswith(magic)), None) == "tiff":
            stream.seek(0)
            return _TiffBackend(stream)
    except BaseException:
        stream.close()
        raise
    stream.close()
    return _open_backend(storage.local_copy(path))


# ---------------------------------------------------------------- sources


class ImageSource:
    """One image file; opens on first use, reopens after ``close()``. Safe to share across threads.

    ``raw_path``: the file's raw level-0 cache, used for level-0 reads when it exists and matches.
    """

    def __init__(self, path: Path, raw_path: Path | None = None) -> None:
        self.path = path
        self.raw_path = raw_path
        self._lock = threading.Lock()
        self._no_readers = threading.Condition(self._lock)
        self._readers = 0
        self._closers = 0
        self._backend: _Backend | None = None
        self._levels: list[LevelSize] | None = None
        self._native_count = 0
        self._resident = 0

    @property
    def width(self) -> int:
        return self.levels[0][0]

    @property
    def height(self) -> int:
        return self.levels[0][1]

    @property
    def levels(self) -> list[LevelSize]:
        with self._lock:
            self._opened()
            assert self._levels is not None
            return list(self._levels)

    @property
    def native_level_count(self) -> int:
        """Levels stored in the file (or, for PNG/JPEG, the decoded pyramid); the rest are synthetic."""
        with self._lock:
            self._opened()
            return self._native_count

    def read_region(self, level: int, x: int, y: int, w: int, h: int) -> Pixels:
        request = _Rect(x, y, w, h)
        with self._lock:
            backend = self._opened()
            assert self._levels is not None
            _check_request(self._levels, level, w, h)
            inside = request.clip(*self._levels[level])
            if inside.empty:
                return _white(request)
            if not backend.thread_safe:
                patch = self._read(backend, level, inside)
                self._resident = backend.resident_bytes()
                return _paste_into_white(request, inside, patch)
            self._readers += 1
        try:
            patch = self._read(backend, level, inside)
        finally:
            with self._lock:
                self._reader_done()
        return _paste_into_white(request, inside, patch)

    def stored_jpeg_tile(
        self, level: int, col: int, row: int, size: int, *, nowait: bool = False, if_open: bool = False
    ) -> StoredTile | None:
        """The file's own JPEG of this tile when it stores it as one tile of this size, whole or cut by the
        level's extent (see app/images/stored_jpeg.py), else None. Read outside the lock, counted as a
        reader so that ``close`` waits for it.

        ``nowait``: for an event loop: WouldBlock instead of waiting for the lock (held by a thread that
        may itself wait for the loop's GIL) or the disk, None instead of opening the file.
        ``if_open``: None instead of opening the file (a closed source stays closed)."""
        if not self._lock.acquire(blocking=not nowait):
            raise WouldBlock

        try:
            if (nowait or if_open) and self._backend is None:
                return None
            backend = self._opened()
            if not 0 <= level < self._native_count:
                return None
            self._readers += 1
        finally:
            self._lock.release()
        try:
            return backend.stored_jpeg_tile(level, col, row, size, nowait=nowait)
        finally:
            with self._lock:
                self._reader_done()

    def native_levels_if_open(self) -> list[LevelSize]:
        """The levels the file stores, when it is open; else none (never opens it)."""
        with self._lock:
            if self._backend is None or self._levels is None:
                return []
            return self._levels[: self._native_count]

    def _reader_done(self) -> None:
        """With the lock held: a read outside the lock ended. Only a ``close`` waits for readers, so the
        condition is notified only when one does (notify_all is Python code, a few microseconds of every
        cold tile's answer on the event loop)."""
        self._readers -= 1
        if self._closers and not self._readers:
            self._no_readers.notify_all()

    def _read(self, backend: _Backend, level: int, inside: _Rect) -> Pixels:
        if level < self._native_count:
            return backend.read_native(level, inside)
        return self._synthesize(backend, level, inside)

    def resident_bytes(self) -> int:
        """Decoded pixels held in memory, as of the last read; lock-free so the cache never waits."""
        return self._resident

    def close(self) -> None:
        """Waits for reads running outside the lock, so a backend is never closed under a reader."""
        with self._lock:
            self._closers += 1
            try:
                self._no_readers.wait_for(lambda: self._readers == 0)
            finally:
                self._closers -= 1
            if self._backend is not None:
                self._backend.close()
                self._backend = None
                self._resident = 0

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _opened(self) -> _Backend:
        if self._backend is None:
            self._backend = _with_raw_cache(_open_backend(self.path), self.raw_path)
            native = self._backend.native_levels
            self._native_count = len(native)
            self._levels = native + halving_levels(*native[-1])[1:]
        return self._backend

    def _synthesize(self, backend: _Backend, level: int, inside: _Rect) -> Pixels:
        base = self._native_count - 1
        factor = 2 ** (level - base)
        base_w, base_h = backend.native_levels[base]
        source = _Rect(inside.x * factor, inside.y * factor, inside.w * factor, inside.h * factor)
        source = source.clip(base_w, base_h)
        if source.w * source.h > MAX_SOURCE_PIXELS:
            raise RegionError(
                f"level {level} region needs {source.w * source.h} pixels of level {base}; "
                f"the file has no pyramid deep enough"
            )
        return _downsample_in_bands(backend, base, source, factor)


def _downsample_in_bands(backend: _Backend, base: int, source: _Rect, factor: int) -> Pixels:
    """Read the source rectangle in horizontal bands so memory stays near one band."""
    rows_per_band = factor * max(1, SOURCE_BAND_PIXELS // (source.w * factor))
    bands = []
    for top in range(source.y, source.y + source.h, rows_per_band):
        band_h = min(rows_per_band, source.y + source.h - top)
        band = backend.read_native(base, _Rect(source.x, top, source.w, band_h))
        bands.append(downsample(band, factor))
    return np.concatenate(bands, axis=0)


class RegionView:
    """A rectangle of a source, seen as an image of its own with the source's level factors."""

    def __init__(self, source: PixelSource, window: Window) -> None:
        inside = _Rect(window.x, window.y, window.width, window.height).clip(source.width, source.height)
        if inside != _Rect(window.x, window.y, window.width, window.height) or inside.empty:
            raise RegionError(f"{window} does not lie inside the {source.width}x{source.height} image")
        self._source = source
        self.window = window
        self._rects = [_scaled(window, source.levels[0], size) for size in source.levels]

    @property
    def width(self) -> int:
        return self.window.width

    @property
    def height(self) -> int:
        return self.window.height

    @property
    def levels(self) -> list[LevelSize]:
        return [(rect.w, rect.h) for rect in self._rects]

    def read_region(self, level: int, x: int, y: int, w: int, h: int) -> Pixels:
        _check_request(self.levels, level, w, h)
        frame = self._rects[level]
        request = _Rect(x, y, w, h)
        inside = request.clip(frame.w, frame.h)
        if inside.empty:
            return _white(request)
        patch = self._source.read_region(level, frame.x + inside.x, frame.y + inside.y, inside.w, inside.h)
        return _paste_into_white(request, inside, patch)


def _scaled(window: Window, level0: LevelSize, size: LevelSize) -> _Rect:
    sx, sy = size[0] / level0[0], size[1] / level0[1]
    left, top = math.floor(window.x * sx), math.floor(window.y * sy)
    right = math.ceil((window.x + window.width) * sx)
    bottom = math.ceil((window.y + window.height) * sy)
    return _Rect(left, top, max(1, right - left), max(1, bottom - top))


def tile_rect(levels: list[LevelSize], level: int, col: int, row: int, size: int) -> _Rect:
    """Tile (col, row) of a level, cut to the level's extent (edge tiles are smaller)."""
    if not 0 <= level < len(levels):
        raise RegionError(f"level {level} does not exist; there are {len(levels)}")
    width, height = levels[level]
    rect = _Rect(col * size, row * size, size, size)
    if size <= 0 or col < 0 or row < 0 or rect.x >= width or rect.y >= height:
        raise RegionError(f"tile ({col}, {row}) of size {size} is outside level {level}")
    return rect.clip(width, height)


def read_thumbnail(source: PixelSource, max_side: int) -> Pixels:
    """Whole image with its longer side at most max_side, from the smallest level that suffices."""
    if max_side <= 0:
        raise RegionError(f"thumbnail side {max_side} must be positive")
    levels = source.levels
    level = max((i for i, size in enumerate(levels) if max(size) >= max_side), default=0)
    width, height = levels[level]
    pixels = source.read_region(level, 0, 0, width, height)
    scale = min(1.0, max_side / max(source.width, source.height))
    target = (max(1, round(source.width * scale)), max(1, round(source.height * scale)))
    if target == (width, height):
        return pixels
    resized = Image.fromarray(pixels, "RGB").resize(target, Image.Resampling.LANCZOS)
    return np.asarray(resized).copy()


# ---------------------------------------------------------------- cache


class _ByteLru:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()
        self._total = 0

    def get(self, key: Hashable) -> bytes | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: Hashable, value: bytes) -> None:
        if len(value) > self.max_bytes or key in self._items:
            return
        self._items[key] = value
        self._total += len(value)
        while self._total > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self._total -= len(evicted)

    def drop(self, matches: object) -> None:
        for key in [key for key in self._items if isinstance(key, tuple) and key[0] == matches]:
            self._total -= len(self._items.pop(key))

    @property
    def total_bytes(self) -> int:
        return self._total


@dataclass(slots=True)
class _EdgeTiles:
    """An open source's stored tiles that need a decode to be served (cut by a level's right edge), as
    served at EDGE_TILE_SIZE and EDGE_TILE_QUALITY, by (level, col, row)."""

    tiles: dict[tuple[int, int, int], bytes] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)
    dropped: bool = False


def _edge_tiles(levels: list[LevelSize], size: int) -> Iterator[tuple[int, int, int]]:
    """Each level's last column and last row of tiles when cut by its extent, the smallest level first (a
    viewer opens a slide zoomed out)."""
    for level in reversed(range(len(levels))):
        width, height = levels[level]
        cols, rows = -(-width // size), -(-height // size)
        if width % size:
            yield from ((level, cols - 1, row) for row in range(rows))
        if height % size:
            yield from ((level, col, rows - 1) for col in range(cols - 1 if width % size else cols))


class TileCache:
    """LRU of open sources (by count and decoded bytes) and of encoded tiles (by bytes), and each open
    source's edge tiles that need a decode, prepared in a background thread (by bytes, all sources
    together: ``max_edge_bytes``; about 1.6 MB for a 50 000 px slide's 262).

    Thread-safe: the cache lock guards only the LRU bookkeeping; decoding and encoding run outside
    it, serialised per source by the source's own lock. Files are assumed immutable; call
    ``forget(path)`` after replacing one.
    """

    def __init__(
        self,
        *,
        max_open_sources: int = 32,
        max_decoded_bytes: int = 512 * 2**20,
        max_encoded_bytes: int = 64 * 2**20,
        max_edge_bytes: int = 32 * 2**20,
    ) -> None:
        self.max_open_sources = max_open_sources
        self.max_decoded_bytes = max_decoded_bytes
        self.max_edge_bytes = max_edge_bytes
        self._lock = threading.Lock()
        self._sources: OrderedDict[Path, ImageSource] = OrderedDict()
        self._encoded = _ByteLru(max_encoded_bytes)
        self._edges: dict[Path, _EdgeTiles] = {}
        self._edge_bytes = 0
        self._preparer: ThreadPoolExecutor | None = None
        self._hits = 0
        self._misses = 0

    def source(self, path: Path) -> ImageSource:
        with self._lock:
            source = self._sources.get(path)
            if source is None:
                source = ImageSource(path)
                self._sources[path] = source
            self._sources.move_to_end(path)
            evicted = self._evict_sources(keep=path)
        _close_all(evicted)
        return source

    def view(self, path: Path, window: Window | None = None) -> PixelSource:
        source = self.source(path)
        return source if window is None else RegionView(source, window)

    def region(
        self,
        path: Path,
        level: int,
        x: int,
        y: int,
        w: int,
        h: int,
        fmt: EncodeFormat = "jpeg",
        quality: int = 85,
        *,
        window: Window | None = None,
    ) -> bytes:
        key = _key(path, window, "region", level, x, y, w, h, fmt, quality)
        return self._cached(
            key,
            path,
            lambda view: encode(view.read_region(level, x, y, w, h), fmt, quality),
            window,
        )

    def cached_tile(
        self,
        path: Path,
        level: int,
        col: int,
        row: int,
        size: int = 256,
        fmt: EncodeFormat = "jpeg",
        quality: int = 85,
        *,
        window: Window | None = None,
    ) -> bytes | None:
        """The tile's encoded bytes when the cache holds them, else None; never reads pixels, so a caller
        on the event loop may ask first and go to a thread only on a miss."""
        with self._lock:
            hit = self._encoded.get(_tile_key(path, window, level, col, row, size, fmt, quality))
            if hit is not None:
                self._hits += 1
        return hit

    def stored_tile_nowait(
        self,
        path: Path,
        level: int,
        col: int,
        row: int,
        size: int = 256,
        fmt: EncodeFormat = "jpeg",
        quality: int = 85,
    ) -> bytes | None:
        """A missed tile that the open file stores as one tile and the page cache holds, read without
        blocking (so an event loop may ask before going to a thread); kept in the cache. A tile that needs
        a decode (cut by the right edge) is never decoded here: its prepared bytes (prepare_edge_tiles,
        started here if need be), else None. WouldBlock when its bytes are not in the page cache yet
        (their read-ahead asked) or a thread holds the source: ask again shortly; else None."""
        if fmt != "jpeg":
            return None
        with self._lock:
            source = self._sources.get(path)
        if source is None:
            return None
        stored = source.stored_jpeg_tile(level, col, row, size, nowait=True)
        if stored is None:
            return None
        data = stored.served_as_stored()
        if data is None and (data := self._prepared_edge_tile(path, level, col, row, size, quality)) is None:
            return None
        with self._lock:
            self._misses += 1
            self._encoded.put(_tile_key(path, None, level, col, row, size, fmt, quality), data)
        return data

    def _prepared_edge_tile(
        self, path: Path, level: int, col: int, row: int, size: int, quality: int
    ) -> bytes | None:
        if size != EDGE_TILE_SIZE or quality != EDGE_TILE_QUALITY:
            return None
        with self._lock:
            edges = self._edges.get(path)
            if edges is not None:
                return edges.tiles.get((level, col, row))
        self.prepare_edge_tiles(path)
        return None

    def prepare_edge_tiles(self, path: Path) -> None:
        """Start cropping and encoding the open file's stored tiles that need a decode to be served (a
        level's right-edge column) in a background thread, once while it stays open; they are kept until
        it closes, within ``max_edge_bytes`` of all sources."""
        with self._lock:
            if path in self._edges or path not in self._sources:
                return
            edges = self._edges[path] = _EdgeTiles()
            if self._preparer is None:
                self._preparer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="edge-tiles")
            self._preparer.submit(self._prepare_edge_tiles, path, edges)

    def edge_tiles_prepared(self, path: Path, timeout: float | None = None) -> bool:
        """Whether the file's edge tiles are prepared (waiting up to ``timeout`` s for a preparation begun)."""
        with self._lock:
            edges = self._edges.get(path)
        return edges is not None and edges.done.wait(timeout)

    def _prepare_edge_tiles(self, path: Path, edges: _EdgeTiles) -> None:
        try:
            with self._lock:
                source = self._sources.get(path)
            if source is None:
                return
            for level, col, row in _edge_tiles(source.native_levels_if_open(), EDGE_TILE_SIZE):
                if edges.dropped:
                    return
                stored = source.stored_jpeg_tile(level, col, row, EDGE_TILE_SIZE, if_open=True)
                if stored is None or stored.served_as_stored() is not None:
                    continue  # served as stored
                data = served_jpeg(stored, EDGE_TILE_QUALITY)
                with self._lock:
                    if edges.dropped or self._edge_bytes + len(data) > self.max_edge_bytes:
                        return
                    edges.tiles[(level, col, row)] = data
                    self._edge_bytes += len(data)
        finally:
            edges.done.set()

    def _drop_edge_tiles(self, path: Path) -> None:
        """With the lock held: a source leaves the cache, and its prepared edge tiles with it."""
        edges = self._edges.pop(path, None)
        if edges is not None:
            edges.dropped = True
            self._edge_bytes -= sum(len(data) for data in edges.tiles.values())

    def tile(
        self,
        path: Path,
        level: int,
        col: int,
        row: int,
        size: int = 256,
        fmt: EncodeFormat = "jpeg",
        quality: int = 85,
        *,
        window: Window | None = None,
    ) -> bytes:
        def render(view: PixelSource) -> bytes:
            rect = tile_rect(view.levels, level, col, row, size)
            if fmt == "jpeg" and isinstance(view, ImageSource):
                stored = view.stored_jpeg_tile(level, col, row, size)
                if stored is not None:
                    return served_jpeg(stored, quality)
            return encode(view.read_region(level, rect.x, rect.y, rect.w, rect.h), fmt, quality)

        return self._cached(
            _tile_key(path, window, level, col, row, size, fmt, quality),
            path,
            render,
            window,
        )

    def thumbnail(
        self,
        path: Path,
        max_side: int,
        fmt: EncodeFormat = "jpeg",
        quality: int = 85,
        *,
        window: Window | None = None,
    ) -> bytes:
        key = _key(path, window, "thumbnail", max_side, fmt, quality)
        return self._cached(
            key,
            path,
            lambda view: encode(read_thumbnail(view, max_side), fmt, quality),
            window,
        )

    def forget(self, path: Path) -> None:
        with self._lock:
            source = self._sources.pop(path, None)
            self._encoded.drop(str(path))
            self._drop_edge_tiles(path)
        if source is not None:
            source.close()

    def close(self) -> None:
        with self._lock:
            sources = list(self._sources.values())
            self._sources.clear()
            self._encoded = _ByteLru(self._encoded.max_bytes)
            for path in list(self._edges):
                self._drop_edge_tiles(path)
            preparer, self._preparer = self._preparer, None
        if preparer is not None:
            preparer.shutdown(wait=True, cancel_futures=True)
        _close_all(sources)

    def __enter__(self) -> TileCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def open_paths(self) -> list[Path]:
        with self._lock:
            return list(self._sources)

    @property
    def lookups(self) -> tuple[int, int]:
        """Encoded-cache hits and misses since the cache was made (for the hit rate in /metrics)."""
        with self._lock:
            return self._hits, self._misses

    @property
    def encoded_bytes(self) -> int:
        with self._lock:
            return self._encoded.total_bytes

    @property
    def edge_bytes(self) -> int:
        """The open sources' prepared edge tiles, in bytes."""
        with self._lock:
            return self._edge_bytes

    def _cached(
        self,
        key: tuple[Hashable, ...],
        path: Path,
        render: _Render,
        window: Window | None,
    ) -> bytes:
        with self._lock:
            hit = self._encoded.get(key)
            if hit is None:
                self._misses += 1
            else:
                self._hits += 1
        if hit is not None:
            return hit
        source = self.source(path)
        data = render(source if window is None else RegionView(source, window))
        with self._lock:
            self._encoded.put(key, data)
            stale = self._sources.get(path) is not source
            evicted = self._evict_sources(keep=path)
        _close_all([source] if stale else [])
        _close_all(evicted)
        return data

    def _evict_sources(self, keep: Path) -> list[ImageSource]:
        """Pop least recently used sources over the limits; the caller closes them unlocked."""
        evicted: list[ImageSource] = []
        while len(self._sources) > self.max_open_sources or (
            len(self._sources) > 1 and self._decoded_bytes() > self.max_decoded_bytes
        ):
            oldest = next(iter(self._sources))
            if oldest == keep:
                self._sources.move_to_end(keep)
                oldest = next(iter(self._sources))
                if oldest == keep:
                    break
            evicted.append(self._sources.pop(oldest))
            self._drop_edge_tiles(oldest)
        return evicted

    def _decoded_bytes(self) -> int:
        return sum(source.resident_bytes() for source in self._sources.values())


def _tile_key(
    path: Path, window: Window | None, level: int, col: int, row: int, size: int, fmt: str, quality: int
) -> tuple[Hashable, ...]:
    return _key(path, window, "tile", level, col, row, size, fmt, quality)


def _key(path: Path, window: Window | None, *rest: int | str) -> tuple[Hashable, ...]:
    """An encoded-cache key of strings and ints only, flat: the garbage collector stops tracking such a
    tuple, whereas keys holding a Path piled up in its oldest generation, one per cached tile, and made its
    full collections (milliseconds, every request in flight waiting) come more often and last longer."""
    frame = () if window is None else (window.x, window.y, window.width, window.height)
    return (str(path), *frame, *rest)


class _Render(Protocol):
    def __call__(self, view: PixelSource, /) -> bytes: ...


def _close_all(sources: list[ImageSource]) -> None:
    for source in sources:
        source.close()
