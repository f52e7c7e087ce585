"""Patches of a training set, read once from the image files (app/images/tiles.py) and cached as one .npy.

The cache holds uint8 patches (N, P, P, 3), training samples first, then validation samples, in the order
of `TrainingSet.train` and `.validation`; its name is the set's `cache_key`, so every repeat and loss of
the same set (same images, centres and patch size) reads the file instead of the images.
"""

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from app.images.tiles import ImageSource
from app.training.service import ImageFile, Samples, TrainingSet

Patches = npt.NDArray[np.uint8]
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def read_patches(images: list[ImageFile], samples: Samples, patch: int) -> Patches:
    """Patches (N, patch, patch, 3) centred on the samples; outside the image is white (as tiles.py reads)."""
    out = np.empty((len(samples), patch, patch, 3), dtype=np.uint8)
    half = patch // 2
    for index in np.unique(samples.image_index):
        image = images[int(index)]
        rows = np.flatnonzero(samples.image_index == index)
        with ImageSource(Path(image.path)) as source:
            for row in rows:
                cx, cy = samples.centres[row]
                x = image.offset_x + round(float(cx)) - half
                y = image.offset_y + round(float(cy)) - half
                out[row] = source.read_region(0, x, y, patch, patch)
    return out


def cached_patches(training: TrainingSet, path: Path) -> tuple[Patches, Patches, bool]:
    """(train patches, validation patches, read from the cache?); writes the cache on a miss (atomically)."""
    count = len(training.train)
    if path.exists():
        patches: Patches = np.load(path)
        return patches[:count], patches[count:], True
    train = read_patches(training.images, training.train, training.patch_size)
    validation = read_patches(training.images, training.validation, training.patch_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npy")
    np.save(partial, np.concatenate([train, validation]))
    partial.replace(path)
    return train, validation, False


def to_tensor(patches: Patches) -> torch.Tensor:
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
    return torch.rot90(batch, quarter_turns, dims=(2, 3))
