"""Small whole slides in scanner formats, written with tifffile, for tests and bench/tiles.py.

``write_svs`` writes what an Aperio scanner writes: a tiled level 0 whose ImageDescription starts with
"Aperio Image Library", a stripped thumbnail as the second page, then the lower levels (4x apart by
default, as Aperio's are), all tiled. OpenSlide reads it as "aperio", tifffile as an SVS series.

``write_scn`` writes a Leica SCN: a BigTIFF whose first ImageDescription is Leica's XML, one collection
twice the image's size (in nanometres) holding one brightfield image at its centre, tiled levels; OpenSlide
shows the whole collection, transparent (white in Concord) around the image, as it does with real scans.

``write_ndpi`` writes the smallest file OpenSlide reads as Hamamatsu NDPI: each level one JPEG strip
with the NDPI tags (format flag 65420, source lens 65421), resolution in pixels per centimetre; OpenSlide
adds levels of its own by decoding the JPEG at 1/2, 1/4 and 1/8 scale.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import tifffile
from PIL import Image

Pixels = npt.NDArray[np.uint8]
TILE = 256


def aperio_description(width: int, height: int, mpp: float, level_size: tuple[int, int] | None = None) -> str:
    head = f"Aperio Image Library v12.0.15 \r\n{width}x{height} [0,0 {width}x{height}] ({TILE}x{TILE}) JPEG/RGB Q=80"
    if level_size is not None:
        head = f"Aperio Image Library v12.0.15 \r\n{width}x{height} -> {level_size[0]}x{level_size[1]} - "
    return f"{head}|AppMag = 40|MPP = {mpp:.4f}|ScanScope ID = CONCORD-TEST|Filename = phantom"


def shrink(pixels: Pixels, factor: int) -> Pixels:
    """Area-average by an integer factor (what a scanner's lower levels hold)."""
    height, width = pixels.shape[:2]
    size = (max(1, -(-width // factor)), max(1, -(-height // factor)))
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BOX)).copy()


def write_svs(
    path: Path,
    pixels: Pixels,
    *,
    mpp: float = 0.25,
    factors: Sequence[int] = (4, 16),
    compression: str = "jpeg",
) -> Path:
    """An SVS-style pyramid of ``pixels`` (RGB uint8): level 0, thumbnail, then one level per factor."""
    height, width = pixels.shape[:2]
    with tifffile.TiffWriter(path, bigtiff=False) as tiff:
        tiff.write(
            pixels,
            tile=(TILE, TILE),
            photometric="rgb",
            compression=compression,
            description=aperio_description(width, height, mpp),
            metadata=None,
        )
        thumbnail = shrink(pixels, max(1, max(width, height) // 256))
        tiff.write(thumbnail, photometric="rgb", compression=compression, metadata=None, description="")
        for factor in factors:
            level = shrink(pixels, factor)
            size = (level.shape[1], level.shape[0])
            tiff.write(
                level,
                tile=(TILE, TILE),
                photometric="rgb",
                compression=compression,
                description=aperio_description(width, height, mpp, size),
                metadata=None,
            )
    return path


LEICA_NAMESPACE = "http://www.leica-microsystems.com/scn/2010/10/01"


def leica_description(width: int, height: int, levels: Sequence[tuple[int, int]], nm_per_px: int) -> str:
    view_w, view_h = width * nm_per_px, height * nm_per_px
    dimensions = "".join(
        f'<dimension sizeX="{w}" sizeY="{h}" r="{index}" ifd="{index}"/>'
        for index, (w, h) in enumerate(levels)
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><scn xmlns="{LEICA_NAMESPACE}">'
        f'<collection name="concord" uuid="00000000-0000-0000-0000-000000000001" sizeX="{2 * view_w}" sizeY="{2 * view_h}">'
        '<image name="main" uuid="00000000-0000-0000-0000-000000000002">'
        "<creationDate>2026-11-28T00:00:00.00Z</creationDate>"
        '<device model="Leica SCN400;Leica SCN" version="1.4.0.10758;1.4.0.10758"/>'
        f'<pixels sizeX="{width}" sizeY="{height}">{dimensions}</pixels>'
        f'<view sizeX="{view_w}" sizeY="{view_h}" offsetX="{view_w // 2}" offsetY="{view_h // 2}" spacingZ="0"/>'
        "<scanSettings><objectiveSettings><objective>20</objective></objectiveSettings>"
        "<illuminationSettings><numericalAperture>0.4</numericalAperture>"
        "<illuminationSource>brightfield</illuminationSource></illuminationSettings></scanSettings>"
        "</image></collection></scn>"
    )


def write_scn(path: Path, pixels: Pixels, *, nm_per_px: int = 250, factors: Sequence[int] = (4,)) -> Path:
    """A Leica-style SCN of ``pixels``, which lie at (width / 2, height / 2) of a collection twice as large."""
    levels = [pixels] + [shrink(pixels, factor) for factor in factors]
    sizes = [(level.shape[1], level.shape[0]) for level in levels]
    description = leica_description(sizes[0][0], sizes[0][1], sizes, nm_per_px)
    with tifffile.TiffWriter(path, bigtiff=True) as tiff:
        for index, level in enumerate(levels):
            text = description if index == 0 else ""
            tiff.write(
                level,
                tile=(TILE, TILE),
                photometric="rgb",
                compression="jpeg",
                description=text,
                metadata=None,
            )
    return path


NDPI_TAGS = [
    (65420, "I", 1, 1, True),
    (65422, "i", 1, 0, True),
    (65423, "i", 1, 0, True),
    (65424, "i", 1, 0, True),
]


def write_ndpi(path: Path, pixels: Pixels, *, mpp: float = 0.25, factors: Sequence[int] = (4,)) -> Path:
    """A Hamamatsu-style NDPI (name it ``*.ndpi``: OpenSlide tells NDPI by its name)."""
    per_cm = 10_000 / mpp
    with tifffile.TiffWriter(path) as tiff:
        for factor in (1, *factors):
            level = shrink(pixels, factor)
            tiff.write(
                level,
                photometric="rgb",
                compression="jpeg",
                compressionargs={"level": 95},
                rowsperstrip=level.shape[0],
                resolution=(per_cm / factor, per_cm / factor),
                resolutionunit="CENTIMETER",
                extratags=[*NDPI_TAGS, (65421, "f", 1, 40.0, True)],
                metadata=None,
            )
    return path


def write_svs_tiles(
    path: Path,
    levels: Sequence[tuple[int, int, Iterator[Pixels]]],
    thumbnail: Pixels,
    *,
    mpp: float = 0.25,
    quality: int = 80,
) -> Path:
    """A large SVS-style slide from tile iterators (width, height, tiles row by row) per level: nothing
    larger than a tile is held in memory. The first level is level 0."""
    width, height = levels[0][0], levels[0][1]
    options = {
        "photometric": "rgb",
        "compression": "jpeg",
        "compressionargs": {"level": quality},
        "metadata": None,
    }
    with tifffile.TiffWriter(path, bigtiff=True) as tiff:
        for index, (level_w, level_h, tiles) in enumerate(levels):
            description = aperio_description(width, height, mpp, None if index == 0 else (level_w, level_h))
            tiff.write(
                tiles,
                shape=(level_h, level_w, 3),
                dtype=np.uint8,
                tile=(TILE, TILE),
                description=description,
                **options,  # type: ignore[arg-type]
            )
            if index == 0:
                tiff.write(thumbnail, description="", **options)  # type: ignore[arg-type]
    return path
