"""JPEG-tiled slides and JPEG streams shaped as scanners write them, for the stored-tile tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import tifffile
from PIL import Image

from app.images.stored_jpeg import SOS
from app.images.tiles import Pixels
from tests.images.slidefiles import TILE, aperio_description, shrink

SIDE_W, SIDE_H = 3 * TILE + 100, 2 * TILE + 60  # the last column and row of tiles are cut by the extent


def smooth_pixels(seed: int = 0) -> Pixels:
    rng = np.random.default_rng(seed)
    smooth = rng.integers(0, 256, (SIDE_H // 16 + 1, SIDE_W // 16 + 1, 3), dtype=np.uint8)
    big = np.asarray(Image.fromarray(smooth).resize((SIDE_W, SIDE_H), Image.Resampling.BILINEAR))
    return big.copy()


def write_jpeg_svs(path: Path, pixels: Pixels, outcolorspace: str) -> Path:
    """An Aperio-style slide whose JPEG tiles hold YCbCr (tifffile's default) or RGB (Aperio's)."""
    options: dict[str, Any] = {
        "photometric": "rgb",
        "compression": "jpeg",
        "compressionargs": {"level": 90, "outcolorspace": outcolorspace},
        "metadata": None,
    }
    height, width = pixels.shape[:2]
    with tifffile.TiffWriter(path) as tiff:
        tiff.write(pixels, tile=(TILE, TILE), description=aperio_description(width, height, 0.25), **options)
        tiff.write(shrink(pixels, 8), description="", **options)
        level = shrink(pixels, 4)
        size = (level.shape[1], level.shape[0])
        tiff.write(
            level, tile=(TILE, TILE), description=aperio_description(width, height, 0.25, size), **options
        )
    return path


def rgb_jpeg(pixels: Pixels) -> bytes:
    return bytes(imagecodecs.jpeg8_encode(pixels, level=92, colorspace="rgb", outcolorspace="rgb"))


def without_segment(stream: bytes, marker: int) -> bytes:
    position = 2
    while stream[position + 1] != SOS:
        length = int.from_bytes(stream[position + 2 : position + 4], "big")
        if stream[position + 1] == marker:
            return stream[:position] + stream[position + 2 + length :]
        position += 2 + length
    return stream


def numbered_components(stream: bytes) -> bytes:
    """Component ids 1, 2, 3 instead of libjpeg's 'R', 'G', 'B' (which alone tell a decoder it is RGB), as
    other encoders write them: then nothing but the TIFF says the samples are RGB."""
    renumber = {ord("R"): 1, ord("G"): 2, ord("B"): 3}
    data = bytearray(stream)
    position = 2
    while True:
        marker, length = data[position + 1], int.from_bytes(data[position + 2 : position + 4], "big")
        if marker in (0xC0, SOS):
            count_at = position + (9 if marker == 0xC0 else 4)
            step = 3 if marker == 0xC0 else 2
            for index in range(data[count_at]):
                at = count_at + 1 + index * step
                data[at] = renumber[data[at]]
        if marker == SOS:
            return bytes(data)
        position += 2 + length


def split_tables(stream: bytes) -> tuple[bytes, bytes]:
    """A complete JPEG as Aperio stores it: JPEGTables (DQT, DHT) and an abbreviated tile stream."""
    tables, rest, position = [b"\xff\xd8"], [b"\xff\xd8"], 2
    while stream[position + 1] != SOS:
        length = int.from_bytes(stream[position + 2 : position + 4], "big")
        segment = stream[position : position + 2 + length]
        (tables if stream[position + 1] in (0xDB, 0xC4) else rest).append(segment)
        position += 2 + length
    return b"".join([*tables, b"\xff\xd9"]), b"".join(rest) + stream[position:]
