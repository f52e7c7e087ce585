"""The detect job end to end on CPU through the worker's task function, and its refusals."""

import asyncio
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import make_engine
from app.detectors import service
from app.detectors.inference import detect_images
from app.errors import Invalid
from app.images.service import NewImage, add_images
from app.images.tiles import Window
from app.models import GroundTruthObject, Job, SuggestionSet, Task
from app.phantoms import (
    CLASSIFY_LABELS,
    DETECT_LABELS,
    Phantom,
    classify_patch,
    detect_region,
    write_pyramidal_tiff,
)
from app.studies import service as studies
from app.studies.schemas import LabelIn, StudyCreate, TaskCreate
from app.suggestions import repository as suggestions_repository
from app.suggestions import service as suggestions_service
from tests.conftest import ClientFactory
from tests.detectors.helpers import box_iou, png
from tests.factories import make_study, make_user
from worker.tasks import detect, detector_train

# the job functions open an engine of their own, as in the worker's child process
pytestmark = pytest.mark.commits

Maker = async_sessionmaker[AsyncSession]


@dataclass
class PhantomTask:
    task_id: int
    truth: dict[str, list[tuple[str, tuple[float, float, float, float]]]]


class Progress:
    def __init__(self) -> None:
        self.calls: list[tuple[float, str]] = []

    def __call__(self, fraction: float, message: str = "") -> None:
        self.calls.append((fraction, message))


@pytest.fixture
def worker_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The job function builds its settings from the environment, as in the worker's child process."""
    monkeypatch.setenv("CONCORD_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CONCORD_DATABASE_URL", settings.resolved_database_url)
    return settings


async def phantom_task(
    maker: Maker,
    settings: Settings,
    kind: str,
    labels: tuple[str, ...],
    images: list[tuple[NewImage, Phantom]],
) -> PhantomTask:
    truth: dict[str, list[tuple[str, tuple[float, float, float, float]]]] = {}
    async with maker() as session, session.begin():
        study = await studies.create_study(session, StudyCreate(name=f"phantoms {kind}"))
        data = TaskCreate(name=f"{kind} task", kind=kind, labels=[LabelIn(name=name) for name in labels])
        task, label_rows = await studies.create_task(session, study, data)
        by_name = {label.name: label for label in label_rows}
        rows = await add_images(session, settings, task, [item for item, _ in images])
        for image, (item, phantom) in zip(rows, images, strict=True):
            dx, dy = (item.window.x, item.window.y) if item.window else (0, 0)
            for obj in phantom.objects:
                box = (obj.x1 - dx, obj.y1 - dy, obj.x2 - dx, obj.y2 - dy)
                if box[0] < 0 or box[1] < 0 or box[2] > image.width or box[3] > image.height:
                    continue
                truth.setdefault(image.name, []).append((obj.label, box))
                session.add(
                    GroundTruthObject(
                        image_id=image.id,
                        label_id=by_name[obj.label].id,
                        x1=box[0],
                        y1=box[1],
                        x2=box[2],
                        y2=box[3],
                    )
                )
    return PhantomTask(task.id, truth)


async def suggestions_of(
    maker: Maker, set_id: int
) -> tuple[SuggestionSet, list[tuple[str, str, tuple[float, ...]]]]:
    async with maker() as session:
        suggestion_set = await session.get(SuggestionSet, set_id)
        assert suggestion_set is not None
        detail = await suggestions_service.set_detail(session, suggestion_set)
    return suggestion_set, [
        (row.image, row.label, (row.x1, row.y1, row.x2, row.y2)) for row in detail.suggestions
    ]


def recall(
    truth: dict[str, list[tuple[str, Any]]], found: list[tuple[str, str, Any]], min_iou: float
) -> float:
    total = hits = 0
    for image, objects in truth.items():
        boxes = [box for name, _, box in found if name == image]
        for _, box in objects:
            total += 1
            hits += any(box_iou(box, other) >= min_iou for other in boxes)
    return hits / max(total, 1)


async def run_job(maker: Maker, job_id: int, progress: Progress) -> dict[str, Any]:
    async with maker() as session:
        job = await session.get(Job, job_id)
        assert job is not None
        assert job.kind == "detect"
        params = dict(job.params)
    return await asyncio.to_thread(detect.run, params, progress)


