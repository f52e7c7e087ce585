"""Decide whether an uploaded file is an image Concord can serve, without trusting its name.

Whole slides of scanners (Aperio SVS, Hamamatsu NDPI, Leica SCN) are TIFF-based: OpenSlide tells their
vendor and opens them, and one region of the smallest level is decoded to prove the codec works. Other
TIFFs are checked with tifffile as before.

PNG and JPEG patches are small and are decoded in full once, so a truncated file is caught here.
Large TIFFs are never decoded in full: their structure is checked (every strip/tile lies inside the
file) and one tile is decoded to prove the codec works.

Striped (untiled) TIFFs: a region read decodes whole strips, so every level's chunk (tile or strip)
must decode to at most ``MAX_CHUNK_BYTES``. A 10 000 x 10 000 RGB TIFF with a few rows per strip is
accepted; the same image stored as one strip (300 MB) is rejected with 413.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import openslide
import tifffile
from PIL import Image

ImageFormat = Literal["png", "jpeg", "tiff", "svs", "ndpi", "scn"]
SlideFormat = Literal["svs", "ndpi", "scn"]

UNSUPPORTED = 415
TOO_LARGE = 413
CORRUPT = 422

MAX_CHUNK_BYTES = 16 * 2**20
SUPPORTED_TIFF_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16))
SUPPORTED_PHOTOMETRICS = {
    tifffile.PHOTOMETRIC.MINISBLACK,
    tifffile.PHOTOMETRIC.RGB,
    tifffile.PHOTOMETRIC.YCBCR,
}
EXTENSIONS: dict[ImageFormat, str] = {
    "png": ".png",
    "jpeg": ".jpg",
    "tiff": ".tif",
    "svs": ".svs",
    "ndpi": ".ndpi",
    "scn": ".scn",
}
SLIDE_FORMATS: tuple[SlideFormat, ...] = ("svs", "ndpi", "scn")
SLIDE_VENDORS: dict[str, SlideFormat] = {"aperio": "svs", "hamamatsu": "ndpi", "leica": "scn"}
SLIDE_PROBE_SIDE = 64
PILLOW_FORMATS: dict[ImageFormat, str] = {"png": "PNG", "jpeg": "JPEG"}
MAGIC: tuple[tuple[bytes, ImageFormat], ...] = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
    (b"II+\x00", "tiff"),
    (b"MM\x00+", "tiff"),
)


@dataclass(frozen=True)
class ImageInfo:
    format: ImageFormat
    width: int
    height: int
    levels: int
    extension: str
    microns_per_pixel: float | None = None


class ImageRejected(Exception):
    def __init__(self, reason: str, status: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def sniff_format(path: Path) -> ImageFormat | None:
    with path.open("rb") as file:
        head = file.read(8)
    return next((fmt for magic, fmt in MAGIC if head.startswith(magic)), None)


def inspect_image_file(
    path: Path, *, max_bytes: int, max_pixels: int, max_tiff_pixels: int | None = None
) -> ImageInfo:
    size = path.stat().st_size
    if size > max_bytes:
        raise ImageRejected(f"file has {size} bytes, more than {max_bytes}", TOO_LARGE)
    fmt = sniff_format(path)
    if fmt is None:
        raise ImageRejected("not a PNG, JPEG, TIFF or TIFF-based slide (SVS, NDPI, SCN)", UNSUPPORTED)
    if fmt == "tiff":
        limit = max_tiff_pixels or max_pixels
        return _inspect_as_slide(path, limit) or _inspect_tiff(path, size, limit)
    return _inspect_pillow(path, fmt, max_pixels)


def is_slide_format(fmt: str) -> bool:
    """Formats read through OpenSlide rather than tifffile or Pillow."""
    return fmt in SLIDE_FORMATS


def _inspect_as_slide(path: Path, max_pixels: int) -> ImageInfo | None:
    """The slide's facts when OpenSlide reads the TIFF as a scanner's format; None for other TIFFs.

    OpenSlide tells Hamamatsu files by their ``.ndpi`` name, Aperio and Leica by their content, so the
    file is looked at through a link of that name."""
    with tempfile.TemporaryDirectory(dir=path.parent) as folder:
        named = Path(folder) / "slide.ndpi"
        named.symlink_to(path.resolve())
        vendor = SLIDE_VENDORS.get(openslide.OpenSlide.detect_format(named) or "")
        if vendor is None:
            return None
        named = named.rename(named.with_suffix(EXTENSIONS[vendor]))
        try:
            with openslide.OpenSlide(named) as slide:
                return _inspect_open_slide(slide, vendor, max_pixels)
        except ImageRejected:
            raise
        except openslide.OpenSlideUnsupportedFormatError as error:
            raise ImageRejected(f"OpenSlide cannot read this {vendor.upper()} file", UNSUPPORTED) from error
        except (openslide.OpenSlideError, OSError, ValueError) as error:
            raise ImageRejected(f"corrupt {vendor.upper()} slide: {error}", CORRUPT) from error


def _inspect_open_slide(slide: openslide.OpenSlide, vendor: SlideFormat, max_pixels: int) -> ImageInfo:
    width, height = slide.dimensions
    _check_pixels(width, height, max_pixels)
    smallest = slide.level_count - 1
    small_w, small_h = slide.level_dimensions[smallest]
    probe = (min(SLIDE_PROBE_SIDE, small_w), min(SLIDE_PROBE_SIDE, small_h))
    slide.read_region((0, 0), smallest, probe)
    return ImageInfo(vendor, width, height, slide.level_count, EXTENSIONS[vendor], _microns_per_pixel(slide))


def _microns_per_pixel(slide: openslide.OpenSlide) -> float | None:
    """The slide's level-0 resolution when the scanner recorded one (the mean of x and y)."""
    try:
        values = [
            float(slide.properties[name])
            for name in (openslide.PROPERTY_NAME_MPP_X, openslide.PROPERTY_NAME_MPP_Y)
        ]
    except (KeyError, ValueError):
        return None
    mean = sum(values) / 2
    return mean if math.isfinite(mean) and 0 < mean <= 100 else None


