"""Uploads are judged by their bytes: type from magic numbers, size limits before decoding, truncation."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from PIL import Image

from app.images.validation import ImageInfo, ImageRejected, inspect_image_file

LIMITS = {"max_bytes": 50 * 2**20, "max_pixels": 25_000_000, "max_tiff_pixels": 2_000_000_000}


def noise(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_file(header: bytes, idat: bytes) -> bytes:
    chunks = png_chunk(b"IHDR", header) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + chunks


def write_png_bomb(path: Path, side: int) -> None:
    """A real 1-bit PNG of side x side zeros: hundreds of MB decoded, about a hundred KB on disk."""
    compressor = zlib.compressobj(9)
    row = bytes(1 + -(-side // 8))
    idat = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    path.write_bytes(png_file(header, idat))


def write_header_only_png(path: Path, width: int, height: int) -> None:
    """Valid header, garbage pixel data: decoding it would fail, so 413 proves nothing was decoded."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(png_file(header, b"junk"))


def write_pyramid_tiff(path: Path, compression: str) -> None:
    image = noise(1024, 768)
    options: dict[str, Any] = {"tile": (256, 256), "photometric": "rgb", "compression": compression}
    with tifffile.TiffWriter(path) as writer:
        writer.write(image, subifds=2, **options)
        writer.write(image[::2, ::2], subfiletype=1, **options)
        writer.write(image[::4, ::4], subfiletype=1, **options)


def assert_rejected(path: Path, status: int, **limits: int) -> ImageRejected:
    with pytest.raises(ImageRejected) as caught:
        inspect_image_file(path, **{**LIMITS, **limits})
    assert caught.value.status == status, caught.value.reason
    return caught.value


def test_png_and_jpeg_are_accepted_with_their_sizes(tmp_path: Path) -> None:
    Image.fromarray(noise(300, 400)).save(tmp_path / "a.png")
    Image.fromarray(noise(200, 100)).save(tmp_path / "b.jpeg")
    assert inspect_image_file(tmp_path / "a.png", **LIMITS) == ImageInfo("png", 400, 300, 1, ".png")
    assert inspect_image_file(tmp_path / "b.jpeg", **LIMITS) == ImageInfo("jpeg", 100, 200, 1, ".jpg")


def test_type_comes_from_the_bytes_not_the_name(tmp_path: Path) -> None:
    Image.fromarray(noise(10, 20)).save(tmp_path / "looks.tif", format="PNG")
    assert inspect_image_file(tmp_path / "looks.tif", **LIMITS).format == "png"
    (tmp_path / "notes.png").write_text("this is not an image\n")
    assert_rejected(tmp_path / "notes.png", 415)
    (tmp_path / "empty.png").write_bytes(b"")
    assert_rejected(tmp_path / "empty.png", 415)


@pytest.mark.parametrize("compression", ["zlib", "jpeg", "lzw"])
def test_tiled_pyramid_tiff_is_accepted_with_its_levels(tmp_path: Path, compression: str) -> None:
    write_pyramid_tiff(tmp_path / "p.tif", compression)
    assert inspect_image_file(tmp_path / "p.tif", **LIMITS) == ImageInfo("tiff", 768, 1024, 3, ".tif")


def test_tiff_cut_in_half_is_corrupt(tmp_path: Path) -> None:
    write_pyramid_tiff(tmp_path / "p.tif", "zlib")
    data = (tmp_path / "p.tif").read_bytes()
    (tmp_path / "half.tif").write_bytes(data[: len(data) // 2])
    assert_rejected(tmp_path / "half.tif", 422)


def test_tiff_missing_only_its_last_bytes_is_corrupt(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "t.tif", noise(512, 512), tile=(256, 256), compression="zlib")
    data = (tmp_path / "t.tif").read_bytes()
    (tmp_path / "cut.tif").write_bytes(data[:-100])
    assert_rejected(tmp_path / "cut.tif", 422)


def test_png_bomb_is_rejected_before_decoding(tmp_path: Path) -> None:
    write_png_bomb(tmp_path / "bomb.png", 30_000)
    assert (tmp_path / "bomb.png").stat().st_size < 2**20
    assert_rejected(tmp_path / "bomb.png", 413)
    write_header_only_png(tmp_path / "header.png", 6_000, 5_000)
    assert_rejected(tmp_path / "header.png", 413)
    assert_rejected(tmp_path / "header.png", 422, max_pixels=30_000_001)


def test_file_over_the_byte_limit_is_too_large(tmp_path: Path) -> None:
    Image.fromarray(noise(100, 100)).save(tmp_path / "a.png")
    assert_rejected(tmp_path / "a.png", 413, max_bytes=1000)


@pytest.mark.parametrize(("name", "fmt"), [("a.png", "PNG"), ("a.jpg", "JPEG")])
def test_truncated_png_and_jpeg_are_corrupt(tmp_path: Path, name: str, fmt: str) -> None:
    Image.fromarray(noise(200, 200)).save(tmp_path / name, format=fmt)
    data = (tmp_path / name).read_bytes()
    (tmp_path / name).write_bytes(data[: len(data) // 2])
    assert_rejected(tmp_path / name, 422)


def test_tiff_over_the_tiff_pixel_limit_is_too_large(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "t.tif", noise(512, 512), tile=(256, 256))
    assert_rejected(tmp_path / "t.tif", 413, max_tiff_pixels=512 * 511)


def test_striped_tiff_with_huge_strips_is_too_large(tmp_path: Path) -> None:
    zeros = np.zeros((3000, 2000, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "one_strip.tif", zeros, rowsperstrip=3000, compression="zlib")
    assert_rejected(tmp_path / "one_strip.tif", 413)
    tifffile.imwrite(tmp_path / "strips.tif", zeros, rowsperstrip=64, compression="zlib")
    assert inspect_image_file(tmp_path / "strips.tif", **LIMITS).levels == 1


@pytest.mark.parametrize(
    ("array", "options"),
    [
        (np.zeros((64, 64), dtype=np.float32), {}),
        (np.zeros((5, 64, 64), dtype=np.uint8), {}),
        (np.zeros((64, 64), dtype=np.uint8), {"photometric": "miniswhite"}),
    ],
)
def test_unsupported_tiff_layouts_are_refused(
    tmp_path: Path, array: np.ndarray, options: dict[str, Any]
) -> None:
    tifffile.imwrite(tmp_path / "odd.tif", array, **options)
    assert_rejected(tmp_path / "odd.tif", 415)


def test_uint16_gray_tiff_is_accepted(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "g.tif", np.zeros((300, 200), dtype=np.uint16), tile=(64, 64))
    assert inspect_image_file(tmp_path / "g.tif", **LIMITS) == ImageInfo("tiff", 200, 300, 1, ".tif")
