"""Raw level-0 caches: written once per stored file, band by band, read instead of decoding the file."""

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage

from app.config import Settings
from app.errors import Conflict
from app.images import rawcache
from app.images import service as images_service
from app.images.tiles import ImageSource, Pixels, RegionView, Window
from app.models import Image
from tests.conftest import ClientFactory
from tests.factories import make_study, png_bytes

WIDTH, HEIGHT = 300, 200
REGIONS = [(0, 0, WIDTH, HEIGHT), (17, 23, 64, 40), (WIDTH - 10, HEIGHT - 5, 30, 20), (-8, -4, 16, 12)]


@pytest.fixture
def local_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", database_url="sqlite+aiosqlite://")


def _pixels(width: int = WIDTH, height: int = HEIGHT) -> Pixels:
    rng = np.random.default_rng(7)
    return rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def _write_png(path: Path, pixels: Pixels) -> Path:
    PILImage.fromarray(pixels).save(path, format="PNG")
    return path


def _write_jpeg(path: Path, pixels: Pixels) -> Path:
    PILImage.fromarray(pixels).save(path, format="JPEG", quality=90)
    return path


def _write_tiff(path: Path, pixels: Pixels) -> Path:
    tifffile.imwrite(path, pixels, tile=(64, 64), compression="zlib", photometric="rgb")
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cache(settings: Settings, path: Path, width: int = WIDTH, height: int = HEIGHT) -> Path:
    written = rawcache.write_raw_cache(settings, _sha(path), path, width, height)
    assert written is not None
    assert written == rawcache.raw_path(settings, _sha(path))
    return written


@pytest.mark.parametrize("write", [_write_png, _write_jpeg, _write_tiff], ids=["png", "jpeg", "tiff"])
def test_level0_reads_through_the_cache_equal_reads_of_the_file(
    local_settings: Settings, tmp_path: Path, write: object
) -> None:
    assert callable(write)
    path: Path = write(tmp_path / "image", _pixels())
    raw = _cache(local_settings, path)
    with ImageSource(path) as plain, ImageSource(path, raw) as cached:
        assert cached.levels == plain.levels
        for x, y, w, h in REGIONS:
            assert np.array_equal(cached.read_region(0, x, y, w, h), plain.read_region(0, x, y, w, h))
        assert np.array_equal(cached.read_region(1, 0, 0, 50, 50), plain.read_region(1, 0, 0, 50, 50))


def test_a_window_of_a_cached_tiff_reads_as_the_file(local_settings: Settings, tmp_path: Path) -> None:
    path = _write_tiff(tmp_path / "region.tif", _pixels())
    raw = _cache(local_settings, path)
    window = Window(40, 30, 200, 150)
    with ImageSource(path) as plain, ImageSource(path, raw) as cached:
        plain_view, cached_view = RegionView(plain, window), RegionView(cached, window)
        for x, y, w, h in [(0, 0, 200, 150), (150, 100, 80, 80), (5, 9, 33, 21)]:
            assert np.array_equal(
                cached_view.read_region(0, x, y, w, h), plain_view.read_region(0, x, y, w, h)
            )


def test_level0_comes_from_the_cache_and_other_levels_from_the_file(
    local_settings: Settings, tmp_path: Path
) -> None:
    pixels = _pixels()
    path = _write_png(tmp_path / "image.png", pixels)
    raw = _cache(local_settings, path)
    np.save(raw, np.zeros_like(pixels))  # a cache that differs from the file shows which one is read
    with ImageSource(path, raw) as source:
        assert not source.read_region(0, 0, 0, WIDTH, HEIGHT).any()
        assert np.array_equal(
            source.read_region(1, 0, 0, 10, 10), ImageSource(path).read_region(1, 0, 0, 10, 10)
        )


def test_a_cache_of_another_size_is_ignored(local_settings: Settings, tmp_path: Path) -> None:
    pixels = _pixels()
    path = _write_png(tmp_path / "image.png", pixels)
    raw = rawcache.raw_path(local_settings, _sha(path))
    raw.parent.mkdir(parents=True)
    np.save(raw, np.zeros((10, 10, 3), dtype=np.uint8))
    with ImageSource(path, raw) as source:
        assert np.array_equal(source.read_region(0, 0, 0, WIDTH, HEIGHT), pixels)


