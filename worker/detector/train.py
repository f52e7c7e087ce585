"""Train Concord's own detectors on phantom images and ship them as ONNX + sidecar.

``python -m worker.detector.train --kind all --seed 0 --out app/detector_models`` trains the three
models (classify, grade, detect) on one CPU thread, a few minutes each. Training and validation images
are the phantoms of seeds ``seed * SEED_BLOCK + 1`` onwards; held-out seeds start at ``HELD_OUT_SEED``
and are never trained on. ``--evaluate N`` measures the models in ``--out`` on N held-out images.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional
from torch.utils.data import DataLoader

from app.detectors.contract import DetectorSidecar
from app.detectors.inference import Detection, detect_image, make_session
from app.geometry import CONTINUOUS, greedy_in_order, iou_matrix
from app.models import TaskKind
from worker.detector.dataset import CropDataset, Sample, kind_spec, make_samples
from worker.detector.export import build_sidecar, export_onnx, write_sidecar
from worker.detector.model import CenterNet

logger = logging.getLogger(__name__)

SEED_BLOCK = 10_000
HELD_OUT_SEED = 900_000
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
CANDIDATE_THRESHOLDS = tuple(round(value, 2) for value in np.arange(0.1, 0.71, 0.05))


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run depends on."""

    kind: TaskKind
    seed: int
    out_dir: Path
    train_images: int = 60
    validation_images: int = 8
    epochs: int = 30
    crops_per_epoch: int = 512
    batch_size: int = 16
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    width: int = 32
    top_k: int = 100
    nms_iou: float = 0.3
    threads: int = 1


@dataclass(frozen=True)
class QualityReport:
    """Detection quality on held-out images at IoU ≥ 0.5, class-agnostic matching.

    ``label_accuracy`` is the share of matched objects whose label is right; ``score_difficulty_rho``
    the Spearman correlation between score and phantom difficulty over matched objects (negative when
    harder objects get lower scores).
    """

    images: int
    objects: int
    detections: int
    recall: float
    precision: float
    label_accuracy: float
    score_difficulty_rho: float


@dataclass(frozen=True)
class TrainResult:
    """Paths of the shipped model, its history and its quality on the validation images."""

    model_path: Path
    sidecar_path: Path
    epochs_run: int
    train_losses: list[float] = field(default_factory=list)
    validation_losses: list[float] = field(default_factory=list)
    validation_quality: QualityReport | None = None


def focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, summed and divided by the number of centres.

    L = −1/N Σ { (1 − p)² log p at y = 1;  (1 − y)⁴ p² log(1 − p) elsewhere }.
    """
    probability = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    positive = target.eq(1).float()
    positive_loss = torch.log(probability) * (1 - probability) ** 2 * positive
    negative_loss = torch.log(1 - probability) * probability**2 * (1 - target) ** 4 * (1 - positive)
    centres = positive.sum().clamp(min=1.0)
    return -(positive_loss.sum() + negative_loss.sum()) / centres


def masked_l1(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error of (N, 2, h, w) maps at the centre cells of ``mask`` (N, h, w)."""
    weights = mask.unsqueeze(1)
    return (functional.l1_loss(prediction, target, reduction="none") * weights).sum() / (
        2 * weights.sum()
    ).clamp(min=1.0)


