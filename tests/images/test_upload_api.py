"""Uploads: good files are stored once by SHA-256; bad ones answer 4xx and leave no rows or files."""

import io
from pathlib import Path

import numpy as np
import tifffile
from httpx import AsyncClient
from PIL import Image as PILImage

from app.config import Settings
from tests.conftest import ClientFactory
from tests.factories import make_study, png_bytes


def _stored_files(settings: Settings) -> list[Path]:
    files = [path for path in settings.image_dir.rglob("*") if path.is_file()]
    for folder in (settings.data_dir / "tmp", settings.data_dir / "raw"):
        files += [path for path in folder.rglob("*") if path.is_file()] if folder.exists() else []
    return files


def _tiff_bytes() -> bytes:
    buffer = io.BytesIO()
    pixels = np.arange(512 * 512 * 3, dtype=np.uint32).reshape(512, 512, 3).astype(np.uint8)
    tifffile.imwrite(buffer, pixels, tile=(256, 256), compression="zlib", photometric="rgb")
    return buffer.getvalue()


def _bomb_png() -> bytes:
    buffer = io.BytesIO()
    PILImage.new("1", (30_000, 30_000)).save(buffer, format="PNG")
    return buffer.getvalue()


async def _images(client: AsyncClient, task_id: int) -> list[dict[str, object]]:
    response = await client.get(f"/api/v1/tasks/{task_id}/images")
    images: list[dict[str, object]] = response.json()
    return images


async def test_good_uploads_are_stored_once_with_their_sizes(
    app: object, client_for: ClientFactory, settings: Settings
) -> None:
    setup = await make_study(app, image_count=0 + 1)
    admin = await client_for("admin")
    same = png_bytes(120, 80, seed=42)
    files = [
        ("files", ("a.png", same, "image/png")),
        ("files", ("b.png", same, "image/png")),
        ("files", ("c.tif", _tiff_bytes(), "image/tiff")),
    ]
    response = await admin.post(f"/api/v1/tasks/{setup.task.id}/images", files=files)
    assert response.status_code == 201, response.text
    created = {item["name"]: item for item in response.json()}
    assert (created["a.png"]["width"], created["a.png"]["height"]) == (120, 80)
    assert (created["c.tif"]["width"], created["c.tif"]["height"]) == (512, 512)
    stored = [path.name for path in settings.image_dir.rglob("*") if path.is_file()]
    assert len(stored) == 3  # one from make_study, one for the two identical PNGs, one TIFF
    raw = [path.name for path in (settings.data_dir / "raw").rglob("*") if path.is_file()]
    assert sorted(raw) == sorted(name.rsplit(".", 1)[0] + ".npy" for name in stored)


async def test_bad_uploads_give_4xx_and_leave_no_rows_or_files(
    app: object, client_for: ClientFactory, settings: Settings
) -> None:
    setup = await make_study(app, image_count=1)
    admin = await client_for("admin")
    before_files = _stored_files(settings)
    before_rows = await _images(admin, setup.task.id)
    tiff = _tiff_bytes()
    bad_uploads = {
        "truncated.tif": (tiff[: len(tiff) // 2], 422),
        "text.png": (b"just some text, not a picture\n" * 10, 415),
        "bomb.png": (_bomb_png(), 413),
    }
    for name, (content, status) in bad_uploads.items():
        files = [
            ("files", ("fine.png", png_bytes(seed=5), "image/png")),
            ("files", (name, content, "image/png")),
        ]
        response = await admin.post(f"/api/v1/tasks/{setup.task.id}/images", files=files)
        assert response.status_code == status, (name, response.text)
        assert name in response.json()["detail"]
    assert await _images(admin, setup.task.id) == before_rows
    assert _stored_files(settings) == before_files


async def test_oversized_upload_is_refused_before_reading(
    app: object, client_for: ClientFactory, settings: Settings
) -> None:
    setup = await make_study(app, image_count=1)
    admin = await client_for("admin")
    settings.max_upload_bytes = 1000
    response = await admin.post(
        f"/api/v1/tasks/{setup.task.id}/images",
        files=[("files", ("big.png", png_bytes(400, 400), "image/png"))],
    )
    assert response.status_code == 413
    assert len(await _images(admin, setup.task.id)) == 1


async def test_duplicate_name_in_task_is_a_conflict(app: object, client_for: ClientFactory) -> None:
    setup = await make_study(app, image_count=1)
    admin = await client_for("admin")
    files = [("files", ("img0.png", png_bytes(seed=3), "image/png"))]
    assert (await admin.post(f"/api/v1/tasks/{setup.task.id}/images", files=files)).status_code == 409


async def test_region_of_a_large_tiff_is_served_with_offset(app: object, client_for: ClientFactory) -> None:
    setup = await make_study(app, image_count=1)
    admin = await client_for("admin")
    form = {"region_x": "256", "region_y": "128", "region_width": "200", "region_height": "100"}
    response = await admin.post(
        f"/api/v1/tasks/{setup.task.id}/images",
        files=[("files", ("r.tif", _tiff_bytes(), "image/tiff"))],
        data=form,
    )
    assert response.status_code == 201, response.text
    image = response.json()[0]
    assert (image["width"], image["height"]) == (200, 100)
    png = await admin.get(f"/api/v1/images/{image['id']}/region?x=0&y=0&w=10&h=10&format=png")
    pixels = np.asarray(PILImage.open(io.BytesIO(png.content)))
    expected = (
        np.arange(512 * 512 * 3, dtype=np.uint32).reshape(512, 512, 3).astype(np.uint8)[128:138, 256:266]
    )
    assert np.array_equal(pixels, expected)
    outside = {"region_x": "400", "region_y": "0", "region_width": "200", "region_height": "10"}
    bad = await admin.post(
        f"/api/v1/tasks/{setup.task.id}/images",
        files=[("files", ("s.tif", _tiff_bytes(), "image/tiff"))],
        data=outside,
    )
    assert bad.status_code == 422
