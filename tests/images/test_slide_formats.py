"""Whole slides in scanner formats: written with tifffile, validated and read back through OpenSlide."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import openslide
import pytest
from PIL import Image

from app.images.tiles import ImageSource, RegionView, TileCache, Window
from app.images.validation import CORRUPT, ImageRejected, inspect_image_file, is_slide_format
from tests.images.slidefiles import Pixels, write_ndpi, write_scn, write_svs

LIMITS = {"max_bytes": 2**30, "max_pixels": 2**31}


def tissue(width: int, height: int) -> Pixels:
    """Smooth colour ramps (JPEG keeps them within a few grey levels) with a marker block at (200, 100)."""
    ys, xs = np.mgrid[0:height, 0:width]
    red = (xs * 255 // max(1, width - 1)).astype(np.uint8)
    green = (ys * 255 // max(1, height - 1)).astype(np.uint8)
    blue = np.full((height, width), 160, dtype=np.uint8)
    pixels = np.stack([red, green, blue], axis=2)
    pixels[100:164, 200:264] = (20, 30, 200)
    return pixels


@pytest.fixture
def svs(tmp_path: Path) -> tuple[Path, Pixels]:
    pixels = tissue(1500, 1000)
    return write_svs(tmp_path / "slide.svs", pixels, mpp=0.2462), pixels


@pytest.fixture
def ndpi(tmp_path: Path) -> tuple[Path, Pixels]:
    pixels = tissue(1024, 768)
    return write_ndpi(tmp_path / "slide.ndpi", pixels, mpp=0.4416), pixels


@pytest.fixture
def scn(tmp_path: Path) -> tuple[Path, Pixels]:
    pixels = tissue(1024, 768)
    return write_scn(tmp_path / "slide.scn", pixels), pixels


def close_to(actual: Pixels, expected: Pixels, tolerance: float = 4.0) -> bool:
    return float(np.abs(actual.astype(np.int16) - expected.astype(np.int16)).mean()) <= tolerance


def test_svs_is_read_by_openslide_as_aperio(svs: tuple[Path, Pixels]) -> None:
    path, _ = svs
    assert openslide.OpenSlide.detect_format(path) == "aperio"
    with openslide.OpenSlide(path) as slide:
        assert slide.level_dimensions == ((1500, 1000), (375, 250), (94, 63))
        assert "thumbnail" in slide.associated_images


def test_svs_upload_is_recognised_with_its_resolution(svs: tuple[Path, Pixels], tmp_path: Path) -> None:
    upload = tmp_path / "anything.upload"
    shutil.copy(svs[0], upload)
    info = inspect_image_file(upload, **LIMITS)
    assert (info.format, info.width, info.height, info.levels, info.extension) == (
        "svs",
        1500,
        1000,
        3,
        ".svs",
    )
    assert info.microns_per_pixel == pytest.approx(0.2462)
    assert is_slide_format(info.format)


def test_ndpi_upload_is_recognised_under_any_name(ndpi: tuple[Path, Pixels], tmp_path: Path) -> None:
    upload = tmp_path / "scan.upload"
    shutil.copy(ndpi[0], upload)
    info = inspect_image_file(upload, **LIMITS)
    assert (info.format, info.width, info.height, info.extension) == ("ndpi", 1024, 768, ".ndpi")
    assert info.microns_per_pixel == pytest.approx(0.4416, rel=1e-3)


def test_plain_tiled_tiff_stays_a_tiff(tmp_path: Path) -> None:
    import tifffile

    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, tissue(512, 512), tile=(256, 256), photometric="rgb")
    assert inspect_image_file(path, **LIMITS).format == "tiff"


def test_truncated_svs_is_refused(svs: tuple[Path, Pixels], tmp_path: Path) -> None:
    data = svs[0].read_bytes()
    broken = tmp_path / "broken.upload"
    broken.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageRejected) as refused:
        inspect_image_file(broken, **LIMITS)
    assert refused.value.status == CORRUPT


def test_svs_levels_are_the_slides_own_pyramid(svs: tuple[Path, Pixels]) -> None:
    path, pixels = svs
    with ImageSource(path) as source:
        assert source.native_level_count == 3
        assert source.levels[:3] == [(1500, 1000), (375, 250), (94, 63)]
        assert close_to(source.read_region(0, 0, 0, 1500, 1000), pixels)
        level1 = source.read_region(1, 0, 0, 375, 250)
        expected = np.asarray(Image.fromarray(pixels).resize((375, 250), Image.Resampling.BOX))
        assert close_to(level1, expected)


def test_svs_region_outside_the_slide_is_white(svs: tuple[Path, Pixels]) -> None:
    with ImageSource(svs[0]) as source:
        region = source.read_region(0, 1400, 900, 200, 200)
    assert (region[100:, :] == 255).all()
    assert (region[:, 100:] == 255).all()
    assert not (region[:100, :100] == 255).all()


def test_ndpi_pixels_come_back(ndpi: tuple[Path, Pixels]) -> None:
    path, pixels = ndpi
    with ImageSource(path) as source:
        assert (source.width, source.height) == (1024, 768)
        assert close_to(source.read_region(0, 100, 50, 400, 300), pixels[50:350, 100:500])


def test_region_of_a_slide_is_read_in_place(svs: tuple[Path, Pixels]) -> None:
    path, pixels = svs
    with TileCache() as cache:
        view = cache.view(path, Window(200, 100, 64, 64))
        assert isinstance(view, RegionView)
        assert view.levels[0] == (64, 64)
        marker = view.read_region(0, 0, 0, 64, 64)
    assert close_to(marker, pixels[100:164, 200:264])
    assert marker[32, 32].tolist() == pytest.approx([20, 30, 200], abs=8)


def test_slide_tiles_are_cached_jpeg(svs: tuple[Path, Pixels]) -> None:
    with TileCache() as cache:
        first = cache.tile(svs[0], 1, 1, 0, 256)
        again = cache.tile(svs[0], 1, 1, 0, 256)
        assert cache.lookups == (1, 1)
    assert first is again
    with Image.open(__import__("io").BytesIO(first)) as tile:
        assert tile.format == "JPEG"
        assert tile.size == (375 - 256, 250)


def test_slide_reads_in_many_threads_survive_closing(svs: tuple[Path, Pixels]) -> None:
    """OpenSlide reads run outside the source's lock; close() waits for them, and later reads reopen."""
    from concurrent.futures import ThreadPoolExecutor

    path, _ = svs
    source = ImageSource(path)
    expected = source.read_region(0, 256, 256, 256, 256)

    def read(index: int) -> bool:
        if index % 10 == 0:
            source.close()
            return True
        return bool((source.read_region(0, 256, 256, 256, 256) == expected).all())

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert all(pool.map(read, range(400)))
    source.close()


def test_scn_upload_is_recognised_as_leica(scn: tuple[Path, Pixels], tmp_path: Path) -> None:
    upload = tmp_path / "scan.upload"
    shutil.copy(scn[0], upload)
    assert openslide.OpenSlide.detect_format(upload) == "leica"
    info = inspect_image_file(upload, **LIMITS)
    assert (info.format, info.width, info.height, info.extension) == ("scn", 2048, 1536, ".scn")


def test_scn_image_lies_in_its_collection_white_around(scn: tuple[Path, Pixels]) -> None:
    path, pixels = scn
    with ImageSource(path) as source:
        assert source.levels[:2] == [(2048, 1536), (512, 384)]
        assert close_to(source.read_region(0, 512, 384, 1024, 768), pixels)
        assert (source.read_region(0, 0, 0, 256, 256) == 255).all()
