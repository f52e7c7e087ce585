"""The shipped detectors meet their quality targets on held-out phantom images, CPU end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from app.detectors.contract import DetectorSidecar, validate_detector
from app.detectors.inference import Detection, detect_image, make_session
from app.geometry import CONTINUOUS, iou_matrix
from app.models import TaskKind
from app.phantoms import GRADE_LABELS
from worker.detector.dataset import Sample, make_samples
from worker.detector.model import CenterNet
from worker.detector.train import (
    HELD_OUT_SEED,
    QualityReport,
    TrainConfig,
    main,
    measure_quality,
    run_detector,
    train_one_epoch,
)

MODEL_DIR = Path(__file__).resolve().parents[2] / "app" / "detector_models"


def held_out(kind: TaskKind, count: int) -> list[Sample]:
    return make_samples(kind, range(HELD_OUT_SEED, HELD_OUT_SEED + count))


@pytest.fixture(scope="module")
def classify_report() -> QualityReport:
    return measure_quality(MODEL_DIR / "classify.onnx", held_out(TaskKind.classify, 6))


@pytest.mark.parametrize("kind", [kind.value for kind in TaskKind])
def test_shipped_models_meet_the_contract_and_stay_small(kind: str) -> None:
    model_bytes = (MODEL_DIR / f"{kind}.onnx").read_bytes()
    sidecar = DetectorSidecar.model_validate_json((MODEL_DIR / f"{kind}.json").read_text(encoding="utf-8"))

    validated = validate_detector(model_bytes, sidecar.model_dump(mode="json"))

    assert validated.sidecar.task_kind == kind
    assert len(model_bytes) < 3_000_000


def test_classify_finds_cells_and_names_their_type(classify_report: QualityReport) -> None:
    assert classify_report.objects >= 40
    assert classify_report.recall >= 0.90
    assert classify_report.precision >= 0.85
    assert classify_report.label_accuracy >= 0.90


def test_grade_finds_cells_and_grades_most_right() -> None:
    report = measure_quality(MODEL_DIR / "grade.onnx", held_out(TaskKind.grade, 10))

    assert report.objects >= 40
    assert report.recall >= 0.90
    assert report.precision >= 0.85
    assert report.label_accuracy >= 0.60


def test_detect_finds_mitotic_figures_among_look_alikes_with_scores_falling_with_difficulty() -> None:
    report = measure_quality(MODEL_DIR / "detect.onnx", held_out(TaskKind.detect, 3))

    assert report.objects >= 15
    assert report.recall >= 0.80
    assert report.precision >= 0.50
    assert report.score_difficulty_rho < 0


def test_cells_cut_by_tile_borders_are_found_once_on_a_large_patch() -> None:
    from app.phantoms import classify_patch

    phantom = classify_patch(HELD_OUT_SEED + 100, size=900)
    session, _ = make_session(MODEL_DIR / "classify.onnx", prefer_cuda=False)
    sidecar = DetectorSidecar.model_validate_json((MODEL_DIR / "classify.json").read_text(encoding="utf-8"))
    truth = np.array([[item.x1, item.y1, item.x2, item.y2] for item in phantom.objects], dtype=np.float32)
    # tiles of 512 overlapping by 128 start at 0 and 388: any cell reaching into 388..512 lies in two tiles
    shared = ((truth[:, 2] > 388) & (truth[:, 0] < 512)) | ((truth[:, 3] > 388) & (truth[:, 1] < 512))

    found = detect_image(session, sidecar, lambda x, y, w, h: phantom.image[y : y + h, x : x + w], 900, 900)

    hits_per_cell = (iou_matrix(truth, boxes_of(found), CONTINUOUS) >= 0.5).sum(axis=1)
    assert shared.sum() >= 3
    assert (hits_per_cell[shared] == 1).mean() >= 0.9
    assert hits_per_cell.max() == 1


def boxes_of(found: list[Detection]) -> np.ndarray:
    return np.array([[item.x1, item.y1, item.x2, item.y2] for item in found], dtype=np.float32).reshape(-1, 4)


def test_detections_of_the_tiled_path_carry_task_labels(classify_report: QualityReport) -> None:
    sample = held_out(TaskKind.classify, 1)
    session, _ = make_session(MODEL_DIR / "classify.onnx", prefer_cuda=False)
    sidecar = DetectorSidecar.model_validate_json((MODEL_DIR / "classify.json").read_text(encoding="utf-8"))

    found = run_detector(session, sidecar, sample)[0]

    assert found and {item.label for item in found} <= set(sidecar.label_map.values())
    assert all(sidecar.score_threshold <= item.score <= 1 for item in found)


def tiny_config(out_dir: Path) -> TrainConfig:
    return TrainConfig(
        kind=TaskKind.grade,
        seed=3,
        out_dir=out_dir,
        train_images=3,
        validation_images=2,
        epochs=1,
        crops_per_epoch=8,
        batch_size=4,
        width=8,
    )


def test_training_is_repeatable_for_a_seed_and_ships_a_valid_detector(tmp_path: Path) -> None:
    first = main(tiny_config(tmp_path / "first"))
    second = main(tiny_config(tmp_path / "second"))

    assert first.train_losses == second.train_losses
    assert first.model_path.read_bytes() == second.model_path.read_bytes()
    sidecar = json.loads(first.sidecar_path.read_text(encoding="utf-8"))
    assert validate_detector(first.model_path.read_bytes(), sidecar).sidecar.class_names == GRADE_LABELS


def test_an_epoch_with_a_non_finite_loss_stops_training() -> None:
    network = CenterNet(num_classes=1, width=8)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0)
    batch = {
        "image": torch.full((1, 3, 64, 64), float("nan")),
        "heatmap": torch.zeros(1, 1, 8, 8),
        "size": torch.zeros(1, 2, 8, 8),
        "offset": torch.zeros(1, 2, 8, 8),
        "mask": torch.zeros(1, 8, 8),
    }

    with pytest.raises(FloatingPointError, match="loss is nan"):
        train_one_epoch(network, optimizer, scheduler, [batch], epoch=0)
