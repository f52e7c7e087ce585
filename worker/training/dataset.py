"""Patches of a training set, read once from the image files (app/images/tiles.py) and cached as one .npy.

The cache holds uint8 patches (N, P, P, 3), training samples first, then validation samples, in the order
of `TrainingSet.train` and `.validation`; its name is the set's `cache_key`, so every repeat and loss of
the same set (same images, centres and patch size) reads the file instead of the images.
"""

import os
from pathlib import Path

import numpy as np
import numpy.typing as npt

from app.images.tiles import ImageSource
from app.training.service import ImageFile, Samples, TrainingSet

Patches = npt.NDArray[np.uint8]


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