def compute_loss(network: CenterNet, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Focal heat-map loss + L1 size loss + L1 offset loss."""
    heatmap, size, offset = network(batch["image"])
    return (
        focal_loss(heatmap, batch["heatmap"])
        + masked_l1(size, batch["size"], batch["mask"])
        + masked_l1(offset, batch["offset"], batch["mask"])
    )


def train_one_epoch(
    network: CenterNet,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loader: Iterable[dict[str, torch.Tensor]],
    epoch: int,
) -> float:
    """One pass over ``loader``; stops the run with FloatingPointError on a non-finite loss."""
    network.train()
    losses = []
    for batch in loader:
        loss = compute_loss(network, batch)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss is {loss.item()} in epoch {epoch}; stopping training")
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(network.parameters(), 10.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return float(np.mean(losses))


def evaluate(network: CenterNet, loader: Iterable[dict[str, torch.Tensor]]) -> float:
    """Mean loss over ``loader`` without gradients."""
    network.eval()
    with torch.inference_mode():
        losses = [compute_loss(network, batch).item() for batch in loader]
    return float(np.mean(losses))


def match(
    detections: Sequence[Detection], truth: np.ndarray, iou_threshold: float = 0.5
) -> list[tuple[int, int]]:
    """Greedy one-to-one matching, best score first: (detection, truth) index pairs with IoU ≥ threshold."""
    if not detections or not len(truth):
        return []
    boxes = np.array([[item.x1, item.y1, item.x2, item.y2] for item in detections], dtype=np.float32)
    best_first = np.argsort([-item.score for item in detections], kind="stable")
    return greedy_in_order(iou_matrix(boxes, truth, CONTINUOUS), best_first, iou_threshold)


def spearman(values: Sequence[float], others: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson of ranks, ties broken by order); 0 when undefined."""
    if len(values) < 3:
        return 0.0
    ranks = np.argsort(np.argsort(values)).astype(float)
    other_ranks = np.argsort(np.argsort(others)).astype(float)
    if ranks.std() == 0 or other_ranks.std() == 0:
        return 0.0
    return float(np.corrcoef(ranks, other_ranks)[0, 1])


def quality(
    samples: Sequence[Sample], found: Sequence[Sequence[Detection]], class_names: Sequence[str]
) -> QualityReport:
    """Recall, precision, label accuracy and score–difficulty correlation over images."""
    matched = right = detections = objects = 0
    scores: list[float] = []
    difficulties: list[float] = []
    for sample, image_detections in zip(samples, found, strict=True):
        pairs = match(image_detections, sample.boxes)
        detections += len(image_detections)
        objects += len(sample.boxes)
        matched += len(pairs)
        right += sum(image_detections[d].label == class_names[sample.classes[t]] for d, t in pairs)
        scores += [image_detections[d].score for d, _ in pairs]
        difficulties += [float(sample.difficulties[t]) for _, t in pairs]
    return QualityReport(
        images=len(samples),
        objects=objects,
        detections=detections,
        recall=matched / max(objects, 1),
        precision=matched / max(detections, 1),
        label_accuracy=right / max(matched, 1),
        score_difficulty_rho=spearman(scores, difficulties),
    )


def run_detector(session: Any, sidecar: DetectorSidecar, samples: Sequence[Sample]) -> list[list[Detection]]:
    """Detect on each sample image through the tiled inference path."""
    found = []
    for sample in samples:
        image = sample.image
        height, width = image.shape[:2]

        def read_region(x: int, y: int, w: int, h: int, image: np.ndarray = image) -> np.ndarray:
            return image[y : y + h, x : x + w]

        found.append(detect_image(session, sidecar, read_region, width, height))
    return found


def measure_quality(
    model_path: Path, samples: Sequence[Sample], threshold: float | None = None
) -> QualityReport:
    """Quality of the ONNX model beside its sidecar on ``samples`` (at ``threshold`` if given)."""
    sidecar = DetectorSidecar.model_validate_json(model_path.with_suffix(".json").read_text(encoding="utf-8"))
    if threshold is not None:
        sidecar = sidecar.model_copy(update={"score_threshold": threshold})
    session, _ = make_session(model_path, prefer_cuda=False)
    return quality(samples, run_detector(session, sidecar, samples), sidecar.class_names)


def choose_threshold(kind: TaskKind, reports: dict[float, QualityReport]) -> float:
    """The threshold with the best F1 (detect: the best recall among those with precision ≥ 0.6)."""

    def f1(report: QualityReport) -> float:
        return 2 * report.recall * report.precision / max(report.recall + report.precision, 1e-9)

    if kind == TaskKind.detect:
        precise = {value: report for value, report in reports.items() if report.precision >= 0.6}
        if precise:
            return max(precise, key=lambda value: (precise[value].recall, value))
    return max(reports, key=lambda value: f1(reports[value]))


def calibrate(kind: TaskKind, model_path: Path, samples: Sequence[Sample]) -> tuple[float, QualityReport]:
    """Pick the score threshold on validation images (one low-threshold run, filtered per candidate)."""
    sidecar = DetectorSidecar.model_validate_json(model_path.with_suffix(".json").read_text(encoding="utf-8"))
    session, _ = make_session(model_path, prefer_cuda=False)
    low = sidecar.model_copy(update={"score_threshold": min(CANDIDATE_THRESHOLDS)})
    found = run_detector(session, low, samples)
    reports = {
        value: quality(
            samples, [[item for item in image if item.score >= value] for image in found], sidecar.class_names
        )
        for value in CANDIDATE_THRESHOLDS
    }
    chosen = choose_threshold(kind, reports)
    return chosen, reports[chosen]


def training_seeds(config: TrainConfig) -> tuple[list[int], list[int]]:
    """Disjoint training and validation seeds, both below HELD_OUT_SEED."""
    base = config.seed * SEED_BLOCK + 1
    train = list(range(base, base + config.train_images))
    validation = list(
        range(base + config.train_images, base + config.train_images + config.validation_images)
    )
    if validation[-1] >= HELD_OUT_SEED:
        raise ValueError(f"seed {config.seed} reaches the held-out seeds")
    return train, validation


def make_loader(dataset: CropDataset, batch_size: int, shuffle: bool) -> DataLoader[dict[str, torch.Tensor]]:
    """Single-process loader (deterministic; the crops are cheap next to the network)."""
    generator = torch.Generator().manual_seed(dataset.seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator, num_workers=0)


def fit(
    config: TrainConfig, network: CenterNet, train_set: CropDataset, validation_set: CropDataset
) -> tuple[list[float], list[float]]:
    """AdamW with a one-cycle schedule for ``config.epochs`` epochs; returns the loss histories."""
    optimizer = torch.optim.AdamW(
        network.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    steps = config.epochs * math.ceil(len(train_set) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, total_steps=steps, pct_start=0.15
    )
    validation_loader = make_loader(validation_set, config.batch_size, shuffle=False)
    train_losses, validation_losses = [], []
    for epoch in range(config.epochs):
        started = time.monotonic()
        train_set.epoch = epoch
        train_losses.append(
            train_one_epoch(
                network, optimizer, scheduler, make_loader(train_set, config.batch_size, True), epoch
            )
        )
        validation_losses.append(evaluate(network, validation_loader))
        logger.info(
            "%s epoch %d: train loss %.3f, validation loss %.3f (%.0f s)",
            config.kind,
            epoch,
            train_losses[-1],
            validation_losses[-1],
            time.monotonic() - started,
        )
    return train_losses, validation_losses


def main(config: TrainConfig) -> TrainResult:
    """Generate data, train, export ``<kind>.onnx`` + ``<kind>.json``, calibrate the score threshold."""
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    spec = kind_spec(config.kind)
    train_seeds, validation_seeds = training_seeds(config)
    train_samples = make_samples(config.kind, train_seeds)
    validation_samples = make_samples(config.kind, validation_seeds)
    focus = config.kind == TaskKind.detect
    train_set = CropDataset(train_samples, spec, config.crops_per_epoch, config.seed, MEAN, STD, focus)
    validation_set = CropDataset(
        validation_samples, spec, config.crops_per_epoch // 4, config.seed + 1, MEAN, STD, focus
    )
    network = CenterNet(len(spec.class_names), width=config.width)
    train_losses, validation_losses = fit(config, network, train_set, validation_set)
    model_path = export_onnx(
        network.eval(), spec.tile_size, config.top_k, config.out_dir / f"{config.kind}.onnx"
    )
    sidecar = build_sidecar(
        f"concord-{config.kind}-seed{config.seed}",
        config.kind,
        spec.class_names,
        spec.tile_size,
        spec.tile_overlap,
        MEAN,
        STD,
        0.3,
        config.nms_iou,
    )
    sidecar_path = write_sidecar(sidecar, model_path.with_suffix(".json"))
    threshold, report = calibrate(config.kind, model_path, validation_samples)
    write_sidecar(sidecar.model_copy(update={"score_threshold": threshold}), sidecar_path)
    logger.info("%s: threshold %.2f, validation %s", config.kind, threshold, report)
    return TrainResult(model_path, sidecar_path, config.epochs, train_losses, validation_losses, report)


KIND_OVERRIDES: dict[TaskKind, dict[str, Any]] = {
    TaskKind.classify: {"train_images": 80},
    TaskKind.grade: {"train_images": 150},
    TaskKind.detect: {"train_images": 24},
}


def train_detector(kind: TaskKind, seed: int, out_dir: Path) -> Path:
    """Train the detector for one task kind with the shipped settings; returns the ONNX path."""
    config = replace(TrainConfig(kind=kind, seed=seed, out_dir=out_dir), **KIND_OVERRIDES[kind])
    return main(config).model_path


def evaluate_shipped(kind: TaskKind, model_dir: Path, images: int) -> QualityReport:
    """Quality of ``model_dir/<kind>.onnx`` on the first ``images`` held-out phantom images."""
    samples = make_samples(kind, range(HELD_OUT_SEED, HELD_OUT_SEED + images))
    return measure_quality(model_dir / f"{kind}.onnx", samples)


def parse_arguments(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command line: --kind {classify,grade,detect,all} --seed N --out DIR [--evaluate IMAGES]."""
    parser = argparse.ArgumentParser(description="Train Concord's phantom detectors and export them as ONNX.")
    parser.add_argument("--kind", choices=[*(kind.value for kind in TaskKind), "all"], default="all")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("app/detector_models"))
    parser.add_argument(
        "--evaluate",
        type=int,
        metavar="IMAGES",
        help="measure the models in --out on held-out images, no training",
    )
    return parser.parse_args(argv)


def cli(argv: Sequence[str] | None = None) -> None:
    """Train (or with --evaluate, measure) the requested kinds and print one JSON line per kind."""
    arguments = parse_arguments(argv)
    kinds = tuple(TaskKind) if arguments.kind == "all" else (TaskKind(arguments.kind),)
    for kind in kinds:
        if arguments.evaluate:
            report = evaluate_shipped(kind, arguments.out, arguments.evaluate)
            print(json.dumps({"kind": kind, **asdict(report)}))
        else:
            print(
                json.dumps({"kind": kind, "model": str(train_detector(kind, arguments.seed, arguments.out))})
            )


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cli()
