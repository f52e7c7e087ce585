"""Training data for the detectors: phantom images, random crops and CenterNet targets.

Coordinates are level-0 pixels of the phantom image; targets live on the model's output grid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from app.models import TaskKind
from worker.detector.model import SIZE_SCALE, STRIDE

FOCUS_OBJECT, FOCUS_DISTRACTOR = 0.45, 0.3  # detect crops: share centred on a figure, on a look-alike


@dataclass(frozen=True)
class KindSpec:
    """How one task kind is generated, cropped for training and tiled at inference."""

    class_names: tuple[str, ...]
    image_width: int
    image_height: int
    crop_size: int
    tile_size: int
    tile_overlap: int


@dataclass(frozen=True)
class Sample:
    """A phantom image with its boxes (n, 4) x1, y1, x2, y2, class indices (n,) and difficulties (n,)."""

    image: np.ndarray
    boxes: np.ndarray
    classes: np.ndarray
    difficulties: np.ndarray
    distractor_boxes: np.ndarray


def kind_spec(kind: TaskKind) -> KindSpec:
    """The data and tiling settings of a task kind."""
    from app import phantoms

    if kind == TaskKind.classify:
        return KindSpec(tuple(phantoms.CLASSIFY_LABELS), 512, 512, 256, 512, 128)
    if kind == TaskKind.grade:
        return KindSpec(tuple(phantoms.GRADE_LABELS), 256, 256, 256, 256, 64)
    return KindSpec(tuple(phantoms.DETECT_LABELS), 1500, 1500, 256, 512, 96)


def phantom_generator(kind: TaskKind) -> Callable[[int], Any]:
    """seed → Phantom at the kind's training size."""
    from app import phantoms

    spec = kind_spec(kind)
    if kind == TaskKind.classify:
        return lambda seed: phantoms.classify_patch(seed, size=spec.image_width)
    if kind == TaskKind.grade:
        return lambda seed: phantoms.grade_patch(seed, size=spec.image_width)
    return lambda seed: phantoms.detect_region(seed, width=spec.image_width, height=spec.image_height)


def boxes_of(objects: Sequence[Any]) -> np.ndarray:
    """PhantomObjects → (n, 4) float32 boxes."""
    return np.array([[item.x1, item.y1, item.x2, item.y2] for item in objects], dtype=np.float32).reshape(
        -1, 4
    )


def to_sample(phantom: Any, class_names: Sequence[str]) -> Sample:
    """Convert a Phantom into arrays; objects with labels outside ``class_names`` are dropped."""
    objects = [item for item in phantom.objects if item.label in class_names]
    return Sample(
        image=np.ascontiguousarray(phantom.image[:, :, :3]),
        boxes=boxes_of(objects),
        classes=np.array([class_names.index(item.label) for item in objects], dtype=np.int64),
        difficulties=np.array([item.difficulty for item in objects], dtype=np.float32),
        distractor_boxes=boxes_of(phantom.distractors),
    )


def make_samples(kind: TaskKind, seeds: Sequence[int]) -> list[Sample]:
    """Generate one phantom per seed."""
    generate = phantom_generator(kind)
    names = kind_spec(kind).class_names
    return [to_sample(generate(seed), names) for seed in seeds]


