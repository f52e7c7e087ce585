"""The API with its files in a bucket: uploads land there, models made on other machines are served or
refused by what the bucket holds, never by this machine's data dir."""

import hashlib
from pathlib import Path

import pytest
from sqlalchemy import select

from app.config import Settings
from app.detectors.service import BUILTIN_DIR, model_key
from app.models import Job, TrainingRun
from app.storage import ObjectStore
from app.training.schemas import TrainExperimentParams
from app.training.service import exported_model_key
from tests.conftest import ClientFactory
from tests.factories import make_study
from tests.storage.conftest import bucket_keys


@pytest.fixture
def settings(database_url: str, tmp_path: Path, bucket: str) -> Settings:
    return Settings(
        data_dir=tmp_path / "api-machine",
        database_url=database_url,
        storage_url=f"s3://{bucket}/concord",
        argon2_time_cost=1,
        argon2_memory_kib=64,
    )


@pytest.fixture
def elsewhere(settings: Settings, tmp_path: Path) -> ObjectStore:
    """The same bucket as seen from another machine."""
    return ObjectStore(settings.storage_url, tmp_path / "other-machine" / "cache")


async def test_uploaded_images_and_their_raw_caches_land_in_the_bucket(
    app: object, settings: Settings, s3_env: dict[str, str], bucket: str
) -> None:
    setup = await make_study(app, image_count=2)
    keys = bucket_keys(s3_env, bucket)
    for image in setup.images:
        assert f"concord/images/{image.sha256[:2]}/{image.sha256}.png" in keys
        assert f"concord/raw/{image.sha256[:2]}/{image.sha256}.npy" in keys
    assert not (settings.data_dir / "images").exists()


async def test_a_training_model_exported_on_a_worker_is_served_from_the_bucket(
    app: object, client_for: ClientFactory, sessionmaker: object, elsewhere: ObjectStore
) -> None:
    setup = await make_study(app, image_count=1)
    admin = await client_for("admin")
    model = b"onnx bytes of a classifier trained elsewhere"
    sha256 = hashlib.sha256(model).hexdigest()
    elsewhere.put_bytes(exported_model_key(sha256), model)
    run_ids = []
    async with sessionmaker() as session, session.begin():  # type: ignore[operator]
        for onnx_sha256 in (sha256, "0" * 64):
            run = TrainingRun(
                study_id=setup.study.id,
                task_id=setup.task.id,
                mode="unaided",
                loss="bce",
                weighting="paper",
                experts=["alice"],
                set_name="alice",
                params={},
                history=[],
                device="cpu",
                weights_init="random",
                seconds=1.0,
                samples_per_s=1.0,
                train_samples=1,
                val_samples=1,
                onnx_path="/on/the/worker/machine/best.onnx",
                onnx_sha256=onnx_sha256,
                status="succeeded",
            )
            session.add(run)
            await session.flush()
            run_ids.append(run.id)
    served = await admin.get(f"/api/v1/training-runs/{run_ids[0]}/model.onnx")
    assert served.status_code == 200
    assert served.content == model
    assert (await admin.get(f"/api/v1/training-runs/{run_ids[1]}/model.onnx")).status_code == 404


async def test_a_detector_missing_from_the_bucket_is_refused_before_a_job_is_queued(
    app: object, client_for: ClientFactory, elsewhere: ObjectStore
) -> None:
    setup = await make_study(app, image_count=1, labels=("mitotic_figure",), kind="detect")
    admin = await client_for("admin")
    uploaded = await admin.post(
        "/api/v1/detectors",
        files={
            "model": ("detect.onnx", (BUILTIN_DIR / "detect.onnx").read_bytes()),
            "sidecar": ("detect.json", (BUILTIN_DIR / "detect.json").read_bytes()),
        },
    )
    assert uploaded.status_code == 201, uploaded.text
    detector = uploaded.json()
    assert elsewhere.exists(model_key(detector["sha256"]))
    elsewhere.delete(model_key(detector["sha256"]))
    started = await admin.post(f"/api/v1/tasks/{setup.task.id}/detect", json={"detector_id": detector["id"]})
    assert started.status_code == 409
    assert "missing from the store" in started.json()["detail"]


@pytest.mark.commits  # the job function opens an engine of its own
async def test_a_requeued_training_experiment_on_another_machine_finds_its_children(
    app: object, client_for: ClientFactory, sessionmaker: object, settings: Settings, tmp_path: Path
) -> None:
    from tests.training.helpers import training_study
    from worker.tasks import train_experiment

    built = await training_study(app, client_for)
    params = TrainExperimentParams(
        study_id=built.study_id, task_id=built.task_id, modes=["unaided"], sets="number"
    )
    first = await train_experiment._queue_children(params, settings)
    other_machine = settings.model_copy(update={"data_dir": tmp_path / "second-worker"})
    again = await train_experiment._queue_children(params, other_machine)
    assert first
    assert again == first
    async with sessionmaker() as session:  # type: ignore[operator]
        queued = (await session.scalars(select(Job.id).where(Job.kind == "train"))).all()
    assert sorted(queued) == sorted(first), "the second machine queued the children again"
