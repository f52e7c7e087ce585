"""The demo study: its training assignments work on practice images of their own, never on study images."""

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.demo import DEMO_TASKS, create_demo, queue_demo_training
from app.models import GroundTruthObject, Image, InjectedError, Job, JobStatus, Suggestion
from app.training import repository as training_repository
from app.training import service as training_service
from app.training.schemas import TrainExperimentParams
from tests.conftest import ClientFactory

# commits: the demo commands open an engine of their own
pytestmark = [pytest.mark.slow, pytest.mark.commits]
SMALL_CLASSIFY_TASK = next(spec.name for spec in DEMO_TASKS if spec.kind == "classify")


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
        assert practice
        assert study
        assert not practice & study
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
    assert len(jobs) == 3
    assert {job["status"] for job in jobs} == {"succeeded"}
    page = (await admin.get("/admin/jobs")).text
    for job in jobs:
        task_id, set_id = job["params"]["task_id"], job["result"]["suggestion_set_id"]
        sets = (await admin.get(f"/api/v1/tasks/{task_id}/suggestion-sets")).json()
        assert set_id in {item["id"] for item in sets if item["source"] == "detector"}
        assert f'href="/admin/tasks/{task_id}/suggestions#set-{set_id}"' in page


async def test_demo_with_simulated_experts_opens_on_a_finished_study(
    app: object, settings: Settings, db: AsyncSession, client_for: ClientFactory
) -> None:
    """A small demo (one task, five patches, two simulated experts) as `concord demo` builds the full one."""
    from app.demo import DEMO_STUDY
    from app.models import Annotation, User
    from tests.simulation.helpers import SMALL_CLASSIFY, SMALL_PATCHES

    credentials = await create_demo(
        settings, patches=SMALL_PATCHES, shape=SMALL_CLASSIFY, simulated_experts=2, speedup=2000
    )
    assert {name for name, _, _ in credentials} == {"admin", "expert1", "expert2"}
    again = await create_demo(settings, patches=SMALL_PATCHES, shape=SMALL_CLASSIFY, simulated_experts=2)
    assert {name for name, _, _ in again} == {"admin", "expert1", "expert2"}  # simulated once, logins fresh

    admin = await client_for("admin")
    study = next(item for item in (await admin.get("/api/v1/studies")).json() if item["name"] == DEMO_STUDY)
    assert study["simulated"] is True
    metrics = (await admin.get(f"/api/v1/studies/{study['id']}/metrics")).json()
    assert metrics["simulated"] is True
    (task,) = metrics["tasks"].values()
    for mode in ("unaided", "aided"):
        experts = task["modes"][mode]["experts"]
        assert len(experts) == 2
        assert all(value["concordance"] > 0 and value["seconds_per_image"] > 0 for value in experts.values())
    assert task["statistics"]["concordance"]["paired_df"] == 1
    page = await admin.get(f"/studies/{study['id']}/evaluation")
    assert page.status_code == 200
    assert "Simulated study" in page.text
    assert "needs at least 2 experts" not in page.text

    untouched = await db.scalar(select(User).where(User.name == "expert1"))
    assert untouched is not None
    assert await db.scalar(select(Annotation.id).where(Annotation.expert_id == untouched.id)) is None
    expert = await client_for("expert1")
    assert {item["status"] for item in (await expert.get("/api/v1/assignments")).json()} == {"open"}

    # plan the next study from this one: the population fitted to its results
    query = f"kind=classify&experts=2,4&images=3&repetitions=30&fit_study={study['id']}"
    plan = await admin.get(f"/admin/plan?{query}")
    assert plan.status_code == 200, plan.text
    assert 'id="plan-fit-quality"' in plan.text
    assert 'id="plan-table"' in plan.text
    assert (await admin.get(f"/admin/plan/figure.svg?{query}")).status_code == 200
    wrong_kind = await admin.get(f"/admin/plan?kind=grade&experts=2&images=3&fit_study={study['id']}")
    assert wrong_kind.status_code == 422
    assert "fitting needs one" in wrong_kind.text

    # the paper's training experiment is queued for the worker (BCE vs VotesLoss on the simulated experts)
    job_id = await queue_demo_training(settings, 0, task_name=SMALL_CLASSIFY_TASK)
    assert job_id is not None
    assert await queue_demo_training(settings, 0, task_name=SMALL_CLASSIFY_TASK) is None  # queued once
    job = await db.get(Job, job_id)
    assert job is not None
    assert job.kind == "train_experiment"
    assert job.status == JobStatus.queued
    params = TrainExperimentParams.model_validate(job.params)
    annotating: dict[str, list[str]] = {
        mode: list(await training_repository.annotating_experts(db, params.task_id, mode))
        for mode in params.modes
    }
    assert all(len(names) == 2 and "expert1" not in names for names in annotating.values())
    planned = training_service.experiment_jobs(params, annotating)
    assert sorted((child["mode"], child["loss"]) for child in planned) == sorted(
        (mode, loss) for mode in ("unaided", "aided") for loss in ("bce", "votes")
    )
