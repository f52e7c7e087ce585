"""Lazy reads of a 20 000 px pyramidal TIFF, software pyramids of PNG/JPEG, and the tile cache."""

from __future__ import annotations

import contextlib
import gc
import io
import os
import resource
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import tifffile
from PIL import Image

from app.images.tiles import (
    ImageSource,
    Pixels,
    RegionError,
    RegionView,
    TileCache,
    Window,
    downsample,
    encode,
)

BIG_SIDE = 20_000
TILE = 256
BIG_LEVELS = [(BIG_SIDE >> level, BIG_SIDE >> level) for level in range(4)]
RSS_GROWTH_LIMIT = 100 * 2**20


# ---------------------------------------------------------------- the big TIFF


def pattern(level: int, x: int, y: int, w: int, h: int) -> Pixels:
    """Pixel values that encode their own position: R, G = x, y within the tile; B = tile and level.

    Computed in uint8 (wrapping is the intended modulo 256) so checking a region costs little memory.
    """
    xs = np.arange(x, x + w)
    ys = np.arange(y, y + h)
    red = np.broadcast_to((xs & 255).astype(np.uint8)[None, :], (h, w))
    green = np.broadcast_to((ys & 255).astype(np.uint8)[:, None], (h, w))
    blue_x = (((xs >> 8) * 5) & 255).astype(np.uint8)[None, :]
    blue_y = (((ys >> 8) * 11 + level * 101) & 255).astype(np.uint8)[:, None]
    return np.stack([red, green, blue_x + blue_y], axis=2)


def expected_region(level: int, x: int, y: int, w: int, h: int) -> Pixels:
    width, height = BIG_LEVELS[level]
    out = np.full((h, w, 3), 255, dtype=np.uint8)
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if x1 > x0 and y1 > y0:
        out[y0 - y : y1 - y, x0 - x : x1 - x] = pattern(level, x0, y0, x1 - x0, y1 - y0)
    return out