async def test_detect_job_on_patches_finds_the_ground_truth(
    app: object, client_for: ClientFactory, sessionmaker: Maker, worker_env: Settings
) -> None:
    await make_user(app, "admin", "admin")
    admin = await client_for("admin")
    phantoms = [classify_patch(seed, 512) for seed in (101, 102, 103)]
    items = [(NewImage(f"patch-{i}.png", io.BytesIO(png(p.image))), p) for i, p in enumerate(phantoms)]
    setup = await phantom_task(sessionmaker, worker_env, "classify", CLASSIFY_LABELS, items)
    async with sessionmaker() as session, session.begin():
        detector = (await service.ensure_builtin_detectors(session, worker_env))["classify"]

    started = await admin.post(f"/api/v1/tasks/{setup.task_id}/detect", json={"detector_id": detector.id})
    assert started.status_code == 202, started.text
    job_id = started.json()["job_id"]
    job = (await admin.get(f"/api/v1/jobs/{job_id}")).json()
    assert job["kind"] == "detect"
    assert job["status"] == "queued"
    assert job["params"] == {"task_id": setup.task_id, "detector_id": detector.id}

    progress = Progress()
    result = await run_job(sessionmaker, job_id, progress)

    assert result["images"] == 3
    assert result["provider"] == "CPUExecutionProvider"
    assert result["model_sha256"] == detector.sha256
    assert result["images_per_second"] > 0
    image_reports = [message for _, message in progress.calls if message.startswith("image ")]
    assert len(image_reports) == 3
    assert progress.calls[-1][0] == 1.0
    suggestion_set, found = await suggestions_of(sessionmaker, result["suggestion_set_id"])
    assert suggestion_set.source == "detector"
    assert suggestion_set.detector_model_id == detector.id
    assert suggestion_set.provider == "CPUExecutionProvider"
    assert suggestion_set.images_per_second == pytest.approx(result["images_per_second"])
    assert detector.sha256 in suggestion_set.notes
    assert len(found) == result["detections"] > 0
    assert {label for _, label, _ in found} <= set(CLASSIFY_LABELS)
    assert recall(setup.truth, found, 0.5) >= 0.7


async def test_detect_job_reads_a_tiff_region_lazily_and_finds_mitoses(
    app: object, sessionmaker: Maker, worker_env: Settings, tmp_path: Path
) -> None:
    phantom = detect_region(11, 2200, 1700)
    tiff = tmp_path / "region.tif"
    write_pyramidal_tiff(tiff, phantom.image, mpp=0.25)
    window = Window(100, 60, 2000, 1500)
    with tiff.open("rb") as stream:
        setup = await phantom_task(
            sessionmaker,
            worker_env,
            "detect",
            DETECT_LABELS,
            [(NewImage("hpf", stream, window=window), phantom)],
        )
    async with sessionmaker() as session, session.begin():
        detector = (await service.ensure_builtin_detectors(session, worker_env))["detect"]
    params = {"task_id": setup.task_id, "detector_id": detector.id, "batch_size": 4, "name": "mitoses"}
    result = await asyncio.to_thread(detect.run, params, Progress())
    suggestion_set, found = await suggestions_of(sessionmaker, result["suggestion_set_id"])
    assert suggestion_set.name == "mitoses"
    assert all(0 <= box[0] < box[2] <= 2000 and 0 <= box[1] < box[3] <= 1500 for _, _, box in found)
    assert setup.truth["hpf"], "the phantom region has mitotic figures"
    assert recall(setup.truth, found, 0.3) >= 0.5


async def test_labels_that_do_not_fit_are_refused_by_the_api_and_fail_the_job(
    app: object, client_for: ClientFactory, sessionmaker: Maker, worker_env: Settings
) -> None:
    setup = await make_study(app, labels=("tumor", "normal"))
    admin = await client_for("admin")
    async with sessionmaker() as session, session.begin():
        detector = (await service.ensure_builtin_detectors(session, worker_env))["classify"]
    refused = await admin.post(f"/api/v1/tasks/{setup.task.id}/detect", json={"detector_id": detector.id})
    assert refused.status_code == 422
    assert "label_map maps to labels the task does not have" in refused.json()["detail"]
    assert (await admin.get("/api/v1/jobs", params={"kind": "detect"})).json() == []
    missing = await admin.post(f"/api/v1/tasks/{setup.task.id}/detect", json={"detector_id": 99999})
    assert missing.status_code == 404
    with pytest.raises(Invalid, match="does not fit task"):
        await asyncio.to_thread(
            detect.run, {"task_id": setup.task.id, "detector_id": detector.id}, Progress()
        )


async def test_experts_may_not_start_detection(
    app: object, client_for: ClientFactory, sessionmaker: Maker, worker_env: Settings
) -> None:
    setup = await make_study(app, labels=CLASSIFY_LABELS)
    expert = await client_for(setup.experts[0].name)
    async with sessionmaker() as session, session.begin():
        detector = (await service.ensure_builtin_detectors(session, worker_env))["classify"]
    response = await expert.post(f"/api/v1/tasks/{setup.task.id}/detect", json={"detector_id": detector.id})
    assert response.status_code == 403


async def test_builtin_detectors_are_registered_once(sessionmaker: Maker, settings: Settings) -> None:
    async with sessionmaker() as session, session.begin():
        first = await service.ensure_builtin_detectors(session, settings)
    async with sessionmaker() as session, session.begin():
        second = await service.ensure_builtin_detectors(session, settings)
    assert set(first) == {"classify", "grade", "detect"}
    assert {kind: row.id for kind, row in first.items()} == {kind: row.id for kind, row in second.items()}
    assert all(service.model_path(settings, row.sha256).is_file() for row in first.values())


