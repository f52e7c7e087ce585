"""Slides stored once per study; regions of interest become images that read the slide in place."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from app.config import Settings
from tests.conftest import ClientFactory
from tests.factories import make_study
from tests.images.slidefiles import write_svs
from tests.images.test_slide_formats import close_to, tissue

MPP = 0.25


@pytest.fixture
def svs_bytes(tmp_path: Path) -> tuple[bytes, np.ndarray]:
    pixels = tissue(3000, 2000)
    path = write_svs(tmp_path / "scan.svs", pixels, mpp=MPP)
    return path.read_bytes(), pixels


def _stored(settings: Settings) -> list[Path]:
    return [path for path in settings.image_dir.rglob("*") if path.is_file()]


async def _upload(admin: object, study_id: int, data: bytes, name: str = "scan-1") -> dict[str, object]:
    response = await admin.post(  # type: ignore[attr-defined]
        f"/api/v1/studies/{study_id}/slides", files={"file": ("x.svs", data)}, data={"name": name}
    )
    assert response.status_code == 201, response.text
    slide: dict[str, object] = response.json()
    return slide


async def test_regions_of_a_slide_become_images_without_copying_it(
    app: object, client_for: ClientFactory, settings: Settings, svs_bytes: tuple[bytes, np.ndarray]
) -> None:
    setup = await make_study(app, image_count=1)
    admin = await client_for("admin")
    data, pixels = svs_bytes
    slide = await _upload(admin, setup.study.id, data)
    assert slide["file_format"] == "svs"
    assert (slide["width"], slide["height"], slide["level_count"]) == (3000, 2000, 3)
    assert slide["microns_per_pixel"] == pytest.approx(MPP)
    files_after_upload = _stored(settings)

    body = {
        "slide_id": slide["id"],
        "regions": [
            {"name": "roi-marker", "x": 200, "y": 100, "width": 64, "height": 64},
            {"name": "roi-hpf", "center_x": 1500, "center_y": 1000, "hpf": 1},
        ],
    }
    response = await admin.post(f"/api/v1/tasks/{setup.task.id}/slide-regions", json=body)
    assert response.status_code == 201, response.text
    images = {image["name"]: image for image in response.json()}
    assert _stored(settings) == files_after_upload
    marker, hpf = images["roi-marker"], images["roi-hpf"]
    assert (marker["width"], marker["height"], marker["file_format"]) == (64, 64, "svs")
    assert marker["microns_per_pixel"] == pytest.approx(MPP)
    # One HPF is 0.237 mm²: at 0.25 µm/px that is 3 792 000 px², 4:3 wide.
    assert hpf["width"] * hpf["height"] == pytest.approx(0.237e6 / MPP**2, rel=0.01)
    assert hpf["width"] / hpf["height"] == pytest.approx(4 / 3, rel=0.01)

    tile = await admin.get(f"/api/v1/images/{marker['id']}/tiles/0/0/0?format=png")
    assert tile.status_code == 200
    read = np.asarray(PILImage.open(io.BytesIO(tile.content)).convert("RGB"))
    assert read.shape == (64, 64, 3)
    assert close_to(read, pixels[100:164, 200:264])

    listed = await admin.get(f"/api/v1/slides/{slide['id']}/regions")
    assert sorted(image["name"] for image in listed.json()) == ["roi-hpf", "roi-marker"]
    task_images = await admin.get(f"/api/v1/tasks/{setup.task.id}/images")
    assert {image["name"] for image in task_images.json()} == {"img0.png", "roi-hpf", "roi-marker"}


async def test_expert_sees_regions_but_never_the_slide(
    app: object, client_for: ClientFactory, svs_bytes: tuple[bytes, np.ndarray]
) -> None:
    setup = await make_study(app, image_count=1)
    admin, alice = await client_for("admin"), await client_for("alice")
    slide = await _upload(admin, setup.study.id, svs_bytes[0])
    body = {
        "slide_id": slide["id"],
        "regions": [{"name": "roi", "x": 0, "y": 0, "width": 500, "height": 400}],
    }
    created = (await admin.post(f"/api/v1/tasks/{setup.task.id}/slide-regions", json=body)).json()
    assert (await alice.get(f"/api/v1/images/{created[0]['id']}/tiles/0/0/0")).status_code == 200
    for path in (f"/api/v1/studies/{setup.study.id}/slides", f"/api/v1/slides/{slide['id']}/thumbnail"):
        assert (await alice.get(path)).status_code == 403


async def test_bad_regions_are_refused_all_or_nothing(
    app: object, client_for: ClientFactory, svs_bytes: tuple[bytes, np.ndarray]
) -> None:
    setup = await make_study(app, image_count=1)
    admin = await client_for("admin")
    slide = await _upload(admin, setup.study.id, svs_bytes[0])
    url = f"/api/v1/tasks/{setup.task.id}/slide-regions"
    inside = {"name": "ok", "x": 0, "y": 0, "width": 10, "height": 10}
    outside = {"name": "out", "x": 2990, "y": 0, "width": 20, "height": 10}
    response = await admin.post(url, json={"slide_id": slide["id"], "regions": [inside, outside]})
    assert response.status_code == 422
    assert "outside the 3000×2000 slide" in response.text
    both_forms = {**inside, "hpf": 10, "center_x": 5, "center_y": 5}
    assert (await admin.post(url, json={"slide_id": slide["id"], "regions": [both_forms]})).status_code == 422
    too_many_fields = {"name": "big", "center_x": 5, "center_y": 5, "hpf": 1000}
    response = await admin.post(url, json={"slide_id": slide["id"], "regions": [too_many_fields]})
    assert response.status_code == 422
    assert "do not fit" in response.text
    names = [image["name"] for image in (await admin.get(f"/api/v1/tasks/{setup.task.id}/images")).json()]
    assert names == ["img0.png"]


async def test_slide_names_are_unique_per_study_and_thumbnail_is_small(
    app: object, client_for: ClientFactory, svs_bytes: tuple[bytes, np.ndarray]
) -> None:
    setup = await make_study(app, image_count=1)
    admin = await client_for("admin")
    slide = await _upload(admin, setup.study.id, svs_bytes[0])
    again = await admin.post(
        f"/api/v1/studies/{setup.study.id}/slides",
        files={"file": ("x.svs", svs_bytes[0])},
        data={"name": "scan-1"},
    )
    assert again.status_code == 409
    thumbnail = await admin.get(f"/api/v1/slides/{slide['id']}/thumbnail?max_side=300")
    assert thumbnail.status_code == 200
    assert PILImage.open(io.BytesIO(thumbnail.content)).size == (300, 200)
    listed = await admin.get(f"/api/v1/studies/{setup.study.id}/slides")
    assert [item["name"] for item in listed.json()] == ["scan-1"]


async def test_a_text_file_is_not_a_slide(app: object, client_for: ClientFactory) -> None:
    setup = await make_study(app, image_count=1)
    admin = await client_for("admin")
    response = await admin.post(
        f"/api/v1/studies/{setup.study.id}/slides", files={"file": ("x.mrxs", b"[GENERAL]\nSLIDE_ID=1\n")}
    )
    assert response.status_code == 415