def _inspect_pillow(path: Path, fmt: ImageFormat, max_pixels: int) -> ImageInfo:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path, formats=[PILLOW_FORMATS[fmt]]) as image:
                width, height = image.size
                _check_pixels(width, height, max_pixels)
                image.load()
    except Image.DecompressionBombError as error:
        raise ImageRejected(str(error), TOO_LARGE) from error
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        raise ImageRejected(f"corrupt or truncated {fmt.upper()}: {error}", CORRUPT) from error
    return ImageInfo(fmt, width, height, 1, EXTENSIONS[fmt])


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageRejected(f"{width}x{height} pixels exceed the limit of {max_pixels}", TOO_LARGE)


def _inspect_tiff(path: Path, size: int, max_pixels: int) -> ImageInfo:
    try:
        with tifffile.TiffFile(path) as tiff:
            return _inspect_open_tiff(tiff, size, max_pixels)
    except ImageRejected:
        raise
    except Exception as error:  # tifffile raises many types on malformed structures
        raise ImageRejected(f"corrupt TIFF: {error}", CORRUPT) from error


def _inspect_open_tiff(tiff: tifffile.TiffFile, size: int, max_pixels: int) -> ImageInfo:
    if not tiff.series:
        raise ImageRejected("TIFF holds no image", CORRUPT)
    levels = tiff.series[0].levels
    width, height = _check_tiff_layout(levels[0])
    _check_pixels(width, height, max_pixels)
    for level in levels:
        _check_tiff_layout(level)
        _check_chunk_size(level.keyframe)
    for page in _all_pages(tiff):
        _check_chunks_inside_file(page, size)
    _decode_first_chunk(tiff, levels[0].keyframe)
    return ImageInfo("tiff", width, height, len(levels), EXTENSIONS["tiff"])


def _check_tiff_layout(series: tifffile.TiffPageSeries) -> tuple[int, int]:
    shape = series.shape
    is_gray = len(shape) == 2
    is_colour = len(shape) == 3 and shape[2] in (3, 4)
    if not (is_gray or is_colour):
        raise ImageRejected(f"TIFF layout {series.axes} {shape} is not 2D gray or RGB(A)", UNSUPPORTED)
    if series.dtype not in SUPPORTED_TIFF_DTYPES:
        raise ImageRejected(f"TIFF pixel type {series.dtype} is not uint8 or uint16", UNSUPPORTED)
    if series.keyframe.photometric not in SUPPORTED_PHOTOMETRICS:
        raise ImageRejected(
            f"TIFF photometric {series.keyframe.photometric} is not supported",
            UNSUPPORTED,
        )
    return shape[1], shape[0]


def _check_chunk_size(keyframe: tifffile.TiffPage) -> None:
    itemsize = 1 if keyframe.dtype is None else keyframe.dtype.itemsize
    chunk_bytes = math.prod(keyframe.chunks) * itemsize
    if chunk_bytes > MAX_CHUNK_BYTES:
        raise ImageRejected(
            f"TIFF strips/tiles of {chunk_bytes} bytes exceed {MAX_CHUNK_BYTES}; write it tiled",
            TOO_LARGE,
        )


def _all_pages(
    tiff: tifffile.TiffFile,
) -> Iterator[tifffile.TiffPage | tifffile.TiffFrame]:
    yield from (page for page in tiff.pages if page is not None)
    for level in tiff.series[0].levels[1:]:
        yield from (page for page in level.pages if page is not None)


def _check_chunks_inside_file(page: tifffile.TiffPage | tifffile.TiffFrame, size: int) -> None:
    offsets = np.asarray(page.dataoffsets, dtype=np.int64)
    counts = np.asarray(page.databytecounts, dtype=np.int64)
    if np.any(offsets + counts > size):
        raise ImageRejected("TIFF is truncated: image data lies past the end of the file", CORRUPT)


def _decode_first_chunk(tiff: tifffile.TiffFile, keyframe: tifffile.TiffPage) -> None:
    if keyframe.compression not in tifffile.TIFF.DECOMPRESSORS:
        raise ImageRejected(
            f"TIFF compression {keyframe.compression} is not supported",
            UNSUPPORTED,
        )
    index = next((i for i, count in enumerate(keyframe.databytecounts) if count > 0), None)
    if index is None:
        return
    tiff.filehandle.seek(keyframe.dataoffsets[index])
    data = tiff.filehandle.read(keyframe.databytecounts[index])
    decoded = keyframe.decode(data, index, jpegtables=keyframe.jpegtables, jpegheader=keyframe.jpegheader)[0]
    if decoded is None:
        raise ImageRejected("TIFF tile could not be decoded", CORRUPT)
