"""A slide's own JPEG tiles served as they are: the bytes a browser gets decode to the pixels OpenSlide reads."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import pytest
import tifffile
from PIL import Image

from app.images.stored_jpeg import APP14, SOS, complete_jpeg, jpeg_markers
from app.images.tiles import ImageSource, Pixels, TileCache, decode_jpeg, encode
from tests.images.slidefiles import TILE, aperio_description, shrink

SIDE_W, SIDE_H = 3 * TILE + 100, 2 * TILE + 60  # the last column and row of tiles are cut by the extent


def _pixels(seed: int = 0) -> Pixels:
    rng = np.random.default_rng(seed)
    smooth = rng.integers(0, 256, (SIDE_H // 16 + 1, SIDE_W // 16 + 1, 3), dtype=np.uint8)
    big = np.asarray(Image.fromarray(smooth).resize((SIDE_W, SIDE_H), Image.Resampling.BILINEAR))
    return big.copy()


def _write_svs(path: Path, pixels: Pixels, outcolorspace: str) -> Path:
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


def _jpeg_pixels(data: bytes) -> Pixels:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("outcolorspace", ["ycbcr", "rgb"])
def test_stored_tiles_decode_to_the_pixels_openslide_reads(tmp_path: Path, outcolorspace: str) -> None:
    path = _write_svs(tmp_path / "slide.svs", _pixels(), outcolorspace)
    with tifffile.TiffFile(path) as tiff:
        assert tiff.pages.first.photometric == (2 if outcolorspace == "rgb" else 6)
    with ImageSource(path) as source, TileCache() as cache:
        for level, col, row in [(0, 0, 0), (0, 2, 1), (0, 3, 2), (1, 0, 0)]:
            width = min(TILE, source.levels[level][0] - col * TILE)
            height = min(TILE, source.levels[level][1] - row * TILE)
            expected = source.read_region(level, col * TILE, row * TILE, width, height).astype(int)
            stored = source.stored_jpeg_tile(level, col, row, TILE)
            served = cache.tile(path, level, col, row, TILE)
            if (width, height) == (TILE, TILE):
                assert stored is not None
                assert served == stored
                assert np.abs(_jpeg_pixels(served).astype(int) - expected).max() <= 2
            else:
                assert stored is None  # cut by the extent: cropped from the stored tile and encoded
                padded = source.stored_jpeg_tile(level, col, row, TILE, padded=True)
                assert padded is not None
                cropped = decode_jpeg(padded)[:height, :width]
                assert np.abs(cropped.astype(int) - expected).max() <= 2
                assert served == encode(np.ascontiguousarray(cropped), "jpeg")


def test_other_sizes_and_synthetic_levels_are_not_stored_tiles(tmp_path: Path) -> None:
    path = _write_svs(tmp_path / "slide.svs", _pixels(), "ycbcr")
    with ImageSource(path) as source:
        assert source.stored_jpeg_tile(0, 0, 0, 512) is None
        assert source.stored_jpeg_tile(0, 9, 0, TILE) is None
        assert source.stored_jpeg_tile(source.native_level_count, 0, 0, TILE) is None


def test_a_missed_tile_is_read_without_blocking_only_from_an_open_file(tmp_path: Path) -> None:
    path = _write_svs(tmp_path / "slide.svs", _pixels(), "ycbcr")
    with TileCache() as cache:
        assert cache.stored_tile_nowait(path, 0, 0, 0) is None  # not open yet: opening may block
        cache.view(path)
        fresh = cache.stored_tile_nowait(path, 0, 1, 1)  # the page cache holds the file just written
        if fresh is not None:
            assert cache.cached_tile(path, 0, 1, 1) == fresh
            assert fresh == cache.tile(path, 0, 1, 1)
        assert cache.stored_tile_nowait(path, 0, 1, 1, fmt="png") is None


def _rgb_jpeg(pixels: Pixels) -> bytes:
    return bytes(imagecodecs.jpeg8_encode(pixels, level=92, colorspace="rgb", outcolorspace="rgb"))


def _without_segment(stream: bytes, marker: int) -> bytes:
    position = 2
    while stream[position + 1] != SOS:
        length = int.from_bytes(stream[position + 2 : position + 4], "big")
        if stream[position + 1] == marker:
            return stream[:position] + stream[position + 2 + length :]
        position += 2 + length
    return stream


def _numbered_components(stream: bytes) -> bytes:
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


def _split_tables(stream: bytes) -> tuple[bytes, bytes]:
    """A complete JPEG as Aperio stores it: JPEGTables (DQT, DHT) and an abbreviated tile stream."""
    tables, rest, position = [b"\xff\xd8"], [b"\xff\xd8"], 2
    while stream[position + 1] != SOS:
        length = int.from_bytes(stream[position + 2 : position + 4], "big")
        segment = stream[position : position + 2 + length]
        (tables if stream[position + 1] in (0xDB, 0xC4) else rest).append(segment)
        position += 2 + length
    return b"".join([*tables, b"\xff\xd9"]), b"".join(rest) + stream[position:]


def test_aperio_rgb_tiles_get_the_adobe_marker_and_their_tables() -> None:
    pixels = _pixels()[:TILE, :TILE]
    aperio = _numbered_components(_without_segment(_rgb_jpeg(pixels), APP14))  # RGB, nothing says so
    tables, tile = _split_tables(aperio)
    assert APP14 not in jpeg_markers(tile)
    assert 0xDB not in jpeg_markers(tile)
    served = complete_jpeg(tile, tables, rgb=True)
    assert served is not None
    assert APP14 in jpeg_markers(served)
    assert np.abs(_jpeg_pixels(served).astype(int) - pixels.astype(int)).mean() < 3
    # Without the marker a decoder takes the RGB samples for YCbCr: the colours are far off.
    unmarked = complete_jpeg(tile, tables, rgb=False)
    assert unmarked is not None
    assert np.abs(_jpeg_pixels(unmarked).astype(int) - pixels.astype(int)).mean() > 20


def test_a_jfif_marker_on_an_rgb_level_is_left_to_the_decoder() -> None:
    ycbcr = bytes(imagecodecs.jpeg8_encode(_pixels()[:64, :64], level=90))
    assert 0xE0 in jpeg_markers(ycbcr)
    assert complete_jpeg(ycbcr, None, rgb=True) is None
    assert complete_jpeg(ycbcr, None, rgb=False) == ycbcr
    assert complete_jpeg(b"not a jpeg", None, rgb=False) is None
