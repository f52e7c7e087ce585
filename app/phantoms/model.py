"""Label sets and ground-truth records shared by all phantom generators."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASSIFY_LABELS: tuple[str, ...] = (
    "neutrophil",
    "eosinophil",
    "mast_cell",
    "macrophage",
    "lymphocyte",
)
GRADE_LABELS: tuple[str, ...] = ("0", "1", "2", "3", "4")
DETECT_LABELS: tuple[str, ...] = ("mitotic_figure",)
LOOKALIKE_LABEL = "lookalike"


@dataclass(frozen=True)
class PhantomObject:
    """One object in level-0 pixels; the box is half-open (x2, y2 exclusive) and clipped to the image.

    `difficulty` is 0 for a textbook case and 1 for a maximally ambiguous one; `value` is the
    continuous hemosiderin amount in [0, 5) for grading and 0 otherwise.
    """

    x1: int
    y1: int
    x2: int
    y2: int
    label: str
    difficulty: float
    value: float = 0.0


@dataclass(frozen=True)
class Phantom:
    """A generated image (H, W, 3) uint8 RGB, its ground truth, and unlabelled look-alikes (detect only)."""

    image: np.ndarray
    objects: tuple[PhantomObject, ...]
    distractors: tuple[PhantomObject, ...] = ()
