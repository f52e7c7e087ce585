"""The demo study: its training assignments work on practice images of their own, never on study images."""

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.demo import create_demo
from app.models import GroundTruthObject, Image, InjectedError, Suggestion
from tests.conftest import ClientFactory

pytestmark = pytest.mark.slow


async def _purposes_of(
    db: AsyncSession, model: type[GroundTruthObject] | type[Suggestion] | type[InjectedError]
) -> set[str]:
    """The purposes of the images that hold rows of the model."""
    query = select(Image.purpose).join(model, model.image_id == Image.id).distinct()
    return set(await db.scalars(query))


async def test_demo_training_uses_practice_images_disjoint_from_the_study(
    app: object, settings: Settings, db: AsyncSession, client_for: ClientFactory
) -> None:
    credentials = await create_demo(settings)
    assert {name for name, _, _ in credentials} == {"admin", "expert1", "expert2"}
    assert await _purposes_of(db, GroundTruthObject) == {"study", "practice"}
    assert await _purposes_of(db, Suggestion) == {"study"}
    assert await _purposes_of(db, InjectedError) == {"study"}

    expert = await client_for("expert1")
    assignments = (await expert.get("/api/v1/assignments")).json()
    assert {item["mode"] for item in assignments} == {"training", "unaided", "aided"}
    for task_id in {item["task_id"] for item in assignments}:
        images = (await expert.get(f"/api/v1/tasks/{task_id}/images")).json()
        practice = {item["id"] for item in images if item["purpose"] == "practice"}
        study = {item["id"] for item in images if item["purpose"] == "study"}
        assert practice and study and not practice & study
        for image_id in practice:
            assert (
                await expert.get(f"/api/v1/images/{image_id}/annotations?mode=training")
            ).status_code == 200
            assert (
                await expert.get(f"/api/v1/images/{image_id}/annotations?mode=unaided")
            ).status_code == 404
        for image_id in study:
            assert (
                await expert.get(f"/api/v1/images/{image_id}/annotations?mode=training")
            ).status_code == 404

    admin = await client_for("admin")
    jobs = [job for job in (await admin.get("/api/v1/jobs")).json() if job["kind"] == "detect"]
    assert len(jobs) == 3 and {job["status"] for job in jobs} == {"succeeded"}
    page = (await admin.get("/admin/jobs")).text
    for job in jobs:
        task_id, set_id = job["params"]["task_id"], job["result"]["suggestion_set_id"]
        sets = (await admin.get(f"/api/v1/tasks/{task_id}/suggestion-sets")).json()
        assert set_id in {item["id"] for item in sets if item["source"] == "detector"}
        assert f'href="/admin/tasks/{task_id}/suggestions#set-{set_id}"' in page
