"""Small whole slides in scanner formats, written with tifffile, for tests and bench/tiles.py.

``write_svs`` writes what an Aperio scanner writes: a tiled level 0 whose ImageDescription starts with
"Aperio Image Library", a stripped thumbnail as the second page, then the lower levels (4x apart by
default, as Aperio's are), all tiled. OpenSlide reads it as "aperio", tifffile as an SVS series.

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
