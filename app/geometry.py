"""Boxes: IoU under an explicit pixel convention, one-to-one and greedy matching, non-maximum suppression.

Boxes are arrays (N, 4) of x1, y1, x2, y2 in pixels at level 0. Two conventions are in use, and every IoU
here names its own:
- `PixelConvention.INCLUSIVE`: corners are pixels, both included, so a box covers (x2 − x1 + 1)(y2 − y1 + 1)
  pixels and boxes that touch share a row. The published analysis (evaluation), error injection and the
  simulated experts use it.
- `PixelConvention.CONTINUOUS`: corners are points on the plane, area (x2 − x1)(y2 − y1), touching boxes do
  not overlap. The detector (training, inference, NMS) uses it, as torchvision and the COCO tools do.

Example: [0, 0, 9, 9] and [5, 0, 14, 9] → inclusive 50 / 150 = 1/3, continuous 36 / 126 = 2/7.
The array dtype is kept (float32 detector outputs stay float32), so results are those of the copies this
module replaces.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

Floating = TypeVar(
    "Floating", bound=np.floating[Any]
)  # float32 boxes give float32 IoU, float64 boxes float64
IntArray = npt.NDArray[np.int64]


class PixelConvention(Enum):
    """How a box's corners count; the value is the padding p added to each side length."""

    INCLUSIVE = 1.0
    CONTINUOUS = 0.0

    @property
    def pad(self) -> float:
        return float(self.value)


INCLUSIVE = PixelConvention.INCLUSIVE
CONTINUOUS = PixelConvention.CONTINUOUS


def box_areas(boxes: npt.NDArray[Floating], convention: PixelConvention) -> npt.NDArray[Floating]:
    """Areas (N,) of boxes (N, 4): (x2 − x1 + p)(y2 − y1 + p)."""
    pad = convention.pad
    return np.multiply(boxes[:, 2] - boxes[:, 0] + pad, boxes[:, 3] - boxes[:, 1] + pad, dtype=boxes.dtype)


def iou_of_rows(
    a: npt.NDArray[Floating], b: npt.NDArray[Floating], convention: PixelConvention
) -> npt.NDArray[Floating]:
    """IoU (K,) of boxes given as coordinate rows a, b (4, K): contiguous rows keep numpy fast.

    IoU = I / (area_a + area_b − I), I = max(0, min(x2) − max(x1) + p) · max(0, min(y2) − max(y1) + p);
    0 where the union is empty.
    """
    pad = convention.pad
    width = np.minimum(a[2], b[2]) - np.maximum(a[0], b[0]) + pad
    height = np.minimum(a[3], b[3]) - np.maximum(a[1], b[1]) + pad
    intersection = np.maximum(width, 0.0) * np.maximum(height, 0.0)
    union = (
        (a[2] - a[0] + pad) * (a[3] - a[1] + pad) + (b[2] - b[0] + pad) * (b[3] - b[1] + pad) - intersection
    )
    iou: npt.NDArray[Floating] = np.divide(intersection, union, out=np.zeros_like(union), where=union > 0)
    return iou


def paired_iou(
    a: npt.NDArray[Floating], b: npt.NDArray[Floating], convention: PixelConvention
) -> npt.NDArray[Floating]:
    """IoU (K,) of row k of a (K, 4) with row k of b (K, 4)."""
    return iou_of_rows(np.ascontiguousarray(a.T), np.ascontiguousarray(b.T), convention)


def iou_matrix(
    a: npt.NDArray[Floating], b: npt.NDArray[Floating], convention: PixelConvention
) -> npt.NDArray[Floating]:
    """IoU (N, M) of every box of a (N, 4) with every box of b (M, 4).

    >>> iou_matrix(np.array([[0.0, 0, 9, 9]]), np.array([[5.0, 0, 14, 9]]), INCLUSIVE)  # 50 / 150
    array([[0.33333333]])
    """
    n, m = len(a), len(b)
    rows = np.repeat(np.arange(n), m)
    cols = np.tile(np.arange(m), n)
    return paired_iou(a[rows], b[cols], convention).reshape(n, m)


def box_iou(a: Sequence[float], b: Sequence[float], convention: PixelConvention) -> float:
    """IoU of two boxes given as x1, y1, x2, y2."""
    return float(
        iou_matrix(np.array([a], dtype=np.float64), np.array([b], dtype=np.float64), convention)[0, 0]
    )


def greedy_one_to_one(iou: npt.NDArray[Floating], threshold: float) -> list[tuple[int, int]]:
    """One-to-one pairs (row, column) of an IoU matrix (N, M), highest IoU first (ties: lower row, then
    lower column), each pair with IoU ≥ threshold and neither side taken before."""
    rows, cols = np.nonzero(iou >= threshold)
    order = np.lexsort((cols, rows, -iou[rows, cols]))
    taken_rows: set[int] = set()
    taken_cols: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for row, col in zip(rows[order].tolist(), cols[order].tolist(), strict=True):
        if row not in taken_rows and col not in taken_cols:
            pairs.append((row, col))
            taken_rows.add(row)
            taken_cols.add(col)
    return pairs


def greedy_in_order(
    iou: npt.NDArray[Floating], order: Sequence[int] | IntArray, threshold: float
) -> list[tuple[int, int]]:
    """One-to-one pairs (row, column) of an IoU matrix (N, M): rows in the given order (best score first,
    say) each take the untaken column of highest IoU (lowest on ties) when that IoU ≥ threshold."""
    taken = np.zeros(iou.shape[1], dtype=bool)
    pairs: list[tuple[int, int]] = []
    for row in order:
        candidates = np.where(taken, -1.0, iou[row])
        best = int(np.argmax(candidates))
        if candidates[best] >= threshold:
            taken[best] = True
            pairs.append((int(row), best))
    return pairs


def nms(
    boxes: npt.NDArray[Floating],
    scores: npt.NDArray[Floating],
    iou_threshold: float,
    convention: PixelConvention = CONTINUOUS,
) -> IntArray:
    """Greedy non-maximum suppression; returns indices kept, best score first (stable on ties).

    A box is dropped when its IoU with an already kept, higher-scoring box exceeds ``iou_threshold``. Each
    step is vectorised over all remaining boxes. Example: boxes [[0,0,10,10],[1,1,11,11],[20,20,30,30]],
    scores [.9,.8,.7], threshold .5 → [0, 2].
    """
    order = np.argsort(-scores, kind="stable")
    rows = np.ascontiguousarray(boxes.T)
    kept: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        kept.append(int(best))
        iou = iou_of_rows(rows[:, [best]], rows[:, rest], convention)
        order = rest[iou <= iou_threshold]
    return np.asarray(kept, dtype=np.int64)


def classwise_nms(
    boxes: npt.NDArray[Floating],
    scores: npt.NDArray[Floating],
    labels: IntArray,
    iou_threshold: float,
    convention: PixelConvention = CONTINUOUS,
) -> IntArray:
    """NMS within each label separately; returns kept indices sorted by descending score."""
    kept = [
        np.flatnonzero(labels == label)[
            nms(boxes[labels == label], scores[labels == label], iou_threshold, convention)
        ]
        for label in np.unique(labels)
    ]
    merged = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
    return merged[np.argsort(-scores[merged], kind="stable")]
