"""`concord train run` end to end on CPU: phantom detect task, experts' labels through the API, both losses.

Tiny sizes (32-px patches, one epoch per stage, one repeat) keep it CPU-sized; the accuracy it reaches is not
the point, the pipeline is: samples from votes, cached patches, training, records, ONNX matching torch.
"""

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from app.cli import main  # noqa: E402
from app.config import Settings  # noqa: E402
from app.training.schemas import TrainParams  # noqa: E402
from tests.conftest import ClientFactory  # noqa: E402
from tests.training.helpers import training_study  # noqa: E402
from worker.tasks.train import run_training  # noqa: E402
from worker.training.engine import TrainingStopped  # noqa: E402

# the CLI and the training job open engines of their own
pytestmark = pytest.mark.commits

TINY = ["--epochs", "1", "--repeats", "1", "--patch-size", "32", "--batch-size", "16"]
TINY += ["--background-per-image", "4", "--device", "cpu"]
RUN_KEYS = {
    "loss", "mode", "experts", "best_val_accuracy", "best_epoch", "device", "onnx_path", "samples_per_s", "weights_init",
}  # fmt: skip


@pytest.fixture
def worker_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("CONCORD_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CONCORD_DATABASE_URL", settings.resolved_database_url)
    return settings


def _best_model(checkpoint: Path) -> Any:
    model = torchvision.models.resnet18(weights=None, num_classes=1)
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=False)["best_model"])
    return model.eval()


async def test_train_run_with_both_losses_records_runs_and_exports_matching_onnx(
    app: object, client_for: ClientFactory, worker_env: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    built = await training_study(app, client_for)
    command = [
        "train",
        "run",
        "--study",
        "training study",
        "--task",
        "mitoses",
        "--mode",
        "unaided",
        "--json",
    ]
    code = await asyncio.to_thread(main, [*command, *TINY])
    assert code == 0
    output = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(output) == {"runs", "mean_best_val_accuracy"}
    assert [run["loss"] for run in output["runs"]] == ["bce", "votes"]
    for run in output["runs"]:
        assert set(run) == RUN_KEYS
        assert run["experts"] == ["e1", "e2", "e10"]  # natural name order
        assert run["mode"] == "unaided"
        assert run["device"] == "cpu"
        assert run["best_epoch"] in (1, 2)
        assert 0.0 <= run["best_val_accuracy"] <= 1.0
        assert run["samples_per_s"] > 0
        assert run["weights_init"] == "random (seed 0)"
        assert Path(run["onnx_path"]).is_file()
    assert output["mean_best_val_accuracy"] == {
        run["loss"]: run["best_val_accuracy"] for run in output["runs"]
    }

    admin = await client_for("admin")
    runs = (await admin.get(f"/api/v1/studies/{built.study_id}/training-runs")).json()
    assert [(run["loss"], run["weighting"], len(run["history"])) for run in runs] == [
        ("bce", "paper", 2),
        ("votes", "paper", 2),
    ]
    assert [record["stage"] for record in runs[0]["history"]] == ["frozen", "unfrozen"]
    assert runs[0]["train_samples"] == runs[1]["train_samples"] > 0
    for run in runs:
        onnx_path = Path(run["onnx_path"])
        assert hashlib.sha256(onnx_path.read_bytes()).hexdigest() == run["onnx_sha256"]
        patches = torch.randn(12, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        with torch.inference_mode():
            expected = _best_model(Path(run["checkpoint_path"]))(patches).numpy()
        got = session.run(None, {session.get_inputs()[0].name: patches.numpy()})[0]
        assert np.abs(got - expected).max() <= 1e-4
    download = await admin.get(f"/api/v1/training-runs/{runs[0]['id']}/model.onnx")
    assert download.status_code == 200
    assert download.content == Path(runs[0]["onnx_path"]).read_bytes()
    csv_lines = (await admin.get(f"/api/v1/studies/{built.study_id}/training-runs.csv")).text.splitlines()
    assert len(csv_lines) == 3
    assert csv_lines[0].startswith("id,job_id,task_id,mode,loss")


async def test_a_stopped_run_resumes_after_its_last_finished_epoch(
    app: object, client_for: ClientFactory, worker_env: Settings
) -> None:
    built = await training_study(app, client_for)
    params = TrainParams(
        study_id=built.study_id,
        task_id=built.task_id,
        mode="unaided",
        experts="first:2",
        loss="votes",
        epochs_frozen=1,
        epochs_unfrozen=1,
        batch_size=8,
        patch_size=32,
        repeats=1,
        background_per_image=4,
        device="cpu",
    )
    messages: list[str] = []

    def progress(fraction: float, message: str) -> None:
        messages.append(message)

    def stop_in_second_epoch() -> bool:
        return any("epoch 2/2" in message for message in messages)

    with pytest.raises(TrainingStopped):
        await asyncio.to_thread(run_training, params, worker_env, progress, stop_in_second_epoch)
    first = await asyncio.to_thread(run_training, params, worker_env, progress)
    run = first["runs"][0]
    assert run["resumed_after_epoch"] == 1
    assert [record["epoch"] for record in run["history"]] == [1, 2]
    assert run["experts"] == ["e1", "e2"]
    assert first["patch_cache_hit"] is True
    again = await asyncio.to_thread(run_training, params, worker_env, progress)
    assert again["runs"] == first["runs"]  # a finished repeat is neither trained nor recorded again
    admin = await client_for("admin")
    assert len((await admin.get(f"/api/v1/studies/{built.study_id}/training-runs")).json()) == 1