def test_the_cache_is_written_band_by_band(
    local_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pixels = _pixels()
    path = _write_tiff(tmp_path / "image.tif", pixels)
    heights: list[int] = []
    read_region = ImageSource.read_region

    def spy(self: ImageSource, level: int, x: int, y: int, w: int, h: int) -> Pixels:
        heights.append(h)
        return read_region(self, level, x, y, w, h)

    monkeypatch.setattr(rawcache, "RAW_BAND_ROWS", 7)
    monkeypatch.setattr(ImageSource, "read_region", spy)
    raw = _cache(local_settings, path)
    assert max(heights) == 7
    assert sum(heights) == HEIGHT
    assert np.array_equal(np.load(raw), pixels)
    assert [item.name for item in raw.parent.iterdir()] == [raw.name]  # no partial file is left


def test_files_above_the_setting_get_no_cache(local_settings: Settings, tmp_path: Path) -> None:
    path = _write_png(tmp_path / "image.png", _pixels())
    local_settings.raw_cache_max_pixels = WIDTH * HEIGHT - 1
    assert rawcache.write_raw_cache(local_settings, _sha(path), path, WIDTH, HEIGHT) is None
    assert not (local_settings.data_dir / "raw").exists()


def test_ensure_builds_a_missing_cache_once(local_settings: Settings, tmp_path: Path) -> None:
    pixels = _pixels()
    source = _write_png(tmp_path / "image.png", pixels)
    sha = _sha(source)
    stored = local_settings.image_dir / sha[:2] / f"{sha}.png"
    stored.parent.mkdir(parents=True)
    stored.write_bytes(source.read_bytes())
    image = Image(sha256=sha, file_format="png", file_width=WIDTH, file_height=HEIGHT)
    raw = rawcache.ensure_raw_cache(local_settings, image)
    assert raw == rawcache.raw_path(local_settings, sha)
    assert np.array_equal(np.load(raw), pixels)
    modified = raw.stat().st_mtime_ns
    assert rawcache.ensure_raw_cache(local_settings, image) == raw
    assert raw.stat().st_mtime_ns == modified
    missing = Image(sha256=sha, file_format="missing", file_width=WIDTH, file_height=HEIGHT)
    assert rawcache.ensure_raw_cache(local_settings, missing) is None


def _raw_files(settings: Settings) -> list[Path]:
    folder = settings.data_dir / "raw"
    return sorted(path for path in folder.rglob("*") if path.is_file()) if folder.exists() else []


async def test_uploads_write_caches_of_their_pixels(
    app: object, client_for: ClientFactory, settings: Settings
) -> None:
    setup = await make_study(app, image_count=1)
    admin = await client_for("admin")
    content = png_bytes(120, 80, seed=9)
    response = await admin.post(
        f"/api/v1/tasks/{setup.task.id}/images", files=[("files", ("a.png", content, "image/png"))]
    )
    assert response.status_code == 201, response.text
    raw = rawcache.raw_path(settings, hashlib.sha256(content).hexdigest())
    assert np.array_equal(np.load(raw), np.asarray(PILImage.open(io.BytesIO(content)).convert("RGB")))
    assert len(_raw_files(settings)) == 2


async def test_an_upload_failing_after_its_files_are_stored_leaves_no_cache(
    app: object, client_for: ClientFactory, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = await make_study(app, image_count=1)
    admin = await client_for("admin")
    before = _raw_files(settings)
    image_row = images_service._image_row

    def fail_on_second(task: object, item: images_service.NewImage, *args: object) -> Image:
        if item.name == "b.png":
            raise Conflict("refused after the files were stored")
        return image_row(task, item, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(images_service, "_image_row", fail_on_second)
    files = [
        ("files", ("a.png", png_bytes(seed=21), "image/png")),
        ("files", ("b.png", png_bytes(seed=22), "image/png")),
    ]
    response = await admin.post(f"/api/v1/tasks/{setup.task.id}/images", files=files)
    assert response.status_code == 409, response.text
    assert _raw_files(settings) == before
