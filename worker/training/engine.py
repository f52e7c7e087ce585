"""One epoch of training and one evaluation pass, on tensors already in memory (torchvision-references shape)."""

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from worker.training.tensors import augment
from worker.training.votes_loss import VotesLoss


class NonFiniteLoss(RuntimeError):
    """A batch gave a NaN or infinite loss; training stops instead of carrying on with broken weights."""


class TrainingStopped(RuntimeError):
    """Asked to stop (cancel or Ctrl-C); raised between two batches, after the last finished one."""


@dataclass(frozen=True)
class EpochData:
    """Training tensors on the training device: images (N, 3, P, P), targets (N,) in {0, 1}, weights (N,)."""

    images: torch.Tensor
    targets: torch.Tensor
    weights: torch.Tensor


@dataclass(frozen=True)
class EpochStats:
    mean_loss: float
    samples: int


def batch_order(count: int, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffled index batches; a last batch of one sample is dropped (batch norm needs two in training)."""
    order = torch.randperm(count, generator=generator)
    batches = list(torch.split(order, batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches.pop()
    return batches


def train_one_epoch(
    model: nn.Module,
    criterion: VotesLoss,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    data: EpochData,
    batch_size: int,
    generator: torch.Generator,
    should_stop: Callable[[], bool] = lambda: False,
    on_batch: Callable[[int, int], None] = lambda done, total: None,
) -> EpochStats:
    """One pass over shuffled, augmented batches; raises NonFiniteLoss or TrainingStopped."""
    model.train()
    batches = batch_order(len(data.targets), batch_size, generator)
    total_loss, seen = 0.0, 0
    for number, index in enumerate(batches, start=1):
        if should_stop():
            raise TrainingStopped(f"stopped after {number - 1} of {len(batches)} batches")
        index = index.to(data.targets.device)
        images = augment(data.images[index], generator)
        loss = criterion(model(images).squeeze(1), data.targets[index], data.weights[index])
        if not torch.isfinite(loss):
            raise NonFiniteLoss(f"loss became {loss.item()} in batch {number}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total_loss += float(loss.detach()) * len(index)
        seen += len(index)
        on_batch(number, len(batches))
    return EpochStats(total_loss / max(seen, 1), seen)


@dataclass(frozen=True)
class Evaluation:
    loss: float
    accuracy: float


def predict_logits(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Logits (N,) of images (N, 3, P, P) in eval mode, under inference_mode."""
    model.eval()
    with torch.inference_mode():
        parts = [model(chunk).squeeze(1) for chunk in torch.split(images, batch_size)]
    return torch.cat(parts) if parts else torch.zeros(0, device=images.device)


def evaluate(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, batch_size: int) -> Evaluation:
    """Unweighted BCE and accuracy (logit > 0 ⇔ class 1) on the validation tensors."""
    logits = predict_logits(model, images, batch_size)
    if not len(targets):
        return Evaluation(math.nan, math.nan)
    loss = nn.functional.binary_cross_entropy_with_logits(logits, targets)
    accuracy = (logits.gt(0).float() == targets).float().mean()
    return Evaluation(float(loss), float(accuracy))
