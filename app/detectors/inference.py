"""Run a contract-conforming ONNX detector over a whole image, tile by tile, in level-0 pixels.

The image is never loaded whole: ``read_region(x, y, w, h)`` returns one (h, w, 3) uint8 RGB tile, so a
large tiled TIFF is read lazily. Tiles overlap by the sidecar's ``tile_overlap``; each tile keeps only
the detections whose centre falls in its *core* (the part of the tile closer to it than to any
neighbour), so an object cut by a tile border is reported by the one tile that sees it whole, and a
final class-wise NMS removes what is left of the duplicates along the core borders.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.detectors.contract import OUTPUT_NAMES, DetectorSidecar
from app.geometry import CONTINUOUS, classwise_nms

logger = logging.getLogger(__name__)

ReadRegion = Callable[[int, int, int, int], np.ndarray]
Outputs = tuple[np.ndarray, np.ndarray, np.ndarray]

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
WARNING, FATAL = 2, 4  # ONNX Runtime logger severities; 2 is its default
AHEAD = 2  # batches being read while the model runs
KEPT_ROWS = 2
ROW_BLOCK_PIXELS = 8 * 2**20  # widest row of tiles read as one block: 24 MiB of RGB


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


def reader_threads(cpus: int | None = None) -> int:
    """Threads that read, decode and normalise tiles while the model runs: one per 8 cores, at least one."""
    return max(1, (cpus or os.cpu_count() or 1) // 8)


def model_threads(reserved: int, cpus: int | None = None) -> int:
    """ONNX Runtime intra-op threads: every core but the ``reserved`` ones (the readers'), at least one.

    ONNX Runtime's default takes every core; the readers decoding the next batch then compete with the
    model for them and the two no longer overlap, which costs most on few cores.
    """
    return max(1, (cpus or os.cpu_count() or 1) - reserved)


def make_session(
    model_path: Path | str, prefer_cuda: bool = True, reserved: int | None = None
) -> tuple[Any, str]:
    """Open an ONNX Runtime session with CUDA first (when asked for and installed), then CPU.

    The session gets ``model_threads(reserved)`` intra-op threads; ``reserved`` defaults to
    :func:`reader_threads`, the cores :func:`detect_images` keeps for its readers. Returns the session
    and the provider that actually runs it: ONNX Runtime silently falls back to CPU when CUDA cannot
    start, so the answer is read back from the session (and logged).
    """
    import onnxruntime

    available = set(onnxruntime.get_available_providers())
    wanted = [CUDA, CPU] if prefer_cuda else [CPU]
    providers = [provider for provider in wanted if provider in available]
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = model_threads(reader_threads() if reserved is None else reserved)
    options.inter_op_num_threads = 1
    with _quiet_onnxruntime(CUDA in providers):
        session = onnxruntime.InferenceSession(str(model_path), sess_options=options, providers=providers)
    provider_used: str = session.get_providers()[0]
    logger.info(
        "detector %s runs on %s (asked for %s, %d intra-op threads)",
        model_path,
        provider_used,
        ", ".join(providers),
        options.intra_op_num_threads,
    )
    return session, provider_used


@contextmanager
def _quiet_onnxruntime(quiet: bool) -> Iterator[None]:
    """Silence ONNX Runtime's default logger meanwhile, then set it back to its default, WARNING (there is
    no getter for the previous level): without CUDA libraries the CUDA provider prints pages of errors
    before the session falls back to CPU, which :func:`make_session` reads back and logs."""
    import onnxruntime

    if not quiet:
        yield
        return
    onnxruntime.set_default_logger_severity(FATAL)
    try:
        yield
    finally:
        onnxruntime.set_default_logger_severity(WARNING)


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


@dataclass(frozen=True)
class ImageInput:
    """One image to detect on: its size in level-0 pixels and a reader of its (h, w, 3) uint8 RGB regions.

    ``read_region(x, y, w, h)`` is called from :func:`detect_images`'s reader threads; with more than
    one reader it must be safe to call concurrently.
    """

    width: int
    height: int
    read_region: ReadRegion


ImageDone = Callable[[int, list[Detection]], None]


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
    return detect_images(session, sidecar, [ImageInput(width, height, read_region)], batch_size)[0]


def detect_images(
    session: Any,
    sidecar: DetectorSidecar,
    images: Sequence[ImageInput],
    batch_size: int = 8,
    on_image: ImageDone | None = None,
    readers: int | None = None,
) -> list[list[Detection]]:
    """Detect objects on every image; returns each image's detections (as :func:`detect_image` does).

    A pipeline: ``readers`` threads (default :func:`reader_threads`) read the next batches' pixels, one
    read per row of tiles, and normalise them into reused input buffers, while this thread runs the model
    on the current batch (ONNX Runtime releases the GIL). Batches fill across images, so small patches
    share a batch; each tile's outputs, thresholds, core and the per-image NMS do not depend on the
    batch. ``on_image(index, detections)`` is called as soon as an image's last tile is decoded.
    """
    plans = [
        plan_tiles(image.width, image.height, sidecar.tile_size, sidecar.tile_overlap) for image in images
    ]
    collector = _Collector(images, plans, sidecar, on_image)
    run = _runner(session)
    with _BatchReader(images, sidecar, batch_size, readers or reader_threads()) as reader:
        for batch, pixels in reader.read(fill_batches(plans, batch_size)):
            collector.add(batch, run(pixels))
    return collector.found


@dataclass
class TileBatch:
    """Tiles that go through the model together, and the image each belongs to."""

    owners: list[int] = field(default_factory=list)
    tiles: list[Tile] = field(default_factory=list)


def fill_batches(plans: Sequence[Sequence[Tile]], batch_size: int) -> Iterator[TileBatch]:
    """The tiles of all images in order, cut into batches of ``batch_size`` that run across images."""
    batch = TileBatch()
    for owner, plan in enumerate(plans):
        for tile in plan:
            batch.owners.append(owner)
            batch.tiles.append(tile)
            if len(batch.tiles) == max(1, batch_size):
                yield batch
                batch = TileBatch()
    if batch.tiles:
        yield batch


def _runner(session: Any) -> Callable[[np.ndarray], Outputs]:
    if session.get_inputs()[0].shape[0] == 1:
        return lambda images: run_batch_per_image(session, images)
    return lambda images: run_batch(session, images)


def normalisation_table(sidecar: DetectorSidecar) -> np.ndarray:
    """(3, 256) float32: row c maps a uint8 value of the model's channel c to (value / 255 − mean) / std.

    Computed with the same float32 operations as :func:`preprocess`, so a lookup gives the same bits.
    """
    values = np.arange(256, dtype=np.float32)[None, :] / 255.0
    mean = np.asarray(sidecar.mean, dtype=np.float32)[:, None]
    std = np.asarray(sidecar.std, dtype=np.float32)[:, None]
    table: np.ndarray = ((values - mean) / std).astype(np.float32)
    return table


def fill_input(out: np.ndarray, pixels: np.ndarray, table: np.ndarray, sidecar: DetectorSidecar) -> None:
    """Write one (h, w, 3) uint8 RGB tile into ``out`` (3, S, S) as :func:`preprocess` would return it."""
    size = sidecar.input_size
    height, width = min(pixels.shape[0], size), min(pixels.shape[1], size)
    order = (2, 1, 0) if sidecar.channel_order == "BGR" else (0, 1, 2)
    for channel, source in enumerate(order):
        if height < size or width < size:
            out[channel].fill(table[channel, sidecar.pad_value])
        # uint8 indices never leave the 256-entry table; mode="clip" skips numpy's bounds check and buffer
        np.take(
            table[channel], pixels[:height, :width, source], out=out[channel, :height, :width], mode="clip"
        )


class _BatchReader:
    """Reads batches on a pool of reader threads, a few ahead of the model, into reused buffers."""

    def __init__(self, images: Sequence[ImageInput], sidecar: DetectorSidecar, batch_size: int, threads: int):
        self._images, self._sidecar = images, sidecar
        self._table = normalisation_table(sidecar)
        self._shape = (max(1, batch_size), 3, sidecar.input_size, sidecar.input_size)
        self._free: list[np.ndarray] = []
        self._rows = [
            _RowBlocks(image) if _RowBlocks.fits(image, sidecar.tile_size) else None for image in images
        ]
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="detect-reader")

    def __enter__(self) -> _BatchReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def read(self, batches: Iterator[TileBatch]) -> Iterator[tuple[TileBatch, np.ndarray]]:
        """Each batch with its (n, 3, S, S) float32 input; a buffer is reused once the caller moves on.

        Each row of tiles in a batch is a task of its own, so reader threads share even a single batch.
        The first batch is read tile by tile and handed out in pieces, as many tiles as are ready, so the
        model starts on its first tile instead of waiting for the whole batch (a single batch of patches
        would otherwise be read before the model runs at all).
        """
        pending: deque[tuple[TileBatch, np.ndarray, list[_Part], bool]] = deque()
        first = True
        while True:
            while len(pending) <= AHEAD and (batch := next(batches, None)) is not None:
                buffer = self._buffer()
                pending.append((batch, buffer, self._submit(batch, buffer, per_tile=first), first))
                first = False
            if not pending:
                return
            batch, buffer, parts, in_pieces = pending.popleft()
            if in_pieces:
                yield from _ready_pieces(batch, buffer, parts)
            else:
                for part in parts:
                    part.future.result()
                yield batch, buffer[: len(batch.tiles)]
            self._free.append(buffer)

    def _buffer(self) -> np.ndarray:
        return self._free.pop() if self._free else np.empty(self._shape, dtype=np.float32)

    def _submit(self, batch: TileBatch, out: np.ndarray, per_tile: bool = False) -> list[_Part]:
        """One read task per run of tiles side by side in one row of one image (per tile if asked)."""
        parts = []
        start = 0
        while start < len(batch.tiles):
            stop = start + 1
            while not per_tile and stop < len(batch.tiles) and _same_row(batch, start, stop):
                stop += 1
            tiles, owner = batch.tiles[start:stop], batch.owners[start]
            future = self._pool.submit(self._read_row, owner, tiles, out[start:stop])
            parts.append(_Part(start, stop, future))
            start = stop
        return parts

    def _read_row(self, owner: int, tiles: Sequence[Tile], out: np.ndarray) -> None:
        """Tiles side by side in one row of one image: one block of pixels, then a slice per tile."""
        left = tiles[0].x
        right = max(tile.x + tile.width for tile in tiles)
        top, height = tiles[0].y, max(tile.height for tile in tiles)
        rows = self._rows[owner]
        if rows is not None:
            block, left = rows.block(top, height), 0
        else:
            block = self._images[owner].read_region(left, top, right - left, height)
        for slot, tile in enumerate(tiles):
            piece = block[: tile.height, tile.x - left : tile.x - left + tile.width]
            fill_input(out[slot], piece, self._table, self._sidecar)


class _RowBlocks:
    """Full-width pixel blocks of one image's rows of tiles, for images narrow enough to read that way.

    Rows of tiles overlap by ``tile_overlap``; a row reads only the lines below the row above it and
    joins them to that row's tail, so a compressed TIFF tile on the overlap is decoded once, not twice.
    The last ``KEPT_ROWS`` rows are kept: a row split between two batches is read once.
    """

    def __init__(self, image: ImageInput) -> None:
        self._image = image
        self._lock = threading.Lock()
        self._blocks: dict[int, np.ndarray] = {}

    @staticmethod
    def fits(image: ImageInput, tile_size: int) -> bool:
        return image.width * tile_size <= ROW_BLOCK_PIXELS

    def block(self, top: int, height: int) -> np.ndarray:
        """Lines [top, top + height) of the image, all columns, (height, width, 3) uint8."""
        with self._lock:
            if top not in self._blocks:
                self._blocks[top] = self._read(top, height)
                while len(self._blocks) > KEPT_ROWS:
                    # Rows may be asked for out of order (threads): never evict the block just read.
                    del self._blocks[min(start for start in self._blocks if start != top)]
            return self._blocks[top]

    def _read(self, top: int, height: int) -> np.ndarray:
        above = max((start for start in self._blocks if start < top), default=None)
        end = -1 if above is None else above + self._blocks[above].shape[0]
        if above is None or end <= top:
            return self._image.read_region(0, top, self._image.width, height)
        shared = self._blocks[above][top - above : top - above + height]
        if end >= top + height:
            return shared
        rest = self._image.read_region(0, end, self._image.width, top + height - end)
        return np.concatenate([shared, rest])


@dataclass(frozen=True)
class _Part:
    """Tiles [start, stop) of a batch, being read into its buffer by ``future``."""

    start: int
    stop: int
    future: Future[None]


def _ready_pieces(
    batch: TileBatch, buffer: np.ndarray, parts: Sequence[_Part]
) -> Iterator[tuple[TileBatch, np.ndarray]]:
    """The batch in pieces: wait for the next part, then hand out it and every part after it already read."""
    index = 0
    while index < len(parts):
        start = parts[index].start
        parts[index].future.result()
        index += 1
        while index < len(parts) and parts[index].future.done():
            parts[index].future.result()
            index += 1
        stop = parts[index - 1].stop
        yield TileBatch(batch.owners[start:stop], batch.tiles[start:stop]), buffer[start:stop]


def _same_row(batch: TileBatch, first: int, other: int) -> bool:
    return batch.owners[other] == batch.owners[first] and batch.tiles[other].y == batch.tiles[first].y


class _Collector:
    """Decodes tiles as their outputs come back; an image's boxes are merged when its last tile is in."""

    def __init__(
        self,
        images: Sequence[ImageInput],
        plans: Sequence[Sequence[Tile]],
        sidecar: DetectorSidecar,
        on_image: ImageDone | None,
    ) -> None:
        self._images, self._sidecar, self._on_image = images, sidecar, on_image
        self._left = [len(plan) for plan in plans]
        self._parts: list[list[Outputs]] = [[] for _ in images]
        self.found: list[list[Detection]] = [[] for _ in images]

    def add(self, batch: TileBatch, outputs: Outputs) -> None:
        boxes, scores, labels = outputs
        threshold = self._sidecar.score_threshold
        for slot, (owner, tile) in enumerate(zip(batch.owners, batch.tiles, strict=True)):
            self._parts[owner].append(
                tile_detections(boxes[slot], scores[slot], labels[slot], tile, threshold)
            )
            self._left[owner] -= 1
            if self._left[owner] == 0:
                self._finish(owner)

    def _finish(self, owner: int) -> None:
        image = self._images[owner]
        self.found[owner] = merge_detections(self._parts[owner], self._sidecar, image.width, image.height)
        self._parts[owner] = []
        if self._on_image is not None:
            self._on_image(owner, self.found[owner])


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
    keep = classwise_nms(boxes, scores, labels, sidecar.nms_iou, CONTINUOUS)
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
