"""Run a contract-conforming ONNX detector over a whole image, tile by tile, in level-0 pixels.

The image is never loaded whole: ``read_region(x, y, w, h)`` returns one (h, w, 3) uint8 RGB tile, so a
large tiled TIFF is read lazily. Tiles overlap by the sidecar's ``tile_overlap``; each tile keeps only
the detections whose centre falls in its *core* (the part of the tile closer to it than to any
neighbour), so an object cut by a tile border is reported by the one tile that sees it whole, and a
final class-wise NMS removes what is left of the duplicates along the core borders.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.suggestions.contract import OUTPUT_NAMES, DetectorSidecar

logger = logging.getLogger(__name__)

ReadRegion = Callable[[int, int, int, int], np.ndarray]


@dataclass(frozen=True)
class Detection:
    """One detected object: box in level-0 pixels (x2, y2 exclusive), score in [0, 1], task label."""

    x1: float
    y1: float
    x2: float
    y2: float
    score: float
    label: str


@dataclass(frozen=True)
class Tile:
    """A tile's origin and size in the image, and the core [core_x1, core_x2) × [core_y1, core_y2) it owns."""

    x: int
    y: int
    width: int
    height: int
    core_x1: float
    core_y1: float
    core_x2: float
    core_y2: float


def make_session(model_path: Path | str, prefer_cuda: bool = True) -> tuple[Any, str]:
    """Open an ONNX Runtime session with CUDA first (when asked for and installed), then CPU.

    Returns the session and the provider that actually runs it (ONNX Runtime silently falls back to
    CPU when CUDA cannot start, so the answer is read back from the session).
    """
    import onnxruntime

    available = set(onnxruntime.get_available_providers())
    wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"] if prefer_cuda else ["CPUExecutionProvider"]
    providers = [provider for provider in wanted if provider in available]
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(str(model_path), sess_options=options, providers=providers)
    provider_used: str = session.get_providers()[0]
    logger.info("detector %s runs on %s (asked for %s)", model_path, provider_used, providers)
    return session, provider_used


def tile_starts(length: int, tile_size: int, overlap: int) -> list[int]:
    """Start offsets of tiles covering [0, length); the last one is shifted inward to end at ``length``.

    >>> tile_starts(1000, 512, 64)
    [0, 448, 488]
    """
    if length <= tile_size:
        return [0]
    step = tile_size - overlap
    starts = list(range(0, length - tile_size, step))
    starts.append(length - tile_size)
    return starts


def core_bounds(starts: Sequence[int], tile_size: int, length: int) -> list[tuple[float, float]]:
    """For each tile along one axis, the interval it owns: split each overlap at its middle."""
    ends = [min(start + tile_size, length) for start in starts]
    bounds = []
    for index, start in enumerate(starts):
        low = 0.0 if index == 0 else (start + ends[index - 1]) / 2.0
        high = float(length) if index == len(starts) - 1 else (starts[index + 1] + ends[index]) / 2.0
        bounds.append((low, high))
    return bounds


def plan_tiles(width: int, height: int, tile_size: int, overlap: int) -> list[Tile]:
    """All tiles of a width × height image, row by row, each with the core it owns."""
    xs = tile_starts(width, tile_size, overlap)
    ys = tile_starts(height, tile_size, overlap)
    x_cores = core_bounds(xs, tile_size, width)
    y_cores = core_bounds(ys, tile_size, height)
    return [
        Tile(
            x,
            y,
            min(tile_size, width - x),
            min(tile_size, height - y),
            cx1,
            cy1,
            cx2,
            cy2,
        )
        for y, (cy1, cy2) in zip(ys, y_cores, strict=True)
        for x, (cx1, cx2) in zip(xs, x_cores, strict=True)
    ]


def preprocess(pixels: np.ndarray, sidecar: DetectorSidecar) -> np.ndarray:
    """(h, w, 3) uint8 RGB → (3, S, S) float32 per the sidecar, padded with ``pad_value`` (S = input_size)."""
    size = sidecar.input_size
    canvas = np.full((size, size, 3), sidecar.pad_value, dtype=np.uint8)
    canvas[: pixels.shape[0], : pixels.shape[1]] = pixels[:size, :size, :3]
    if sidecar.channel_order == "BGR":
        canvas = canvas[:, :, ::-1]
    mean = np.asarray(sidecar.mean, dtype=np.float32)
    std = np.asarray(sidecar.std, dtype=np.float32)
    normalised = (canvas.astype(np.float32) / 255.0 - mean) / std
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))


def batched(tiles: Sequence[Tile], batch_size: int) -> Iterator[Sequence[Tile]]:
    """Consecutive slices of at most ``batch_size`` tiles."""
    for start in range(0, len(tiles), batch_size):
        yield tiles[start : start + batch_size]


