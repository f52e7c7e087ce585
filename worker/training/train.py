"""Train one patch classifier (torchvision ResNet-18, one logit) with BCE or VotesLoss: `main(config)`.

Two stages as in the authors' published notebooks: `epochs_frozen` epochs with the backbone frozen (only
the head trains) at a one-cycle schedule of maximum LR `lr_frozen`, then `epochs_unfrozen` epochs of the
whole network at maximum LR `lr_unfrozen`; Adam; flips and 90° rotations. After every epoch a checkpoint
dict (model, optimizer, schedule, history, best model, random state) replaces the previous one, and a run
started with an existing checkpoint resumes after its last finished epoch. The best model by validation
accuracy (first best on ties) is exported to ONNX and checked against torch; the finished run's checkpoint
keeps the best model and the history but drops the optimizer state (a ResNet-18 once, about 45 MB).
"""

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torchvision.models import resnet18

from worker.training.engine import EpochData, evaluate, train_one_epoch
from worker.training.tensors import to_tensor
from worker.training.votes_loss import VotesLoss

Stage = Literal["frozen", "unfrozen"]


@dataclass
class TrainConfig:
    """One run. npt.NDArray[np.uint8] are uint8 (N, P, P, 3); weights (N,) float32 (all 1 for BCE)."""

    train_patches: npt.NDArray[np.uint8]
    train_targets: npt.NDArray[np.bool_]
    train_weights: npt.NDArray[np.float32]
    val_patches: npt.NDArray[np.uint8]
    val_targets: npt.NDArray[np.bool_]
    checkpoint_path: Path
    onnx_path: Path
    alpha: float = 1.0
    epochs_frozen: int = 3
    epochs_unfrozen: int = 5
    lr_frozen: float = 0.05
    lr_unfrozen: float = 1e-3
    batch_size: int = 64
    seed: int = 0
    device: str = "auto"
    weights: str | None = None
    export: bool = True
    checkpoints: bool = True  # False: no checkpoint is read or written (short runs that never resume)
    progress: Callable[[float, str], None] = lambda fraction, message: None
    should_stop: Callable[[], bool] = lambda: False


RUN_SETTINGS = (
    "alpha",
    "epochs_frozen",
    "epochs_unfrozen",
    "lr_frozen",
    "lr_unfrozen",
    "batch_size",
    "device",
    "weights",
)


def run_settings(params: Any) -> dict[str, Any]:
    """A job's run settings under TrainConfig's own names (the `train` and `training_question` params)."""
    return {name: getattr(params, name) for name in RUN_SETTINGS}


@dataclass
class TrainResult:
    history: list[dict[str, Any]]
    best_val_accuracy: float
    best_epoch: int
    device: str
    device_reason: str
    weights_init: str
    seconds: float
    samples_per_s: float
    checkpoint_path: str
    onnx_path: str
    onnx_sha256: str
    onnx_max_difference: float
    resumed_after_epoch: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def choose_device(requested: str) -> tuple[torch.device, str]:
    """`auto`: CUDA when torch sees a GPU, else CPU; returns the device and why it was chosen."""
    available = torch.cuda.is_available()
    if requested == "cuda" and not available:
        raise RuntimeError("device cuda was requested but torch.cuda.is_available() is False")
    if requested == "cpu":
        return torch.device("cpu"), "cpu was requested"
    if available:
        name = torch.cuda.get_device_name(0)
        return torch.device(
            "cuda"
        ), f"{'cuda was requested' if requested == 'cuda' else 'auto: CUDA available'} ({name})"
    return torch.device(
        "cpu"
    ), f"auto: no CUDA device (torch {torch.__version__}, cuda.is_available() is False)"


