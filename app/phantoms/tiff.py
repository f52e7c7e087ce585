"""Tiled pyramidal TIFF writer: level 0 plus 2×-downsampled levels in SubIFDs, as slide readers expect."""

from __future__ import annotations

import os
from typing import Literal

import numpy as np
import tifffile

MIN_LEVEL_PX = 1024  # stop adding levels once the largest side is below this
STRIP_ROWS = 512  # output rows downsampled at a time, to bound the temporary memory


def pyramid_shapes(height: int, width: int) -> list[tuple[int, int]]:
    """(height, width) of each level: level 0, then halved (floored) while the last is ≥ MIN_LEVEL_PX."""
    shapes = [(height, width)]
    while max(shapes[-1]) >= MIN_LEVEL_PX and min(shapes[-1]) >= 2:
        h, w = shapes[-1]
        shapes.append((h // 2, w // 2))
    return shapes


def halve(image: np.ndarray) -> np.ndarray:
    """2×2 box average of a (H, W, 3) uint8 image -> (H//2, W//2, 3), rounded; works in strips of rows."""
    height, width = image.shape[0] // 2, image.shape[1] // 2
    out = np.empty((height, width, image.shape[2]), dtype=np.uint8)
    for top in range(0, height, STRIP_ROWS):
        bottom = min(top + STRIP_ROWS, height)
        block = image[2 * top : 2 * bottom, : 2 * width].reshape(bottom - top, 2, width, 2, image.shape[2])
        sums = block.sum(axis=(1, 3), dtype=np.uint16)
        out[top:bottom] = (sums + 2) // 4
    return out


def write_pyramidal_tiff(
    path: str | os.PathLike[str],
    image: np.ndarray,
    mpp: float = 0.25,
    tile: int = 256,
    compression: Literal["jpeg", "deflate"] = "jpeg",
    quality: int = 90,
) -> None:
    """Write a (H, W, 3) uint8 RGB image as a tiled pyramidal TIFF at `mpp` µm per level-0 pixel.

    Level 0 is the main IFD; each further level halves the previous one and lives in its SubIFDs, with
    resolution tags (pixels per cm) for its own scale. Readable as tifffile.TiffFile(path).series[0].levels.
    Peak memory is the input plus about a third of it for the smaller levels.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    shapes = pyramid_shapes(image.shape[0], image.shape[1])
    jpeg = compression == "jpeg"
    # RGB colour space inside the JPEG streams, so the PhotometricInterpretation tag stays RGB.
    codec_args = {"level": quality, "outcolorspace": "RGB"} if jpeg else {"level": 6}
    with tifffile.TiffWriter(path, bigtiff=image.nbytes > 2**31) as writer:
        level = np.ascontiguousarray(image)
        for index in range(len(shapes)):
            if index > 0:
                level = halve(level)
            pixels_per_cm = 1e4 / (mpp * 2**index)
            writer.write(
                level,
                photometric="rgb",
                tile=(tile, tile),
                compression="jpeg" if jpeg else "zlib",
                compressionargs=codec_args,
                subsampling=(1, 1) if jpeg else None,
                resolution=(pixels_per_cm, pixels_per_cm),
                resolutionunit="CENTIMETER",
                subifds=len(shapes) - 1 if index == 0 and len(shapes) > 1 else None,
                subfiletype=1 if index > 0 else None,
                metadata=None,
            )
