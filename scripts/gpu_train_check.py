"""Device check for training: one short `train` run on CUDA and the same on CPU; samples per second of both.

Runs ``worker.training.train.main`` (the function the `train` job calls per repeat) from the source tree with
whatever Python (≥ 3.11), torch and torchvision the machine has — no database, no project install: the
patches are synthetic (a dark blob marks class 1), cut and normalised the way the job does. The ONNX export
check runs too when onnx and onnxruntime are importable (else it is skipped and said so).
Exits 2 when CUDA was asked for (the default) but torch sees no GPU.

    python scripts/gpu_train_check.py                    # on a GPU machine: CUDA, then CPU
    python scripts/gpu_train_check.py --cpu-only         # checks the script itself

Last line: {"check": "gpu-train", "cuda_samples_per_s": ..., "cpu_samples_per_s": ..., ...}.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from worker.training.train import TrainConfig, main  # noqa: E402


def synthetic_patches(count: int, patch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 patches (count, patch, patch, 3) of pink noise; class 1 has a dark blob near the centre."""
    rng = np.random.default_rng(seed)
    patches = rng.normal([215, 160, 200], 18, size=(count, patch, patch, 3))
    positive = rng.random(count) < 0.5
    yy, xx = np.mgrid[:patch, :patch]
    for index in np.flatnonzero(positive):
        cy, cx = rng.normal(patch / 2, patch / 10, size=2)
        blob = ((yy - cy) ** 2 + (xx - cx) ** 2) < (patch / 6) ** 2
        patches[index][blob] = [70, 40, 110]
    return np.clip(patches, 0, 255).astype(np.uint8), positive


def one_run(device: str, args: argparse.Namespace, folder: Path, export: bool) -> dict[str, Any]:
    train_x, train_y = synthetic_patches(args.samples, args.patch_size, seed=1)
    val_x, val_y = synthetic_patches(max(args.samples // 4, 8), args.patch_size, seed=2)
    config = TrainConfig(
        train_patches=train_x,
        train_targets=train_y,
        train_weights=np.where(train_y, 0.5, 1.0).astype(np.float32),
        val_patches=val_x,
        val_targets=val_y,
        checkpoint_path=folder / device / "checkpoint.pt",
        onnx_path=folder / device / "best.onnx",
        epochs_frozen=args.epochs,
        epochs_unfrozen=args.epochs,
        batch_size=args.batch_size,
        device=device,
        export=export,
    )
    result = main(config)
    return {
        "device": result.device,
        "device_reason": result.device_reason,
        "samples_per_s": round(result.samples_per_s, 1),
        "best_val_accuracy": result.best_val_accuracy,
        "seconds": round(result.seconds, 1),
        "onnx_max_difference": result.onnx_max_difference if export else None,
    }


def main_check(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cpu-only", action="store_true")
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--cpu-samples", type=int, default=256, help="the CPU run is smaller: it is slow")
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=1, help="epochs of each stage")
    args = parser.parse_args(argv)
    export = all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))
    print(
        f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}, ONNX export check: {export}"
    )
    report: dict[str, Any] = {"check": "gpu-train", "torch": torch.__version__, "onnx_checked": export}
    with tempfile.TemporaryDirectory(prefix="concord-gpu-train-") as name:
        folder = Path(name)
        if not args.cpu_only:
            if not torch.cuda.is_available():
                print(json.dumps({**report, "verdict": "no-cuda"}))
                return 2
            cuda = one_run("cuda", args, folder, export)
            print("cuda:", cuda)
            report.update(cuda_samples_per_s=cuda["samples_per_s"], cuda=cuda)
        cpu_args = argparse.Namespace(**{**vars(args), "samples": args.cpu_samples})
        cpu = one_run("cpu", cpu_args, folder, export)
        print("cpu:", cpu)
        report.update(cpu_samples_per_s=cpu["samples_per_s"], cpu=cpu)
    print(json.dumps({**report, "verdict": "ok"}))
    return 0


if __name__ == "__main__":
    sys.exit(main_check())