def crop_origin(
    sample: Sample, crop: int, rng: np.random.Generator, focus_on_objects: bool
) -> tuple[int, int]:
    """Top-left corner of a training crop; for rare objects, often near a figure or a look-alike."""
    height, width = sample.image.shape[:2]
    centre: np.ndarray | None = None
    draw = rng.random()
    if focus_on_objects and draw < FOCUS_OBJECT and len(sample.boxes):
        centre = sample.boxes[rng.integers(len(sample.boxes))]
    elif focus_on_objects and draw < FOCUS_OBJECT + FOCUS_DISTRACTOR and len(sample.distractor_boxes):
        centre = sample.distractor_boxes[rng.integers(len(sample.distractor_boxes))]
    if centre is None:
        return int(rng.integers(0, max(1, width - crop + 1))), int(rng.integers(0, max(1, height - crop + 1)))
    jitter = rng.integers(-crop // 3, crop // 3 + 1, size=2)
    x = int(np.clip((centre[0] + centre[2]) / 2 - crop / 2 + jitter[0], 0, max(0, width - crop)))
    y = int(np.clip((centre[1] + centre[3]) / 2 - crop / 2 + jitter[1], 0, max(0, height - crop)))
    return x, y


def crop_sample(
    sample: Sample, x: int, y: int, crop: int, min_visible: float = 0.5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut a crop × crop window; keep boxes with at least ``min_visible`` of their area inside, clipped."""
    image = sample.image[y : y + crop, x : x + crop]
    shifted = sample.boxes - np.array([x, y, x, y], dtype=np.float32)
    clipped = np.clip(shifted, 0, crop)
    area = (shifted[:, 2] - shifted[:, 0]) * (shifted[:, 3] - shifted[:, 1])
    visible = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
    keep = visible >= min_visible * np.maximum(area, 1e-6)
    return image, clipped[keep], sample.classes[keep]


def augment(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random flips and 90° rotations of a square crop, boxes moved along."""
    size = image.shape[0]
    if rng.random() < 0.5:
        image = image[:, ::-1]
        boxes = np.stack([size - boxes[:, 2], boxes[:, 1], size - boxes[:, 0], boxes[:, 3]], axis=1)
    if rng.random() < 0.5:
        image = image[::-1]
        boxes = np.stack([boxes[:, 0], size - boxes[:, 3], boxes[:, 2], size - boxes[:, 1]], axis=1)
    if rng.random() < 0.5:
        image = image.transpose(1, 0, 2)
        boxes = boxes[:, [1, 0, 3, 2]]
    return np.ascontiguousarray(image), boxes.astype(np.float32).reshape(-1, 4)


def gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """CenterNet's radius: the largest centre shift that keeps IoU ≥ ``min_overlap`` (3 cases)."""
    b1, c1 = height + width, width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1**2 - 4 * c1)) / 2
    b2, c2 = 2 * (height + width), (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2**2 - 16 * c2)) / 8
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (height + width), (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def draw_gaussian(heatmap: np.ndarray, centre_x: int, centre_y: int, radius: int) -> None:
    """Element-wise max of a 2-D Gaussian (σ = (2r + 1) / 6) into ``heatmap`` at the centre cell."""
    sigma = (2 * radius + 1) / 6
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-(offsets[None, :] ** 2 + offsets[:, None] ** 2) / (2 * sigma**2))
    height, width = heatmap.shape
    left, right = min(centre_x, radius), min(width - centre_x, radius + 1)
    top, bottom = min(centre_y, radius), min(height - centre_y, radius + 1)
    window = heatmap[centre_y - top : centre_y + bottom, centre_x - left : centre_x + right]
    np.maximum(window, kernel[radius - top : radius + bottom, radius - left : radius + right], out=window)


def encode_targets(
    boxes: np.ndarray, classes: np.ndarray, num_classes: int, input_size: int
) -> dict[str, np.ndarray]:
    """CenterNet targets on the output grid (one cell = STRIDE input pixels).

    Returns heatmap (C, h, w), size (2, h, w) = box (w, h) / SIZE_SCALE, offset (2, h, w) = centre / S −
    ⌊centre / S⌋, and mask (h, w) = 1 at the centre cells that carry size and offset targets.
    """
    grid = input_size // STRIDE
    heatmap = np.zeros((num_classes, grid, grid), dtype=np.float32)
    size = np.zeros((2, grid, grid), dtype=np.float32)
    offset = np.zeros((2, grid, grid), dtype=np.float32)
    mask = np.zeros((grid, grid), dtype=np.float32)
    for box, class_index in zip(boxes, classes, strict=True):
        box_w, box_h = box[2] - box[0], box[3] - box[1]
        if box_w <= 1 or box_h <= 1:
            continue
        centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]) / STRIDE
        cell_x, cell_y = (min(int(value), grid - 1) for value in centre)
        radius = max(0, int(gaussian_radius(box_h / STRIDE, box_w / STRIDE)))
        draw_gaussian(heatmap[class_index], cell_x, cell_y, radius)
        size[:, cell_y, cell_x] = (box_w / SIZE_SCALE, box_h / SIZE_SCALE)
        offset[:, cell_y, cell_x] = (centre[0] - cell_x, centre[1] - cell_y)
        mask[cell_y, cell_x] = 1.0
    return {"heatmap": heatmap, "size": size, "offset": offset, "mask": mask}


def normalise(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(h, w, 3) uint8 RGB → (3, h, w) float32, (pixel / 255 − mean) / std, as the sidecar documents."""
    scaled = (image.astype(np.float32) / 255.0 - np.asarray(mean, dtype=np.float32)) / np.asarray(
        std, dtype=np.float32
    )
    return np.ascontiguousarray(scaled.transpose(2, 0, 1))


class CropDataset(Dataset[dict[str, torch.Tensor]]):
    """Random augmented crops with CenterNet targets; item ``i`` of epoch ``e`` is fixed by (seed, e, i)."""

    def __init__(
        self,
        samples: Sequence[Sample],
        spec: KindSpec,
        length: int,
        seed: int,
        mean: Sequence[float],
        std: Sequence[float],
        focus_on_objects: bool = False,
    ) -> None:
        self.samples = samples
        self.spec = spec
        self.length = length
        self.seed = seed
        self.mean = mean
        self.std = std
        self.focus_on_objects = focus_on_objects
        self.epoch = 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        sample = self.samples[int(rng.integers(len(self.samples)))]
        crop = self.spec.crop_size
        x, y = crop_origin(sample, crop, rng, self.focus_on_objects)
        image, boxes, classes = crop_sample(sample, x, y, crop)
        image, boxes = augment(image, boxes, rng)
        targets = encode_targets(boxes, classes, len(self.spec.class_names), crop)
        item = {name: torch.from_numpy(array) for name, array in targets.items()}
        item["image"] = torch.from_numpy(normalise(image, self.mean, self.std))
        return item
