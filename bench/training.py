"""Training throughput of the `train` job's loop against a bare PyTorch loop, in one script.

Data: patches cut once from a phantom H&E region (figures, look-alikes and background), held as the cached
float tensors both loops read, on the same device. Model: torchvision ResNet-18 with one logit, every
layer trainable (the unfrozen stage), Adam.
Concord: ``worker.training.engine.train_one_epoch`` — shuffled batches, flips and 90° rotations, VotesLoss
with per-sample weights, the one-cycle schedule step, the finite-loss check and the stop check per batch.
Baseline: a bare loop over the same shuffled batches: forward, ``binary_cross_entropy_with_logits``,
backward, Adam step (no augmentation, no weights, no schedule). Each loop runs one warm-up epoch, then the
two alternate for --epochs timed epochs; the figure is the median samples per second.

    .venv/bin/python bench/training.py [--samples 256] [--patch-size 64] [--batch-size 64] [--epochs 3] [--device auto]

Last line: {"metric": "train_samples_per_second", "value": ..., "unit": "samples/s", "baseline": ...,
"ratio": ..., "device": ...}; the ratio (job ÷ bare) must be at least 0.9.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torchvision.models import resnet18  # noqa: E402

from app.phantoms import detect_region  # noqa: E402
from worker.training.engine import EpochData, batch_order, train_one_epoch  # noqa: E402
from worker.training.tensors import to_tensor  # noqa: E402
from worker.training.train import choose_device  # noqa: E402
from worker.training.votes_loss import VotesLoss  # noqa: E402


def phantom_patches(count: int, patch: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """uint8 patches (count, patch, patch, 3): around figures and look-alikes first, then random points."""
    phantom = detect_region(seed, 1600, 1600)
    rng = np.random.default_rng(seed)
    objects = [*phantom.objects, *phantom.distractors]
    centres = [((o.x1 + o.x2) // 2, (o.y1 + o.y2) // 2) for o in objects]
    labels = [1] * len(phantom.objects) + [0] * len(phantom.distractors)
    while len(centres) < count:
        centres.append(tuple(rng.integers(patch, 1600 - patch, size=2)))
        labels.append(0)
    padded = np.pad(phantom.image, ((patch, patch), (patch, patch), (0, 0)), constant_values=255)
    half = patch // 2
    patches = np.stack(
        [
            padded[y + patch - half : y + patch + half, x + patch - half : x + patch + half]
            for x, y in centres[:count]
        ]
    )
    return patches, np.array(labels[:count], dtype=np.float32)


def bare_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: EpochData,
    batch_size: int,
    generator: torch.Generator,
) -> int:
    model.train()
    seen = 0
    for index in batch_order(len(data.targets), batch_size, generator):
        index = index.to(data.targets.device)
        loss: torch.Tensor = nn.functional.binary_cross_entropy_with_logits(
            model(data.images[index]).squeeze(1), data.targets[index]
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        seen += len(index)
    return seen


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--patch-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = parser.parse_args(argv)
    device, reason = choose_device(args.device)
    patches, targets = phantom_patches(args.samples, args.patch_size)
    data = EpochData(
        to_tensor(patches).to(device),
        torch.from_numpy(targets).to(device),
        torch.from_numpy(np.where(targets > 0, 0.5, 1.0).astype(np.float32)).to(device),
    )
    torch.manual_seed(0)
    job_model = resnet18(weights=None, num_classes=1).to(device)
    bare_model = resnet18(weights=None, num_classes=1).to(device)
    bare_model.load_state_dict(job_model.state_dict())
    job_optimizer = torch.optim.Adam(job_model.parameters(), lr=1e-3)
    bare_optimizer = torch.optim.Adam(bare_model.parameters(), lr=1e-3)
    steps = len(batch_order(args.samples, args.batch_size, torch.Generator()))
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        job_optimizer, max_lr=1e-3, total_steps=steps * (args.epochs + 1)
    )
    criterion = VotesLoss()
    job_rates, bare_rates = [], []
    for epoch in range(args.epochs + 1):
        synchronise(device)
        started = time.perf_counter()
        stats = train_one_epoch(
            job_model,
            criterion,
            job_optimizer,
            schedule,
            data,
            args.batch_size,
            torch.Generator().manual_seed(epoch),
        )
        synchronise(device)
        job_rate = stats.samples / (time.perf_counter() - started)
        started = time.perf_counter()
        seen = bare_epoch(
            bare_model, bare_optimizer, data, args.batch_size, torch.Generator().manual_seed(epoch)
        )
        synchronise(device)
        bare_rate = seen / (time.perf_counter() - started)
        if epoch > 0:
            job_rates.append(job_rate)
            bare_rates.append(bare_rate)
        print(
            f"epoch {epoch}{' (warm-up)' if epoch == 0 else ''}: job {job_rate:.1f} samples/s, bare {bare_rate:.1f} samples/s"
        )
    value, baseline = statistics.median(job_rates), statistics.median(bare_rates)
    print(f"device {device.type} ({reason}); torch {torch.__version__}, {torch.get_num_threads()} threads")
    result = {
        "metric": "train_samples_per_second",
        "value": round(value, 2),
        "unit": "samples/s",
        "baseline": round(baseline, 2),
        "ratio": round(value / baseline, 3),
        "device": device.type,
        "samples": args.samples,
        "patch_size": args.patch_size,
        "batch_size": args.batch_size,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