def run_batch(session: Any, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Run the model on (N, 3, S, S) float32; returns boxes (N, K, 4), scores (N, K), labels (N, K)."""
    input_name = session.get_inputs()[0].name
    boxes, scores, labels = session.run(list(OUTPUT_NAMES), {input_name: images})
    return (
        np.asarray(boxes, dtype=np.float32),
        np.asarray(scores, dtype=np.float32),
        np.asarray(labels, dtype=np.int64),
    )


def run_batch_per_image(session: Any, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Like :func:`run_batch`, one image at a time, for models whose batch axis is fixed to 1."""
    parts = [run_batch(session, images[index : index + 1]) for index in range(images.shape[0])]
    return tuple(np.concatenate([part[slot] for part in parts]) for slot in range(3))  # type: ignore[return-value]


def keep_in_core(boxes: np.ndarray, tile: Tile) -> np.ndarray:
    """Mask of boxes (already in image pixels) whose centre lies in the tile's core."""
    centre_x = (boxes[:, 0] + boxes[:, 2]) / 2.0
    centre_y = (boxes[:, 1] + boxes[:, 3]) / 2.0
    inside_x = (centre_x >= tile.core_x1) & (centre_x < tile.core_x2)
    inside_y = (centre_y >= tile.core_y1) & (centre_y < tile.core_y2)
    return np.asarray(inside_x & inside_y)


def tile_detections(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    tile: Tile,
    threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One tile's outputs (K, 4), (K,), (K,) → thresholded, shifted to image pixels, kept in its core."""
    confident = scores >= threshold
    shifted = boxes[confident] + np.array([tile.x, tile.y, tile.x, tile.y], dtype=np.float32)
    owned = keep_in_core(shifted, tile)
    return shifted[owned], scores[confident][owned], labels[confident][owned]


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns indices kept, best score first.

    IoU = |A ∩ B| / |A ∪ B| with continuous areas (x2 − x1)(y2 − y1). A box is dropped when its IoU with
    an already kept, higher-scoring box exceeds ``iou_threshold``. Each step is vectorised over all
    remaining boxes. Example: boxes [[0,0,10,10],[1,1,11,11],[20,20,30,30]], scores [.9,.8,.7],
    threshold .5 → [0, 2].
    """
    order = np.argsort(-scores, kind="stable")
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    kept: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        kept.append(int(best))
        inter_w = np.clip(
            np.minimum(boxes[best, 2], boxes[rest, 2]) - np.maximum(boxes[best, 0], boxes[rest, 0]),
            0,
            None,
        )
        inter_h = np.clip(
            np.minimum(boxes[best, 3], boxes[rest, 3]) - np.maximum(boxes[best, 1], boxes[rest, 1]),
            0,
            None,
        )
        intersection = inter_w * inter_h
        union = areas[best] + areas[rest] - intersection
        iou = np.where(union > 0, intersection / np.maximum(union, 1e-12), 0.0)
        order = rest[iou <= iou_threshold]
    return np.asarray(kept, dtype=np.int64)


def classwise_nms(
    boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, iou_threshold: float
) -> np.ndarray:
    """NMS within each label separately; returns kept indices sorted by descending score."""
    kept = [
        np.flatnonzero(labels == label)[nms(boxes[labels == label], scores[labels == label], iou_threshold)]
        for label in np.unique(labels)
    ]
    merged = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
    return merged[np.argsort(-scores[merged], kind="stable")]


def detect_image(
    session: Any,
    sidecar: DetectorSidecar,
    read_region: ReadRegion,
    width: int,
    height: int,
    batch_size: int = 8,
) -> list[Detection]:
    """Detect objects on a width × height image (level-0 pixels) read through ``read_region``.

    Boxes are clipped to the image and returned best score first, labelled with task labels.
    """
    tiles = plan_tiles(width, height, sidecar.tile_size, sidecar.tile_overlap)
    fixed_batch = session.get_inputs()[0].shape[0] == 1
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for group in batched(tiles, batch_size):
        images = np.stack(
            [preprocess(read_region(tile.x, tile.y, tile.width, tile.height), sidecar) for tile in group]
        )
        outputs = run_batch_per_image(session, images) if fixed_batch else run_batch(session, images)
        for index, tile in enumerate(group):
            found.append(
                tile_detections(
                    outputs[0][index],
                    outputs[1][index],
                    outputs[2][index],
                    tile,
                    sidecar.score_threshold,
                )
            )
    return merge_detections(found, sidecar, width, height)


def merge_detections(
    found: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    sidecar: DetectorSidecar,
    width: int,
    height: int,
) -> list[Detection]:
    """Concatenate per-tile detections, clip to the image, class-wise NMS, map to task labels."""
    if not found:
        return []
    boxes = np.concatenate([part[0] for part in found]).reshape(-1, 4)
    scores = np.concatenate([part[1] for part in found])
    labels = np.concatenate([part[2] for part in found])
    boxes = np.clip(boxes, 0, np.array([width, height, width, height], dtype=np.float32))
    keep = classwise_nms(boxes, scores, labels, sidecar.nms_iou)
    return [
        Detection(
            x1=float(boxes[index, 0]),
            y1=float(boxes[index, 1]),
            x2=float(boxes[index, 2]),
            y2=float(boxes[index, 3]),
            score=float(scores[index]),
            label=sidecar.task_label(int(labels[index])),
        )
        for index in keep
    ]
