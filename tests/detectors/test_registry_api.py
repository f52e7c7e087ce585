"""Detector upload over the API: contract validation, storage by sha256, clear 4xx refusals, roles."""

import hashlib
import json

import pytest
from httpx import AsyncClient, Response

from app.config import Settings
from app.detectors import repository
from tests.conftest import ClientFactory
from tests.detectors.helpers import shipped, stored_files, wrong_outputs_model
from tests.factories import make_user


async def upload(client: AsyncClient, model: bytes, sidecar: object, name: str | None = None) -> Response:
    files = {"model": ("model.onnx", model, "application/octet-stream")}
    data = {"name": name} if name else {}
    if isinstance(sidecar, bytes):
        files["sidecar"] = ("model.json", sidecar, "application/json")
    else:
        data["sidecar"] = json.dumps(sidecar)
    return await client.post("/api/v1/detectors", files=files, data=data)


async def test_shipped_model_is_registered_once_and_stored_by_sha(
    app: object, client_for: ClientFactory, settings: Settings
) -> None:
    await make_user(app, "admin", "admin")
    admin = await client_for("admin")
    model, sidecar = shipped("classify")
    sha = hashlib.sha256(model).hexdigest()

    first = await upload(admin, model, json.dumps(sidecar).encode(), name="classify v1")
    assert first.status_code == 201, first.text
    body = first.json()
    assert body["sha256"] == sha
    assert body["name"] == "classify v1"
    assert body["sidecar"]["class_names"] == sidecar["class_names"]
    assert (settings.model_dir / f"{sha}.onnx").read_bytes() == model

    again = await upload(admin, model, sidecar)
    assert again.status_code == 200
    assert again.json()["id"] == body["id"]
    listed = (await admin.get("/api/v1/detectors")).json()
    assert [row["id"] for row in listed] == [body["id"]]
    one = await admin.get(f"/api/v1/detectors/{body['id']}")
    assert one.status_code == 200
    assert one.json()["sha256"] == sha
    assert (await admin.get("/api/v1/detectors/999999")).status_code == 404


async def assert_rejected(
    admin: AsyncClient, settings: Settings, model: bytes, sidecar: object, words: str
) -> None:
    response = await upload(admin, model, sidecar)
    assert response.status_code == 422, response.text
    assert words in response.json()["detail"]
    assert stored_files(settings.model_dir) == []
    assert (await admin.get("/api/v1/detectors")).json() == []


async def test_random_bytes_are_rejected_and_nothing_is_stored(
    app: object, client_for: ClientFactory, settings: Settings
) -> None:
    await make_user(app, "admin", "admin")
    admin = await client_for("admin")
    _, sidecar = shipped("classify")
    await assert_rejected(
        admin, settings, b"\x00not an onnx model" * 50, sidecar, "not a loadable ONNX model"
    )
    await assert_rejected(admin, settings, b"", sidecar, "empty")


async def test_model_with_wrong_outputs_is_rejected(
    app: object, client_for: ClientFactory, settings: Settings
) -> None:
    await make_user(app, "admin", "admin")
    admin = await client_for("admin")
    _, sidecar = shipped("classify")
    await assert_rejected(admin, settings, wrong_outputs_model(512), sidecar, "lacks outputs")


async def test_bad_sidecars_are_rejected(app: object, client_for: ClientFactory, settings: Settings) -> None:
    await make_user(app, "admin", "admin")
    admin = await client_for("admin")
    model, sidecar = shipped("classify")
    await assert_rejected(admin, settings, model, b"{not json", "not valid JSON")
    await assert_rejected(admin, settings, model, b"[1, 2]", "expected a JSON object")
    overlapping = {**sidecar, "tile_overlap": sidecar["tile_size"]}
    await assert_rejected(admin, settings, model, overlapping, "tile_overlap")
    unmapped = {**sidecar, "label_map": {"neutrophil": "neutrophil"}}
    await assert_rejected(admin, settings, model, unmapped, "label_map has no task label")
    wrong_size = {**sidecar, "input_size": 256, "tile_size": 256, "tile_overlap": 64}
    await assert_rejected(admin, settings, model, wrong_size, "does not fit input_size")


async def test_experts_may_not_see_or_upload_detectors(app: object, client_for: ClientFactory) -> None:
    await make_user(app, "admin", "admin")
    await make_user(app, "erin", "expert")
    admin, expert = await client_for("admin"), await client_for("erin")
    model, sidecar = shipped("grade")
    created = (await upload(admin, model, sidecar)).json()
    assert (await upload(expert, model, sidecar)).status_code == 403
    assert (await expert.get("/api/v1/detectors")).status_code == 403
    assert (await expert.get(f"/api/v1/detectors/{created['id']}")).status_code == 403
    anonymous = await expert.get("/api/v1/detectors", headers={"Authorization": ""})
    assert anonymous.status_code == 401


async def test_an_upload_that_loses_the_race_for_the_same_bytes_answers_the_winners_row(
    app: object, client_for: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    await make_user(app, "admin", "admin")
    admin = await client_for("admin")
    model, sidecar = shipped("classify")
    first = (await upload(admin, model, sidecar)).json()

    looked_up = []

    async def not_yet_committed(session: object, sha256: str) -> object:
        """The first look-up misses the row, as in a request that checked before the other committed."""
        looked_up.append(sha256)
        return None if len(looked_up) == 1 else await by_sha256(session, sha256)  # type: ignore[arg-type]

    by_sha256 = repository.detector_by_sha256
    monkeypatch.setattr(repository, "detector_by_sha256", not_yet_committed)
    again = await upload(admin, model, sidecar)

    assert again.status_code == 200, again.text
    assert again.json()["id"] == first["id"]
    assert len(looked_up) == 2
    assert [row["id"] for row in (await admin.get("/api/v1/detectors")).json()] == [first["id"]]