def level_tiles(level: int) -> Iterator[Pixels]:
    width, height = BIG_LEVELS[level]
    for row in range(-(-height // TILE)):
        for col in range(-(-width // TILE)):
            yield pattern(level, col * TILE, row * TILE, TILE, TILE)


def write_big_tiff(path: Path) -> None:
    options: dict[str, Any] = {
        "tile": (TILE, TILE),
        "dtype": np.uint8,
        "photometric": "rgb",
        "compression": "zlib",
        "compressionargs": {"level": 1},
        "predictor": True,
        "maxworkers": 2,
    }
    with tifffile.TiffWriter(path) as writer:
        writer.write(level_tiles(0), shape=(*BIG_LEVELS[0], 3), subifds=3, **options)
        for level in range(1, 4):
            shape = (*BIG_LEVELS[level], 3)
            writer.write(level_tiles(level), shape=shape, subfiletype=1, **options)


@pytest.fixture(scope="module")
def big_tiff(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Written in a child process so this process's peak RSS is not raised by the writer."""
    path = tmp_path_factory.mktemp("big") / "pyramid.tif"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    subprocess.run([sys.executable, __file__, str(path)], check=True, env=env)
    return path


# ---------------------------------------------------------------- peak RSS


def reset_peak_rss() -> None:
    """Linux lets a process reset its own high-water mark; elsewhere the old peak stays."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def peak_rss_bytes() -> int:
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def decode_png(data: bytes) -> Pixels:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB")).copy()


def random_requests(count: int, seed: int) -> list[tuple[int, int, int, int, int]]:
    rng = np.random.default_rng(seed)
    requests = []
    for _ in range(count):
        level = int(rng.integers(0, 4))
        width, height = BIG_LEVELS[level]
        w, h = (int(v) for v in rng.integers(1, 1024, size=2))
        x = int(rng.integers(-w // 2, width - w // 2))
        y = int(rng.integers(-h // 2, height - h // 2))
        requests.append((level, x, y, w, h))
    return requests


# ---------------------------------------------------------------- tests on the big TIFF


def test_big_tiff_exposes_native_levels_then_synthetic_ones(big_tiff: Path) -> None:
    source = ImageSource(big_tiff)
    assert (source.width, source.height) == BIG_LEVELS[0]
    assert source.native_level_count == 4
    assert source.levels[:4] == BIG_LEVELS
    assert source.levels[4:] == [(1250, 1250), (625, 625), (313, 313), (157, 157)]
    source.close()


def test_many_regions_match_written_pixels_and_peak_rss_stays_low(big_tiff: Path) -> None:
    requests = random_requests(150, seed=7)
    tiles = [(0, 0, 0), (0, 78, 78), (1, 20, 39), (2, 19, 3), (3, 5, 9)]
    gc.collect()
    reset_peak_rss()
    baseline = peak_rss_bytes()

    source = ImageSource(big_tiff)
    for level, x, y, w, h in requests:
        region = source.read_region(level, x, y, w, h)
        np.testing.assert_array_equal(region, expected_region(level, x, y, w, h))
    cache = TileCache(max_encoded_bytes=4 * 2**20)
    for level, col, row in tiles:
        tile = decode_png(cache.tile(big_tiff, level, col, row, TILE, "png"))
        width, height = BIG_LEVELS[level]
        w, h = min(TILE, width - col * TILE), min(TILE, height - row * TILE)
        np.testing.assert_array_equal(tile, expected_region(level, col * TILE, row * TILE, w, h))
    thumbnail = decode_png(cache.thumbnail(big_tiff, 256, "png"))

    growth = peak_rss_bytes() - baseline
    source.close()
    cache.close()
    assert thumbnail.shape == (256, 256, 3)
    print(f"peak RSS growth during reads: {growth / 2**20:.1f} MiB")
    assert growth < RSS_GROWTH_LIMIT, f"peak RSS grew by {growth / 2**20:.0f} MiB"


def test_region_across_tile_borders_is_exact(big_tiff: Path) -> None:
    source = ImageSource(big_tiff)
    for level in (0, 1, 2):
        region = source.read_region(level, 3 * TILE - 5, 7 * TILE - 3, 10, 9)
        np.testing.assert_array_equal(region, pattern(level, 3 * TILE - 5, 7 * TILE - 3, 10, 9))
    source.close()


def test_region_past_the_image_edges_is_padded_white(big_tiff: Path) -> None:
    source = ImageSource(big_tiff)
    corner = source.read_region(1, 9_990, 9_995, 30, 20)
    assert (corner[5:, :] == 255).all()
    assert (corner[:, 10:] == 255).all()
    np.testing.assert_array_equal(corner[:5, :10], pattern(1, 9_990, 9_995, 10, 5))
    before = source.read_region(0, -8, -4, 16, 8)
    assert (before[:4] == 255).all()
    assert (before[:, :8] == 255).all()
    np.testing.assert_array_equal(before[4:, 8:], pattern(0, 0, 0, 8, 4))
    assert (source.read_region(2, 6_000, 0, 64, 64) == 255).all()
    source.close()


def test_synthetic_level_averages_the_smallest_native_level(big_tiff: Path) -> None:
    source = ImageSource(big_tiff)
    region = source.read_region(5, 600, 100, 40, 30)
    native = expected_region(3, 2400, 400, 160, 120)
    np.testing.assert_array_equal(region[:, :25], downsample(native[:, :100], 4))
    assert (region[:, 25:] == 255).all()
    source.close()


def test_region_view_reads_the_window_at_every_level(big_tiff: Path) -> None:
    source = ImageSource(big_tiff)
    view = RegionView(source, Window(12_000, 8_000, 900, 700))
    assert view.levels[:3] == [(900, 700), (450, 350), (225, 175)]
    np.testing.assert_array_equal(view.read_region(0, 10, 20, 64, 48), pattern(0, 12_010, 8_020, 64, 48))
    np.testing.assert_array_equal(view.read_region(2, 0, 0, 32, 32), pattern(2, 3_000, 2_000, 32, 32))
    beyond = view.read_region(1, 440, 0, 20, 10)
    np.testing.assert_array_equal(beyond[:, :10], pattern(1, 6_440, 4_000, 10, 10))
    assert (beyond[:, 10:] == 255).all()
    source.close()


def test_region_view_must_lie_inside_the_image(big_tiff: Path) -> None:
    source = ImageSource(big_tiff)
    with pytest.raises(RegionError):
        RegionView(source, Window(19_900, 0, 200, 100))
    source.close()


def test_cache_serves_window_tiles_and_caches_encoded_bytes(big_tiff: Path) -> None:
    cache = TileCache(max_encoded_bytes=2**20)
    window = Window(4_096, 4_096, 1_000, 600)
    first = cache.tile(big_tiff, 0, 3, 2, TILE, "png", window=window)
    assert cache.tile(big_tiff, 0, 3, 2, TILE, "png", window=window) is first
    np.testing.assert_array_equal(decode_png(first), pattern(0, 4_096 + 768, 4_096 + 512, 232, 88))
    with pytest.raises(RegionError):
        cache.tile(big_tiff, 0, 4, 0, TILE, "png", window=window)
    assert 0 < cache.encoded_bytes <= 2**20
    cache.close()


@pytest.mark.parametrize("quality", [75, 85, 95])
def test_jpeg_encoding_gives_pillow_s_bytes(quality: int) -> None:
    rng = np.random.default_rng(quality)
    for height, width in [(1, 1), (53, 256), (256, 53), (100, 333)]:
        noise = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(noise, "RGB").save(buffer, "JPEG", quality=quality)
        assert encode(noise, "jpeg", quality) == buffer.getvalue()
        assert encode(noise[:, ::-1], "jpeg", quality) == encode(noise[:, ::-1].copy(), "jpeg", quality)


def test_cached_tiles_leave_nothing_for_the_garbage_collector_to_track(big_tiff: Path) -> None:
    """A key holding a Path or a Window stayed tracked: one object per cached tile in the collector's oldest
    generation, which made its full collections (every request in flight waiting) come oftener and last
    longer as the cache filled."""
    with TileCache() as cache:
        window = Window(4_096, 4_096, 1_000, 600)
        for col in range(3):
            cache.tile(big_tiff, 0, col, 0, TILE, "png")
            cache.tile(big_tiff, 0, col, 1, TILE, "png", window=window)
        cache.thumbnail(big_tiff, 64, window=window)
        gc.collect()
        keys = list(cache._encoded._items)
        assert len(keys) == 7
        assert not any(gc.is_tracked(key) for key in keys)
        cache.forget(big_tiff)
        assert cache.encoded_bytes == 0


def test_bad_requests_raise_region_error(big_tiff: Path) -> None:
    source = ImageSource(big_tiff)
    with pytest.raises(RegionError):
        source.read_region(len(source.levels), 0, 0, 10, 10)
    with pytest.raises(RegionError):
        source.read_region(0, 0, 0, 5000, 5000)
    with pytest.raises(RegionError):
        source.read_region(0, 0, 0, 0, 10)
    source.close()


# ---------------------------------------------------------------- small images


def gradient_rgb(width: int, height: int) -> Pixels:
    xs = np.linspace(0, 255, width)[None, :]
    ys = np.linspace(0, 255, height)[:, None]
    rgb = np.stack(np.broadcast_arrays(xs, ys, (xs + ys) / 2), axis=2)
    return rgb.round().astype(np.uint8)


def save_pillow(path: Path, array: npt.NDArray[np.generic], **options: Any) -> Path:
    Image.fromarray(array).save(path, **options)
    return path


def test_png_source_reads_exact_pixels_and_builds_a_pyramid(tmp_path: Path) -> None:
    pixels = gradient_rgb(700, 500)
    with ImageSource(save_pillow(tmp_path / "patch.png", pixels)) as source:
        assert source.levels == [(700, 500), (350, 250), (175, 125)]
        np.testing.assert_array_equal(source.read_region(0, 0, 0, 700, 500), pixels)
        level1 = source.read_region(1, 0, 0, 350, 250)
        level2 = source.read_region(2, 0, 0, 175, 125)
    np.testing.assert_array_equal(level1, downsample(pixels, 2))
    np.testing.assert_array_equal(level2, downsample(downsample(pixels, 2), 2))


def test_jpeg_source_is_close_to_the_original(tmp_path: Path) -> None:
    pixels = gradient_rgb(320, 240)
    with ImageSource(save_pillow(tmp_path / "patch.jpg", pixels, quality=95)) as source:
        region = source.read_region(0, 0, 0, 320, 240).astype(int)
    assert np.abs(region - pixels).mean() < 2


def test_gray_png_becomes_rgb(tmp_path: Path) -> None:
    gray = gradient_rgb(64, 32)[:, :, 0]
    with ImageSource(save_pillow(tmp_path / "gray.png", gray)) as source:
        region = source.read_region(0, 0, 0, 64, 32)
    np.testing.assert_array_equal(region, np.repeat(gray[:, :, None], 3, axis=2))


def test_rgba_png_is_composited_over_white(tmp_path: Path) -> None:
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[:, :4] = (200, 10, 30, 255)
    rgba[:, 4:] = (200, 10, 30, 0)
    with ImageSource(save_pillow(tmp_path / "rgba.png", rgba)) as source:
        region = source.read_region(0, 0, 0, 8, 8)
    assert (region[:, :4] == (200, 10, 30)).all()
    assert (region[:, 4:] == 255).all()


def test_uint16_gray_and_rgba_tiffs_become_rgb8(tmp_path: Path) -> None:
    gray16 = (np.arange(300 * 200, dtype=np.uint32).reshape(200, 300) * 3 % 65536).astype(np.uint16)
    tifffile.imwrite(tmp_path / "gray16.tif", gray16, tile=(64, 64))
    with ImageSource(tmp_path / "gray16.tif") as source:
        region = source.read_region(0, 10, 10, 100, 50)
    expected8 = ((gray16[10:60, 10:110].astype(np.uint32) + 128) // 257).astype(np.uint8)
    np.testing.assert_array_equal(region, np.repeat(expected8[:, :, None], 3, axis=2))

    rgba = np.zeros((64, 64, 4), dtype=np.uint8)
    rgba[..., :3] = 40
    rgba[:, 32:, 3] = 255
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=["unassalpha"])
    with ImageSource(tmp_path / "rgba.tif") as source:
        region = source.read_region(0, 0, 0, 64, 64)
    assert (region[:, :32] == 255).all()
    assert (region[:, 32:] == 40).all()


def test_striped_tiff_without_pyramid_gets_synthetic_levels(tmp_path: Path) -> None:
    pixels = gradient_rgb(1000, 700)
    tifffile.imwrite(tmp_path / "striped.tif", pixels, rowsperstrip=16, compression="zlib")
    with ImageSource(tmp_path / "striped.tif") as source:
        assert source.native_level_count == 1
        assert source.levels == [(1000, 700), (500, 350), (250, 175)]
        region = source.read_region(0, 300, 200, 50, 60)
        level2 = source.read_region(2, 0, 0, 250, 175)
    np.testing.assert_array_equal(region, pixels[200:260, 300:350])
    np.testing.assert_array_equal(level2, downsample(pixels, 4))


def test_encode_round_trips(tmp_path: Path) -> None:
    pixels = gradient_rgb(50, 40)
    np.testing.assert_array_equal(decode_png(encode(pixels, "png")), pixels)
    with Image.open(io.BytesIO(encode(pixels, "jpeg", quality=90))) as image:
        assert image.format == "JPEG"
        assert image.size == (50, 40)


def test_cache_evicts_sources_and_stays_correct_under_threads(tmp_path: Path) -> None:
    images = [np.roll(gradient_rgb(300, 300), shift, axis=1) for shift in range(4)]
    paths = [save_pillow(tmp_path / f"p{i}.png", image) for i, image in enumerate(images)]
    cache = TileCache(max_open_sources=2, max_encoded_bytes=32 * 1024)
    jobs = [(path, level, col, row) for path in paths for level in (0, 1) for col in (0, 1) for row in (0, 1)]
    with TileCache() as reference:
        serial = {job: reference.tile(job[0], job[1], job[2], job[3], 128, "png") for job in jobs}
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda job: cache.tile(job[0], job[1], job[2], job[3], 128, "png"), jobs * 3))
    assert results == [serial[job] for job in jobs * 3]
    assert len(cache.open_paths) <= 2
    assert cache.encoded_bytes <= 32 * 1024
    cache.close()


def test_thumbnail_keeps_aspect_ratio_and_never_upscales(tmp_path: Path) -> None:
    path = save_pillow(tmp_path / "wide.png", gradient_rgb(800, 200))
    with TileCache() as cache:
        assert decode_png(cache.thumbnail(path, 100, "png")).shape == (25, 100, 3)
        assert decode_png(cache.thumbnail(path, 2000, "png")).shape == (200, 800, 3)


if __name__ == "__main__":
    write_big_tiff(Path(sys.argv[1]))
