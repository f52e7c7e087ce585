"""Patch tensors for training: normalisation and augmentation (torch only, no project imports)."""

import numpy as np
import numpy.typing as npt
import torch

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def to_tensor(patches: npt.NDArray[np.uint8]) -> torch.Tensor:
    """uint8 (N, P, P, 3) → float32 (N, 3, P, P), scaled to [0, 1] and normalised by the ImageNet mean/std."""
    tensor = torch.from_numpy(patches).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return ((tensor - mean) / std).contiguous()


def augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal and vertical flips per sample, then one random multiple of 90° for the batch."""
    flips = torch.rand(2, batch.shape[0], generator=generator, device="cpu").lt(0.5).to(batch.device)
    batch = torch.where(flips[0].view(-1, 1, 1, 1), batch.flip(3), batch)
    batch = torch.where(flips[1].view(-1, 1, 1, 1), batch.flip(2), batch)
    quarter_turns = int(torch.randint(0, 4, (1,), generator=generator).item())
    # rot90 by an odd number of turns is a transposed view: the copy keeps convolutions on their fast path
    return torch.rot90(batch, quarter_turns, dims=(2, 3)).contiguous()
