"""A detect task of phantom images with ground truth, candidates and three experts' labels, built through the API."""

import io
from dataclasses import dataclass

import numpy as np
from httpx import AsyncClient
from PIL import Image as PILImage

from app.phantoms import DETECT_LABELS, Phantom, detect_region
from tests.conftest import ClientFactory
from tests.factories import make_user

LABEL = DETECT_LABELS[0]
SEEDS = (1, 2, 3, 6, 7)  # 800 × 800 px regions with 1–3 mitotic figures each; the last one is held out
SIDE = 800
EXPERTS = ("e1", "e2", "e10")


@dataclass
class TrainingStudy:
    study_id: int
    task_id: int
    figures: int


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _box(obj: object, shift: float = 0.0) -> dict[str, float]:
    if max(obj.x2, obj.y2) + shift > SIDE:  # type: ignore[attr-defined]
        shift = 0.0
    return {
        "x1": float(obj.x1) + shift,  # type: ignore[attr-defined]
        "y1": float(obj.y1) + shift,  # type: ignore[attr-defined]
        "x2": float(obj.x2) + shift,  # type: ignore[attr-defined]
        "y2": float(obj.y2) + shift,  # type: ignore[attr-defined]
    }


async def training_study(app: object, client_for: ClientFactory) -> TrainingStudy:
    """Experts e1 (every figure), e2 (all but the first), e10 (every other figure and one look-alike)."""
    await make_user(app, "admin", "admin")
    for name in EXPERTS:
        await make_user(app, name)
    admin = await client_for("admin")
    study = (await admin.post("/api/v1/studies", json={"name": "training study"})).json()
    task = (
        await admin.post(
            f"/api/v1/studies/{study['id']}/tasks",
            json={"name": "mitoses", "kind": "detect", "labels": [{"name": LABEL}]},
        )
    ).json()
    phantoms = [detect_region(seed, SIDE, SIDE) for seed in SEEDS]
    files = [("files", (f"hpf-{i}.png", _png(p.image), "image/png")) for i, p in enumerate(phantoms)]
    assert (await admin.post(f"/api/v1/tasks/{task['id']}/images", files=files)).status_code == 201
    images = {
        item["name"]: item["id"] for item in (await admin.get(f"/api/v1/tasks/{task['id']}/images")).json()
    }
    truth = [
        {"image": f"hpf-{i}.png", "label": LABEL, **_box(obj)}
        for i, p in enumerate(phantoms)
        for obj in p.objects
    ]
    assert (
        await admin.post(f"/api/v1/tasks/{task['id']}/ground-truth", json={"objects": truth})
    ).status_code == 201
    candidates = [
        {"image": f"hpf-{i}.png", "label": LABEL, "score": 0.5, **_box(obj)}
        for i, p in enumerate(phantoms)
        for obj in (*p.objects, *p.distractors)
    ]
    created = await admin.post(
        f"/api/v1/tasks/{task['id']}/suggestion-sets", json={"name": "candidates", "suggestions": candidates}
    )
    assert created.status_code == 201, created.text
    for name in EXPERTS:
        assigned = await admin.post(
            "/api/v1/assignments", json={"task_id": task["id"], "expert": name, "mode": "unaided"}
        )
        assert assigned.status_code == 201, assigned.text
        await _annotate(await client_for(name), name, phantoms, images)
    return TrainingStudy(study["id"], task["id"], sum(len(p.objects) for p in phantoms))


async def _annotate(client: AsyncClient, name: str, phantoms: list[Phantom], images: dict[str, int]) -> None:
    figure_number = 0
    for index, phantom in enumerate(phantoms):
        boxes = []
        for obj in phantom.objects:
            keep = {"e1": True, "e2": figure_number > 0, "e10": figure_number % 2 == 0}[name]
            if keep:
                boxes.append({"label": LABEL, **_box(obj, shift=2.0 if name == "e2" else 0.0)})
            figure_number += 1
        if name == "e10" and index == 0 and phantom.distractors:
            boxes.append({"label": LABEL, **_box(phantom.distractors[0])})
        if boxes:
            response = await client.post(
                f"/api/v1/images/{images[f'hpf-{index}.png']}/annotations/bulk?mode=unaided", json=boxes
            )
            assert response.status_code == 201, response.text