def build_model(weights: str | None, seed: int) -> tuple[nn.Module, str]:
    """ResNet-18 with one output logit; backbone from a local weights file, else random (seeded)."""
    torch.manual_seed(seed)
    model = resnet18(weights=None, num_classes=1)
    if weights is None:
        return model, f"random (seed {seed})"
    path = Path(weights)
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    state: dict[str, Any] = loaded
    for wrapper in ("state_dict", "model"):
        inner = state.get(wrapper)
        if isinstance(inner, dict):
            state = inner
    backbone = {key: value for key, value in state.items() if not key.startswith("fc.")}
    missing, unexpected = model.load_state_dict(backbone, strict=False)
    if unexpected or any(not key.startswith("fc.") for key in missing):
        raise ValueError(
            f"{path.name} is not a ResNet-18 state dict (unexpected {unexpected[:3]}, missing {missing[:3]})"
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return model, f"file {path} (sha256 {digest[:16]}…)"


def stage_of(epoch: int, config: TrainConfig) -> Stage:
    return "frozen" if epoch < config.epochs_frozen else "unfrozen"


def set_stage(model: nn.Module, stage: Stage) -> list[nn.Parameter]:
    """Freeze every parameter but the head's (frozen stage) or none; returns the trainable ones."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(stage == "unfrozen" or name.startswith("fc."))
    return [parameter for parameter in model.parameters() if parameter.requires_grad]


def make_optimizer(
    model: nn.Module, stage: Stage, config: TrainConfig, steps_per_epoch: int
) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.OneCycleLR]:
    max_lr = config.lr_frozen if stage == "frozen" else config.lr_unfrozen
    epochs = config.epochs_frozen if stage == "frozen" else config.epochs_unfrozen
    optimizer = torch.optim.Adam(set_stage(model, stage), lr=max_lr)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=max_lr, total_steps=max(1, epochs * steps_per_epoch)
    )
    return optimizer, scheduler


def steps_per_epoch(count: int, batch_size: int) -> int:
    steps = math.ceil(count / batch_size)
    return steps - 1 if steps > 1 and count % batch_size == 1 else steps


def main(config: TrainConfig) -> TrainResult:
    """Train (or resume) one run, export the best model, return its record (see the module text)."""
    started = time.perf_counter()
    device, reason = choose_device(config.device)
    model, weights_init = build_model(config.weights, config.seed)
    model.to(device)
    data = EpochData(
        to_tensor(config.train_patches).to(device),
        torch.from_numpy(config.train_targets.astype(np.float32)).to(device),
        torch.from_numpy(config.train_weights.astype(np.float32)).to(device),
    )
    val_images = to_tensor(config.val_patches).to(device)
    val_targets = torch.from_numpy(config.val_targets.astype(np.float32)).to(device)
    criterion = VotesLoss(config.alpha)
    generator = torch.Generator().manual_seed(config.seed)
    steps = steps_per_epoch(len(data.targets), config.batch_size)
    total_epochs = config.epochs_frozen + config.epochs_unfrozen
    state = _fresh_state(model)
    if config.checkpoints and config.checkpoint_path.exists():
        state = _load_checkpoint(config.checkpoint_path, model, generator)
    resumed_after = state["epoch"]
    optimizer, scheduler, current = None, None, None
    for epoch in range(state["epoch"], total_epochs):
        stage = stage_of(epoch, config)
        if stage != current:
            optimizer, scheduler = make_optimizer(model, stage, config, steps)
            if state.get("stage") == stage and state.get("optimizer") is not None:
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
            current = stage
        assert optimizer is not None
        assert scheduler is not None

        def on_batch(done: int, total: int, epoch: int = epoch, stage: Stage = stage) -> None:
            fraction = (epoch + done / total) / total_epochs
            config.progress(fraction, f"epoch {epoch + 1}/{total_epochs} ({stage}), batch {done}/{total}")

        epoch_start = time.perf_counter()
        stats = train_one_epoch(
            model,
            criterion,
            optimizer,
            scheduler,
            data,
            config.batch_size,
            generator,
            config.should_stop,
            on_batch,
        )
        state["train_seconds"] += time.perf_counter() - epoch_start
        state["samples_seen"] += stats.samples
        result = evaluate(model, val_images, val_targets, config.batch_size)
        record = {
            "epoch": epoch + 1,
            "stage": stage,
            "train_loss": stats.mean_loss,
            "val_loss": result.loss,
            "val_accuracy": result.accuracy,
        }
        state["history"].append(record)
        if state["best_epoch"] == 0 or result.accuracy > state["best_val_accuracy"]:
            state.update(best_val_accuracy=result.accuracy, best_epoch=epoch + 1, best_model=_cpu_copy(model))
        state.update(
            epoch=epoch + 1, stage=stage, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict()
        )
        if config.checkpoints:
            _save_checkpoint(config.checkpoint_path, model, generator, state)
        config.progress(
            (epoch + 1) / total_epochs,
            f"epoch {epoch + 1}/{total_epochs}: val accuracy {result.accuracy:.3f}",
        )
    model.load_state_dict(state["best_model"])
    if config.checkpoints:
        _save_checkpoint(
            config.checkpoint_path, model, generator, {**state, "optimizer": None, "scheduler": None}
        )
    sha256, difference = "", float("nan")
    if config.export:
        from worker.training.export import export_checked

        sha256, difference = export_checked(model, config.val_patches.shape[1], config.onnx_path, val_images)
    return TrainResult(
        history=state["history"],
        best_val_accuracy=state["best_val_accuracy"],
        best_epoch=state["best_epoch"],
        device=device.type,
        device_reason=reason,
        weights_init=weights_init,
        seconds=time.perf_counter() - started,
        samples_per_s=state["samples_seen"] / state["train_seconds"] if state["train_seconds"] else 0.0,
        checkpoint_path=str(config.checkpoint_path),
        onnx_path=str(config.onnx_path),
        onnx_sha256=sha256,
        onnx_max_difference=difference,
        resumed_after_epoch=resumed_after,
    )


def _cpu_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().to("cpu", copy=True) for key, value in model.state_dict().items()}


def _fresh_state(model: nn.Module) -> dict[str, Any]:
    return {
        "epoch": 0,
        "stage": None,
        "optimizer": None,
        "scheduler": None,
        "history": [],
        "best_val_accuracy": -1.0,
        "best_epoch": 0,
        "best_model": _cpu_copy(model),
        "samples_seen": 0,
        "train_seconds": 0.0,
    }


def _save_checkpoint(path: Path, model: nn.Module, generator: torch.Generator, state: dict[str, Any]) -> None:
    """Write the checkpoint dict next to the old one, then replace it: a kill never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    weights = _cpu_copy(model)
    if state["optimizer"] is None:  # the finished run: the model is the best model, stored once
        weights = state["best_model"]
    torch.save({**state, "model": weights, "generator": generator.get_state()}, partial)
    partial.replace(path)


def _load_checkpoint(path: Path, model: nn.Module, generator: torch.Generator) -> dict[str, Any]:
    checkpoint: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(checkpoint.pop("model"))
    generator.set_state(checkpoint.pop("generator"))
    return checkpoint