async def test_detector_train_job_registers_what_it_trained(
    sessionmaker: Maker, worker_env: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fake_train(kind: str, seed: int, out_dir: Path) -> Path:
        """Stands in for minutes of torch training: 'trains' by copying the shipped files."""
        for suffix in (".onnx", ".json"):
            (out_dir / f"{kind}{suffix}").write_bytes((service.BUILTIN_DIR / f"{kind}{suffix}").read_bytes())
        return out_dir / f"{kind}.onnx"

    monkeypatch.setattr(detector_train, "train", fake_train)
    progress = Progress()
    result = await asyncio.to_thread(detector_train.run, {"kind": "grade", "seed": 3}, progress)
    [entry] = result["detectors"]
    assert entry["kind"] == "grade"
    assert entry["created"] is True
    async with sessionmaker() as session:
        row = await service.get_detector(session, entry["detector_id"])
    assert row.sha256 == entry["sha256"]
    assert row.sidecar["task_kind"] == "grade"
    assert service.model_path(worker_env, row.sha256).is_file()
    with pytest.raises(ValueError, match="kind must be one of"):
        detector_train.run({"kind": "segment"}, progress)


async def test_run_detection_refuses_a_task_without_images(sessionmaker: Maker, settings: Settings) -> None:
    async with sessionmaker() as session, session.begin():
        study = await studies.create_study(session, StudyCreate(name="empty"))
        data = TaskCreate(name="empty", kind="grade", labels=[LabelIn(name=n) for n in "01234"])
        task, _ = await studies.create_task(session, study, data)
        detector = (await service.ensure_builtin_detectors(session, settings))["grade"]
        with pytest.raises(Invalid, match="no images"):
            await service.run_detection(session, settings, task, detector)
    assert isinstance(task, Task)
    async with sessionmaker() as session:
        assert await suggestions_repository.sets_of_task(session, task.id) == []


class TransactionWatch:
    """Counts the transactions open on the engines the job makes, and notes them while the model runs."""

    def __init__(self) -> None:
        self.engines: list[AsyncEngine] = []
        self.open = 0
        self.while_inferring: list[tuple[int, int]] = []

    def make_engine(self, url: str) -> AsyncEngine:
        engine = make_engine(url)
        event.listen(engine.sync_engine, "begin", self._began)
        event.listen(engine.sync_engine, "commit", self._ended)
        event.listen(engine.sync_engine, "rollback", self._ended)
        self.engines.append(engine)
        return engine

    def _began(self, _connection: object) -> None:
        self.open += 1

    def _ended(self, _connection: object) -> None:
        self.open -= 1

    def detect_images(self, *args: Any) -> None:
        checked_out = sum(engine.sync_engine.pool.checkedout() for engine in self.engines)  # type: ignore[attr-defined]
        self.while_inferring.append((self.open, checked_out))
        detect_images(*args)


async def one_patch_task(maker: Maker, settings: Settings) -> tuple[int, dict[str, Any]]:
    phantom = classify_patch(104, 512)
    setup = await phantom_task(
        maker,
        settings,
        "classify",
        CLASSIFY_LABELS,
        [(NewImage("patch.png", io.BytesIO(png(phantom.image))), phantom)],
    )
    async with maker() as session, session.begin():
        detector = (await service.ensure_builtin_detectors(session, settings))["classify"]
    return setup.task_id, {"task_id": setup.task_id, "detector_id": detector.id}


async def test_detect_job_infers_with_no_transaction_open(
    app: object, sessionmaker: Maker, worker_env: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id, params = await one_patch_task(sessionmaker, worker_env)
    watch = TransactionWatch()
    monkeypatch.setattr(detect, "make_engine", watch.make_engine)
    monkeypatch.setattr(service, "detect_images", watch.detect_images)

    result = await asyncio.to_thread(detect.run, params, Progress())

    assert watch.while_inferring == [(0, 0)], "no transaction and no connection held while the model runs"
    assert watch.open == 0
    async with sessionmaker() as session:
        [stored] = await suggestions_repository.sets_of_task(session, task_id)
    assert stored.id == result["suggestion_set_id"]
    assert result["detections"] > 0


async def test_a_failure_while_inferring_writes_nothing(
    app: object, sessionmaker: Maker, worker_env: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    task_id, params = await one_patch_task(sessionmaker, worker_env)

    def fails_after_the_first_image(*args: Any) -> None:
        on_image = args[-1]
        on_image(0, [])
        raise RuntimeError("the accelerator fell over")

    monkeypatch.setattr(service, "detect_images", fails_after_the_first_image)
    with pytest.raises(RuntimeError, match="fell over"):
        await asyncio.to_thread(detect.run, params, Progress())
    async with sessionmaker() as session:
        assert await suggestions_repository.sets_of_task(session, task_id) == []
