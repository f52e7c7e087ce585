"""Evaluation maths of DESIGN.md "Evaluation": matching, average precision, consensus, votes, time per image.

Pure numpy, no I/O. Conventions used throughout:
- boxes: float64 (N, 4) as x1, y1, x2, y2 in pixels at level 0, corners inclusive;
- labels, images, experts: int64 (N,) ids; detection order is array order (expert boxes all have
  confidence 1);
- filtering (deleted objects, border objects) is the caller's job, with `counted_mask`, applied alike to
  expert objects, reference objects and injected-error register entries.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, TypeVar

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from app import geometry
from app.geometry import PixelConvention

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
Scalar = TypeVar("Scalar", bound=np.generic)

PAPER_IOU = 0.25
BORDER_MARGIN_PX = 2.0
CONSENSUS_RADIUS_PX = 50.0
MAX_GAP_SECONDS = 300.0
NO_MATCH = -1


# ---------------------------------------------------------------- boxes


def pixels(plus_one: bool) -> PixelConvention:
    """The geometry convention of a `plus_one` flag: inclusive pixel boxes (+1) or continuous boxes."""
    return PixelConvention.INCLUSIVE if plus_one else PixelConvention.CONTINUOUS


def take_rows(table: npt.NDArray[Scalar], index: IntArray | BoolArray) -> npt.NDArray[Scalar]:
    """`table[index]` of a 2-D table (N, K) by integer indices (negative ones count from the end) or a mask
    (N,): by `np.take` or `np.compress`, which copy whole rows, where numpy's fancy indexing goes element
    by element (10–30× slower on (N, 4) boxes).

    >>> take_rows(np.arange(6.0).reshape(3, 2), np.array([2, 0]))
    array([[4., 5.],
           [0., 1.]])
    """
    if index.dtype == np.bool_:
        return table.compress(index, axis=0)
    return table.take(index, axis=0)


def _small_range(values: IntArray, size: int) -> bool:
    """Whether a table of `size` entries costs less than sorting `values` (a few per value, or small)."""
    return size <= 8 * len(values) + 65_536


def distinct_ints(values: IntArray, size: int) -> IntArray:
    """`np.unique(values)` of integers in [0, size), by marking a table of size flags instead of hashing and
    sorting (about 10× faster where size is a few times len(values); `np.unique` itself where it is not).

    >>> distinct_ints(np.array([4, 1, 4]), 6)
    array([1, 4])
    """
    if not _small_range(values, size):
        return np.unique(values)
    present = np.zeros(size, dtype=np.bool_)
    present[values] = True
    return np.flatnonzero(present)


def distinct_values(values: IntArray) -> IntArray:
    """`np.unique` of integers of any range: `distinct_ints` of the values less their minimum where the range
    is small, else `np.unique` itself.

    >>> distinct_values(np.array([12, 10, 12]))
    array([10, 12])
    """
    if len(values) == 0:
        return np.unique(values)
    low, high = int(values.min()), int(values.max())
    if not _small_range(values, high - low + 1):
        return np.unique(values)
    return distinct_ints(values - low, high - low + 1) + low


def first_indices(values: IntArray, size: int) -> IntArray:
    """`np.unique(values, return_index=True)[1]` of integers in [0, size): the index of each distinct value's
    first occurrence, by ascending value, from one `np.minimum.at` into a table of size indices.

    >>> first_indices(np.array([4, 1, 4, 1, 0]), 6)
    array([4, 1, 0])
    """
    if not _small_range(values, size):
        return np.asarray(np.unique(values, return_index=True)[1], dtype=np.int64)
    first = np.full(size, len(values), dtype=np.int64)
    np.minimum.at(first, values, np.arange(len(values), dtype=np.int64))
    found: IntArray = first[first < len(values)]
    return found


def stable_order(values: IntArray, size: int) -> IntArray:
    """`np.argsort(values, kind="stable")` of integers in [0, size): numpy's radix sort of 16-bit integers
    where size ≤ 2¹⁶ (one pass per byte instead of a merge sort: about 4× faster on ten thousand values), its
    merge sort otherwise. A stable order is unique, so both give the same indices.

    >>> stable_order(np.array([2, 0, 2, 1]), 3)
    array([1, 3, 0, 2])
    """
    if size > 2**16:
        return np.argsort(values, kind="stable")
    order: IntArray = np.argsort(values.astype(np.uint16), kind="stable")
    return order


def contained_ints(values: IntArray, wanted: IntArray) -> BoolArray:
    """`np.isin(values, wanted)` of integers: by a table of flags over the values' range where that range is
    small against the values (a gather per value instead of numpy's sort or table of both sides), else
    `np.isin` itself.

    >>> contained_ints(np.array([4, 1, 7, 4]), np.array([4, 9]))
    array([ True, False, False,  True])
    """
    wanted = np.asarray(wanted, dtype=np.int64)
    if not len(values) or not len(wanted):
        return np.isin(values, wanted)
    low, high = int(values.min()), int(values.max())
    if not _small_range(values, high - low + 1):
        return np.isin(values, wanted)
    flags = np.zeros(high - low + 1, dtype=np.bool_)
    inside = wanted[(wanted >= low) & (wanted <= high)]
    flags[inside - low] = True
    found: BoolArray = flags.take(values - low)
    return found


def mean_of(values: FloatArray) -> float:
    """`float(np.mean(values))` of a non-empty float64 vector without `np.mean`'s dispatch: the same pairwise
    sum (`np.add.reduce`) divided by the count, so the same bits.

    >>> mean_of(np.array([1.0, 2.0, 4.0]))
    2.3333333333333335
    """
    return float(np.add.reduce(values)) / len(values)


def sorted_positions(sorted_values: IntArray, values: IntArray) -> IntArray:
    """`np.searchsorted(sorted_values, values)` of integers: by a table of that answer for every integer of
    the sorted values' range where that range is small against the values and holds them, a gather per value
    in place of a binary search (several times faster on thousands of values).

    >>> sorted_positions(np.array([3, 5, 9]), np.array([9, 4, 3]))
    array([2, 1, 0])
    """
    if len(sorted_values) and len(values):
        low, high = int(sorted_values[0]), int(sorted_values[-1])
        if high - low < 4 * len(values) + 64 and low <= int(values.min()) and int(values.max()) <= high:
            table = np.searchsorted(sorted_values, np.arange(low, high + 1, dtype=np.int64))
            found: IntArray = table.take(values - low)
            return found
    searched: IntArray = np.searchsorted(sorted_values, values)
    return searched


def box_areas(boxes: FloatArray, plus_one: bool = True) -> FloatArray:
    """Areas (N,) of boxes (N, 4): (x2 − x1 + p)(y2 − y1 + p), p = 1 with the +1-pixel convention.

    >>> box_areas(np.array([[0.0, 0.0, 9.0, 4.0]]))
    array([50.])
    """
    return geometry.box_areas(boxes, pixels(plus_one))


def iou_matrix(a: FloatArray, b: FloatArray, plus_one: bool = True) -> FloatArray:
    """IoU (N, M) of every box of a (N, 4) with every box of b (M, 4) (`app.geometry.iou_of_rows`).

    p = 1 with the +1-pixel convention (boxes that touch share one pixel row).

    >>> iou_matrix(np.array([[0.0, 0, 9, 9]]), np.array([[5.0, 0, 14, 9]]))  # 50 / (100 + 100 − 50)
    array([[0.33333333]])
    """
    return geometry.iou_matrix(a, b, pixels(plus_one))


def paired_iou(a: FloatArray, b: FloatArray, plus_one: bool = True) -> FloatArray:
    """IoU (K,) of row k of a (K, 4) with row k of b (K, 4); formula as `iou_matrix`.

    >>> paired_iou(np.array([[0.0, 0, 9, 9]]), np.array([[0.0, 0, 9, 9]]))
    array([1.])
    """
    return geometry.paired_iou(a, b, pixels(plus_one))


def box_centres(boxes: FloatArray) -> FloatArray:
    """Centres (N, 2) = ((x1 + x2) / 2, (y1 + y2) / 2) of boxes (N, 4)."""
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2.0, (boxes[:, 1] + boxes[:, 3]) / 2.0], axis=1)


def inside_image_mask(
    boxes: FloatArray,
    widths: FloatArray,
    heights: FloatArray,
    margin: float = BORDER_MARGIN_PX,
) -> BoolArray:
    """True (N,) where a box lies strictly inside its image by more than `margin` pixels.

    x1 > m, y1 > m, x2 < width − m, y2 < height − m; widths and heights are (N,) or scalars.

    >>> inside_image_mask(np.array([[3.0, 3, 96, 96], [2.0, 3, 50, 50]]), np.array(100.0), np.array(100.0))
    array([ True, False])
    """
    mask: BoolArray = (
        (boxes[:, 0] > margin)
        & (boxes[:, 1] > margin)
        & (boxes[:, 2] < widths - margin)
        & (boxes[:, 3] < heights - margin)
    )
    return mask


def counted_mask(
    boxes: FloatArray,
    widths: FloatArray,
    heights: FloatArray,
    deleted: BoolArray,
    margin: float = BORDER_MARGIN_PX,
) -> BoolArray:
    """Objects that count in every evaluation (N,): not deleted and `inside_image_mask`."""
    mask: BoolArray = ~deleted & inside_image_mask(boxes, widths, heights, margin)
    return mask


# ---------------------------------------------------------------- greedy matching (paper-compatible)


@dataclass(frozen=True)
class GreedyMatch:
    """Result of `greedy_match`: per detection TP flag and chosen reference, per reference whether taken.

    A detection without an overlapping reference is never a TP when iou > 0; its `best_reference` (the first
    reference of its key, IoU 0) is looked up on first use only."""

    true_positive: BoolArray
    best_iou: FloatArray
    reference_taken: BoolArray
    paired_best: IntArray  # best_reference where the detection overlaps a reference of its key, else NO_MATCH
    det_keys: IntArray
    ref_keys: IntArray

    @cached_property
    def best_reference(self) -> IntArray:
        return _with_first_references(self.paired_best, self.det_keys, self.ref_keys)


def best_reference(
    det_boxes: FloatArray,
    det_keys: IntArray,
    ref_boxes: FloatArray,
    ref_keys: IntArray,
    plus_one: bool = True,
) -> tuple[IntArray, FloatArray]:
    """For each detection, the reference with the same key and the highest IoU (first in array order on ties).

    Shapes: det (N, 4), (N,); ref (M, 4), (M,). Returns indices (N,) into the reference arrays
    (NO_MATCH = −1 where no reference has the key) and their IoU (N,) (0 where none).
    Only same-key pairs are built, so the cost is Σ over keys of n_det · n_ref, not N · M.

    >>> best_reference(np.array([[0.0, 0, 9, 9]]), np.array([7]),
    ...                np.array([[0.0, 0, 9, 9], [0.0, 0, 9, 9]]), np.array([7, 7]))
    (array([0]), array([1.]))
    """
    return best_of_overlaps(overlaps(det_boxes, det_keys, ref_boxes, ref_keys, plus_one), det_keys, ref_keys)


@dataclass(frozen=True)
class Overlaps:
    """Pairs (P,) of a detection and a reference with equal keys whose boxes intersect, and their IoU,
    grouped by detection with references ascending (`overlaps`). Computed once, they serve every matching
    of the same boxes: keep a subset with `where` (same class, say) and the order stays."""

    det: IntArray
    ref: IntArray
    iou: FloatArray

    def where(self, keep: BoolArray) -> Overlaps:
        kept = np.flatnonzero(keep)  # found once, gathered from the three arrays
        return Overlaps(self.det.take(kept), self.ref.take(kept), self.iou.take(kept))


def overlaps(
    det_boxes: FloatArray,
    det_keys: IntArray,
    ref_boxes: FloatArray,
    ref_keys: IntArray,
    plus_one: bool = True,
) -> Overlaps:
    """Every same-key pair of a detection (N, 4) and a reference (M, 4) with IoU > 0, with its IoU."""
    det_index, ref_index = _overlapping_same_key_pairs(det_boxes, det_keys, ref_boxes, ref_keys, plus_one)
    det_rows = np.ascontiguousarray(det_boxes.take(det_index, axis=0).T)
    ref_rows = np.ascontiguousarray(ref_boxes.take(ref_index, axis=0).T)
    return Overlaps(det_index, ref_index, geometry.iou_of_rows(det_rows, ref_rows, pixels(plus_one)))


def best_of_overlaps(pairs: Overlaps, det_keys: IntArray, ref_keys: IntArray) -> tuple[IntArray, FloatArray]:
    """`best_reference` from the overlapping pairs of those keys (`overlaps`, or a `where` of coarser keys'
    pairs): detections without a pair get the first reference of their key with IoU 0."""
    best, best_iou = _best_of_pairs(pairs, len(det_keys))
    return _with_first_references(best, det_keys, ref_keys), best_iou


def _best_of_pairs(pairs: Overlaps, n_det: int) -> tuple[IntArray, FloatArray]:
    """`best_of_overlaps` of the detections with a pair; NO_MATCH (IoU 0) for those without."""
    best_iou = np.zeros(n_det, dtype=np.float64)
    best = np.full(n_det, NO_MATCH, dtype=np.int64)
    det_index, ref_index, iou = pairs.det, pairs.ref, pairs.iou
    if len(det_index) == 0:
        return best, best_iou
    # Pairs come grouped by detection with references ascending, so the first maximum of a group wins ties.
    group_starts = np.flatnonzero(_starts_of_runs(det_index))
    group_max = np.maximum.reduceat(iou, group_starts)
    group_sizes = np.diff(np.append(group_starts, len(iou)))
    at_max = np.flatnonzero(iou == np.repeat(group_max, group_sizes))
    chosen = at_max[_starts_of_runs(det_index[at_max])]
    best[det_index[chosen]] = ref_index[chosen]
    best_iou[det_index[chosen]] = iou[chosen]
    return best, best_iou


def _with_first_references(best: IntArray, det_keys: IntArray, ref_keys: IntArray) -> IntArray:
    """best with each NO_MATCH replaced by the first reference of the detection's key (IoU 0 with all)."""
    unpaired = np.flatnonzero(best == NO_MATCH)
    if len(unpaired) == len(best):
        return _first_reference_of_key(det_keys, ref_keys)
    if len(unpaired):
        best = best.copy()
        best[unpaired] = _first_reference_of_key(det_keys[unpaired], ref_keys)
    return best


def _starts_of_runs(values: IntArray) -> BoolArray:
    """True where a run of equal consecutive values begins: [4, 4, 7] → [True, False, True]."""
    starts = np.ones(len(values), dtype=np.bool_)
    starts[1:] = values[1:] != values[:-1]
    return starts


def _same_key_pairs(det_keys: IntArray, ref_keys: IntArray) -> tuple[IntArray, IntArray]:
    """All (detection, reference) index pairs with equal keys, grouped by detection, references ascending."""
    ref_order = np.argsort(ref_keys, kind="stable")
    sorted_keys = ref_keys[ref_order]
    starts = np.searchsorted(sorted_keys, det_keys, side="left")
    stops = np.searchsorted(sorted_keys, det_keys, side="right")
    counts = stops - starts
    det_index = np.repeat(np.arange(len(det_keys), dtype=np.int64), counts)
    group_start = np.repeat(np.cumsum(counts) - counts, counts)
    position = np.arange(int(counts.sum()), dtype=np.int64) - group_start + np.repeat(starts, counts)
    ref_index = ref_order[position].astype(np.int64)
    return det_index, ref_index


def _first_reference_of_key(det_keys: IntArray, ref_keys: IntArray) -> IntArray:
    """For each detection, the first reference (array order) with its key, NO_MATCH where none has it."""
    order = np.argsort(ref_keys, kind="stable")
    sorted_keys = ref_keys[order]
    where = np.searchsorted(sorted_keys, det_keys, side="left")
    clipped = np.minimum(where, max(len(sorted_keys) - 1, 0))
    found = (where < len(sorted_keys)) & (sorted_keys[clipped] == det_keys) if len(sorted_keys) else where < 0
    first: IntArray = np.where(found, order[clipped] if len(order) else NO_MATCH, NO_MATCH).astype(np.int64)
    return first


def _overlapping_same_key_pairs(
    det_boxes: FloatArray, det_keys: IntArray, ref_boxes: FloatArray, ref_keys: IntArray, plus_one: bool
) -> tuple[IntArray, IntArray]:
    """The (detection, reference) pairs of `_same_key_pairs` whose boxes intersect (IoU > 0), in its order.

    Only these can have a positive IoU, and on large images with hundreds of objects they are a small part of
    all same-key pairs. A sweep along x: references sorted by (key, x1); a detection's candidates are the
    references of its key whose x1 lies in [x1 − widest reference, x2 + p], found by two binary searches,
    then kept when the boxes really intersect.
    """
    if len(det_keys) == 0 or len(ref_keys) == 0:
        return _same_key_pairs(det_keys, ref_keys)
    pad = pixels(plus_one).pad
    left = min(float(det_boxes[:, 0].min()), float(ref_boxes[:, 0].min()))
    right = max(float(det_boxes[:, 2].max()), float(ref_boxes[:, 2].max()))
    widest = float((ref_boxes[:, 2] - ref_boxes[:, 0]).max()) + pad + 1.0
    block = right - left + widest + pad + 2.0  # one key's x range, windows included: keys never mix
    det_codes, ref_codes = _key_codes(det_keys, ref_keys, block)
    ref_position = ref_codes * block + (ref_boxes[:, 0] - left)
    order = np.argsort(ref_position)  # not stable: the pairs are put in order at the end
    sorted_position = ref_position[order]
    det_base = det_codes * block - left
    starts, stops = det_base + det_boxes[:, 0] - widest, det_base + det_boxes[:, 2] + pad + 1.0
    low, high = _windows(sorted_position, starts, stops, det_codes, block, widest)
    counts = np.maximum(high - low, 0)
    det_index = np.repeat(np.arange(len(det_keys), dtype=np.int64), counts)
    shift = np.repeat(low - (np.cumsum(counts) - counts), counts)
    ref_index = order[np.arange(len(det_index), dtype=np.int64) + shift].astype(np.int64, copy=False)
    # The windows lie inside their key's block, so only the boxes remain to compare: y first (the windows
    # bound x already, so y drops most candidates and the x test sees fewer), then x. The kept candidates'
    # positions found once and gathered from both index arrays (two boolean selections scan the mask twice).
    for low_side, high_side in ((1, 3), (0, 2)):
        det_low, det_high = det_boxes[:, low_side], det_boxes[:, high_side]
        ref_low, ref_high = ref_boxes[:, low_side], ref_boxes[:, high_side]
        keep = np.flatnonzero(
            np.maximum(det_low[det_index], ref_low[ref_index])
            < (np.minimum(det_high[det_index], ref_high[ref_index]) + pad)
        )
        det_index, ref_index = det_index.take(keep), ref_index.take(keep)
    pair_order = np.argsort(det_index * len(ref_keys) + ref_index, kind="stable")
    return det_index[pair_order], ref_index[pair_order]


def _windows(
    sorted_position: FloatArray,
    starts: FloatArray,
    stops: FloatArray,
    codes: FloatArray,
    block: float,
    widest: float,
) -> tuple[IntArray, IntArray]:
    """Windows [low, high) of the sorted positions that hold every position in [start, stop] of each needle
    and lie in its key's block [code · block, (code + 1) · block).

    By buckets of the positions a step wide (at most 1/16 of the widest box): a prefix count of the positions
    per bucket, gathered per needle, in place of two binary searches per needle (4–5× faster on thousands).
    A window may also hold the positions up to one step past its ends, which the caller's exact comparison of
    the boxes drops: the windows are a pixel wider than any intersecting box needs, so rounding loses nothing.
    Binary searches where the buckets would be wider than a quarter of the widest box (keys spread over a
    range far larger than their positions: a table of a few buckets per position could not be finer) or a
    bound is not finite.
    """
    keys = int(codes.max(initial=0)) + 1
    span = keys * block
    step = max(widest / 16.0, span / (2.0 * (len(starts) + len(sorted_position))))
    if step > widest / 4.0 or not (np.isfinite(starts).all() and np.isfinite(stops).all()):
        return (
            np.searchsorted(sorted_position, starts, side="left"),
            np.searchsorted(sorted_position, stops, side="right"),
        )
    buckets = int(span / step) + 2
    bucket_of = (sorted_position / step).astype(np.int64)
    first = np.zeros(buckets + 1, dtype=np.int64)  # first[b]: positions in buckets before b
    np.cumsum(np.bincount(bucket_of, minlength=buckets)[:buckets], out=first[1:])
    low_bucket = np.clip(np.floor(starts / step), 0, buckets).astype(np.int64)
    high_bucket = np.clip(np.floor(stops / step) + 1.0, 0, buckets).astype(np.int64)
    key_first = np.searchsorted(sorted_position, np.arange(keys + 1, dtype=np.float64) * block, side="left")
    key = codes.astype(np.int64)
    low: IntArray = np.maximum(first.take(low_bucket), key_first.take(key))
    high: IntArray = np.minimum(first.take(high_bucket), key_first.take(key + 1))
    return low, high


def _key_codes(det_keys: IntArray, ref_keys: IntArray, block: float) -> tuple[FloatArray, FloatArray]:
    """Keys as small non-negative numbers, order kept, so that code · block + x stays exact to far below a
    pixel in float64: the keys less their minimum when they span few values, else their ranks."""
    low = min(int(det_keys.min()), int(ref_keys.min()))
    high = max(int(det_keys.max()), int(ref_keys.max()))
    if (high - low + 1) * block < 2.0**40:
        return (det_keys - low).astype(np.float64), (ref_keys - low).astype(np.float64)
    codes = np.unique(np.concatenate([det_keys, ref_keys]), return_inverse=True)[1].reshape(-1)
    return codes[: len(det_keys)].astype(np.float64), codes[len(det_keys) :].astype(np.float64)


def match_keys(labels: IntArray, images: IntArray) -> IntArray:
    """One int64 key per (image, label) pair, so that same key ⇔ same image and same class."""
    labels64 = labels.astype(np.int64)
    images64 = images.astype(np.int64)
    span = int(labels64.max(initial=0)) - int(labels64.min(initial=0)) + 1
    keys: IntArray = images64 * span + (labels64 - int(labels64.min(initial=0)))
    return keys


def joint_keys(
    det_labels: IntArray,
    det_images: IntArray,
    ref_labels: IntArray,
    ref_images: IntArray,
) -> tuple[IntArray, IntArray]:
    keys = match_keys(
        np.concatenate([det_labels, ref_labels]),
        np.concatenate([det_images, ref_images]),
    )
    return keys[: len(det_labels)], keys[len(det_labels) :]


def greedy_match(
    det_boxes: FloatArray,
    det_labels: IntArray,
    det_images: IntArray,
    ref_boxes: FloatArray,
    ref_labels: IntArray,
    ref_images: IntArray,
    iou: float = PAPER_IOU,
    plus_one: bool = True,
) -> GreedyMatch:
    """Pascal-VOC greedy matching in detection (array) order, as the published analysis did.

    Detection d takes r(d) = argmax_r IoU(d, r) over references of the same image and class (first on ties);
    d is TP ⇔ IoU(d, r(d)) ≥ iou and no earlier detection took r(d); otherwise FP (it does not try the
    next-best reference). Since r(d) does not depend on what was taken, TP = first detection per r(d).
    Shapes: det (N, 4), (N,), (N,); ref (M, 4), (M,), (M,).

    Example: two identical detections on one reference → TP, FP.
    """
    det_keys, ref_keys = joint_keys(det_labels, det_images, ref_labels, ref_images)
    pairs = overlaps(det_boxes, det_keys, ref_boxes, ref_keys, plus_one)
    return greedy_of_overlaps(pairs, det_keys, ref_keys, iou)


def greedy_of_overlaps(pairs: Overlaps, det_keys: IntArray, ref_keys: IntArray, iou: float) -> GreedyMatch:
    """`greedy_match` from the overlapping pairs of those keys (see `best_of_overlaps`)."""
    paired, best_iou = _best_of_pairs(pairs, len(det_keys))
    # with iou > 0 only a detection with a pair can be a TP; iou ≤ 0 lets the first reference of a key win
    best = paired if iou > 0 else _with_first_references(paired, det_keys, ref_keys)
    candidate = np.flatnonzero((best != NO_MATCH) & (best_iou >= iou))
    first = first_indices(best[candidate], len(ref_keys))
    winners = candidate[first]
    true_positive = np.zeros(len(det_keys), dtype=np.bool_)
    true_positive[winners] = True
    taken = np.zeros(len(ref_keys), dtype=np.bool_)
    taken[best[winners]] = True
    return GreedyMatch(true_positive, best_iou, taken, best, det_keys, ref_keys)


# ---------------------------------------------------------------- average precision and concordance


def voc_average_precision(tp: BoolArray, n_ref: int) -> float:
    """Pascal-VOC (2010+) every-point interpolated average precision of a ranked detection list.

    tp: (N,) bool, detections in rank order. recall_k = TP_k / n_ref, precision_k = TP_k / k;
    AP = Σ_k (recall_k − recall_{k−1}) · max_{j ≥ k} precision_j.
    n_ref = 0 gives 0 (the published analysis's NaN, turned into 0); no detections give 0.

    Example: tp = [1, 0, 1], n_ref = 3 → recall 1/3, 1/3, 2/3; precision 1, 1/2, 2/3;
    AP = 1/3 · 1 + 1/3 · 2/3 = 5/9.
    """
    if n_ref <= 0 or len(tp) == 0:
        return 0.0
    true_positives = np.cumsum(tp, dtype=np.float64)
    ranks = np.arange(1, len(tp) + 1, dtype=np.float64)
    recall = np.concatenate([[0.0], true_positives / n_ref])
    precision = true_positives / ranks
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(np.diff(recall) * envelope))


def grouped_average_precision(true_positive: BoolArray, groups: IntArray, n_ref: IntArray) -> FloatArray:
    """`voc_average_precision` of G ranked lists at once, without a Python loop over the lists.

    true_positive, groups: (N,); detection k belongs to list groups[k] ∈ [0, G), each list's detections in
    rank order (lists may interleave). n_ref: (G,) reference objects of each list. Returns AP (G,) with
    AP_g = Σ_k (recall_k − recall_{k−1}) · max_{j ≥ k} precision_j over list g, 0 where n_ref_g = 0 or the
    list is empty, as `voc_average_precision`.

    Example: tp = [1, 1, 0, 1], groups = [0, 1, 0, 0], n_ref = [3, 2] → list 0 is [1, 0, 1] of 3, list 1 is
    [1] of 2 → AP = [5/9, 1/2].
    """
    size = len(n_ref)
    order = stable_order(groups, size)
    members = groups[order]
    counts = np.bincount(members, minlength=size)
    starts = np.cumsum(counts) - counts
    first = np.repeat(starts, counts)
    hits = np.cumsum(true_positive[order], dtype=np.float64)
    true_positives = hits - np.concatenate([[0.0], hits])[first]
    ranks = np.arange(1, len(members) + 1, dtype=np.float64) - first
    recall = true_positives / np.maximum(n_ref, 1)[members]
    previous_recall = np.concatenate([[0.0], recall[:-1]])
    previous_recall[starts[counts > 0]] = 0.0
    envelope = _suffix_max_by_group(true_positives / ranks, members, size)
    ap = np.bincount(members, weights=(recall - previous_recall) * envelope, minlength=size)
    ap[np.asarray(n_ref) <= 0] = 0.0
    return np.asarray(ap, dtype=np.float64)


def _suffix_max_by_group(values: FloatArray, groups: IntArray, size: int) -> FloatArray:
    """max_{j ≥ k, groups_j = groups_k} values_j (N,) for groups (N,) ascending in [0, size).

    One running maximum along the rows of a table with a row per group, each group's values right-aligned
    in reverse order behind −∞ (a maximum only picks values, so the result is exact), where that table is
    at most a few times N; else one reversed running maximum over integer keys (G − 1 − group) · L + rank of
    the value among the L distinct values: keys grow along the reversed traversal, so a later group never
    leaks into an earlier one, and ranks keep the result exact.
    """
    counts = np.bincount(groups, minlength=size)
    width = int(counts.max(initial=0))
    if size * width <= 4 * len(values) + 1024:
        rank_in_group = np.arange(len(values)) - (np.cumsum(counts) - counts)[groups]
        cells = groups * width + (width - 1 - rank_in_group)
        table = np.full(size * width, -np.inf)
        table[cells] = values
        running = np.maximum.accumulate(table.reshape(size, width), axis=1).reshape(-1)
        envelope: FloatArray = running[cells]
        return envelope
    levels, rank = np.unique(values, return_inverse=True)
    keys = (size - 1 - groups) * len(levels) + rank.reshape(-1)
    suffix = np.maximum.accumulate(keys[::-1])[::-1]
    result: FloatArray = levels[suffix - (size - 1 - groups) * len(levels)]
    return result


@dataclass(frozen=True)
class Concordance:
    """Paper-compatible concordance: mean of per-class AP over the union of classes."""

    mean: float
    per_class: dict[int, float]


def paper_concordance(
    det_boxes: FloatArray,
    det_labels: IntArray,
    det_images: IntArray,
    ref_boxes: FloatArray,
    ref_labels: IntArray,
    ref_images: IntArray,
    iou: float = PAPER_IOU,
) -> Concordance:
    """What the paper calls mIoU: mean over classes c of AP_c (`voc_average_precision`).

    Classes C = labels of detections ∪ labels of reference; mean = (1/|C|) Σ_c AP_c, AP_c = 0 when the
    reference has no object of class c. TP/FP from `greedy_match` (detection order = array order,
    +1-pixel IoU).
    Shapes: det (N, 4), (N,), (N,); ref (M, 4), (M,), (M,).

    Example: one reference box of class 0, detections [same box class 0, same box class 1] →
    AP_0 = 1, AP_1 = 0, mean 0.5.
    """
    match = greedy_match(det_boxes, det_labels, det_images, ref_boxes, ref_labels, ref_images, iou)
    classes = np.union1d(det_labels, ref_labels)
    per_class = {
        int(label): voc_average_precision(
            match.true_positive[det_labels == label], int(np.count_nonzero(ref_labels == label))
        )
        for label in classes
    }
    mean = float(np.mean(list(per_class.values()))) if per_class else 0.0
    return Concordance(mean, per_class)


def matched_register_entries(
    entry_boxes: FloatArray,
    entry_labels: IntArray,
    entry_images: IntArray,
    det_boxes: FloatArray,
    det_labels: IntArray,
    det_images: IntArray,
    iou: float = PAPER_IOU,
    rule: Literal["greedy", "any"] = "greedy",
) -> BoolArray:
    """Whether each injected-error register entry (K,) is in an expert's final objects (N,).

    rule "greedy" (published): entry e is matched ⇔ `greedy_match` of the detections against the entries
    (entries as reference) marks e taken. rule "any": ⇔ some detection with e's image and label has
    IoU ≥ iou. They differ only when one detection is the best match of two entries.

    Example: entry [0, 0, 9, 9] label 2, detection [0, 0, 9, 9] label 2 → [True]; label 3 → [False].
    """
    if rule == "greedy":
        match = greedy_match(
            det_boxes,
            det_labels,
            det_images,
            entry_boxes,
            entry_labels,
            entry_images,
            iou,
        )
        return match.reference_taken
    entry_keys, det_keys = joint_keys(entry_labels, entry_images, det_labels, det_images)
    _, best_iou = best_reference(entry_boxes, entry_keys, det_boxes, det_keys)
    found: BoolArray = best_iou >= iou
    return found


# ---------------------------------------------------------------- one-to-one matching, precision, recall, F1


@dataclass(frozen=True)
class DetectionScores:
    true_positives: int
    false_positives: int
    false_negatives: int
    precision: float
    recall: float
    f1: float


def one_to_one_match(
    det_boxes: FloatArray,
    det_labels: IntArray,
    det_images: IntArray,
    ref_boxes: FloatArray,
    ref_labels: IntArray,
    ref_images: IntArray,
    by: Literal["iou", "centre"] = "iou",
    threshold: float = PAPER_IOU,
    method: Literal["hungarian", "greedy"] = "hungarian",
) -> tuple[IntArray, IntArray]:
    """One-to-one pairs (P,), (P,) of detection and reference indices, same image and class.

    by "iou": a pair needs IoU ≥ threshold, score = IoU (maximised); by "centre": centre distance ≤ threshold
    pixels, score = −distance. "hungarian" maximises Σ score over admissible pairs per (image, class)
    (scipy linear_sum_assignment); "greedy" takes admissible pairs by best score first.

    Example: det [[0,0,9,9]], ref [[1,1,10,10]], same class, by iou 0.5 → ([0], [0]) (IoU 81/119 ≈ 0.68).
    """
    det_keys, ref_keys = joint_keys(det_labels, det_images, ref_labels, ref_images)
    det_index, ref_index = _candidate_pairs(det_boxes, det_keys, ref_boxes, ref_keys, by == "iou", threshold)
    admissible = _paired_admissible(
        take_rows(det_boxes, det_index), take_rows(ref_boxes, ref_index), by, threshold
    )
    det_index, ref_index = det_index[admissible], ref_index[admissible]
    return _one_to_one_of_pairs(
        det_index, ref_index, det_boxes, det_keys, ref_boxes, ref_keys, by, threshold, method
    )


def one_to_one_of_overlaps(
    pairs: Overlaps,
    det_boxes: FloatArray,
    det_keys: IntArray,
    ref_boxes: FloatArray,
    ref_keys: IntArray,
    threshold: float = PAPER_IOU,
    method: Literal["hungarian", "greedy"] = "hungarian",
) -> tuple[IntArray, IntArray]:
    """`one_to_one_match` by IoU (threshold > 0) from the overlapping pairs of those keys."""
    admissible = pairs.iou >= threshold
    return _one_to_one_of_pairs(
        pairs.det[admissible],
        pairs.ref[admissible],
        det_boxes,
        det_keys,
        ref_boxes,
        ref_keys,
        "iou",
        threshold,
        method,
    )


def _one_to_one_of_pairs(
    det_index: IntArray,
    ref_index: IntArray,
    det_boxes: FloatArray,
    det_keys: IntArray,
    ref_boxes: FloatArray,
    ref_keys: IntArray,
    by: Literal["iou", "centre"],
    threshold: float,
    method: Literal["hungarian", "greedy"],
) -> tuple[IntArray, IntArray]:
    # A pair whose detection and reference have no other admissible partner is in every optimal assignment
    # (greedy or Hungarian); only the keys with contested pairs need the assignment solver.
    lone = (np.bincount(det_index, minlength=len(det_keys))[det_index] == 1) & (
        np.bincount(ref_index, minlength=len(ref_keys))[ref_index] == 1
    )
    det_pairs: list[IntArray] = [det_index[lone]]
    ref_pairs: list[IntArray] = [ref_index[lone]]
    contested_dets, contested_refs = np.unique(det_index[~lone]), np.unique(ref_index[~lone])
    blocks = KeyBlocks.of(contested_dets, det_keys[contested_dets], contested_refs, ref_keys[contested_refs])
    # every key's score matrix at once, cell by cell as the key's matrix of its rows and columns
    scores, admissible = _paired_scores(
        take_rows(det_boxes, blocks.det), take_rows(ref_boxes, blocks.ref), by, threshold
    )
    for dets, refs, cells in blocks.per_key():
        shape = (len(dets), len(refs))
        rows, cols = _assign(scores[cells].reshape(shape), admissible[cells].reshape(shape), method)
        det_pairs.append(dets[rows])
        ref_pairs.append(refs[cols])
    dets_found = np.concatenate(det_pairs).astype(np.int64)
    refs_found = np.concatenate(ref_pairs).astype(np.int64)
    order = np.argsort(dets_found, kind="stable")
    return dets_found[order], refs_found[order]


@dataclass(frozen=True)
class KeyBlocks:
    """Each key's detections × references, the cells of its matrix row by row, every key's end to end (keys
    ascending; a key's detections and references in the order given)."""

    det: IntArray  # detection of each cell (T,)
    ref: IntArray  # reference of each cell (T,)
    dets: IntArray  # detections grouped by key
    refs: IntArray  # references grouped by key
    bounds: list[tuple[int, int, int, int, int]]  # per key: dets start, stop, refs start, stop, first cell

    @staticmethod
    def of(dets: IntArray, det_keys: IntArray, refs: IntArray, ref_keys: IntArray) -> KeyBlocks:
        """dets, refs: indices; det_keys, ref_keys: their keys. The keys are those of the detections (a key
        without references has an empty block), as a loop over `np.unique(det_keys)` would select them."""
        det_order, ref_order = np.argsort(det_keys, kind="stable"), np.argsort(ref_keys, kind="stable")
        det_sorted, ref_sorted = det_keys[det_order], ref_keys[ref_order]
        starts = np.flatnonzero(np.r_[True, det_sorted[1:] != det_sorted[:-1]]) if len(dets) else _no_ints()
        keys = det_sorted[starts]
        det_stops = np.append(starts[1:], len(dets)) if len(dets) else _no_ints()
        ref_starts = np.searchsorted(ref_sorted, keys, side="left")
        ref_stops = np.searchsorted(ref_sorted, keys, side="right")
        widths = ref_stops - ref_starts
        sizes = (det_stops - starts) * widths
        firsts = np.cumsum(sizes) - sizes
        block = np.repeat(np.arange(len(keys)), sizes)
        cell = np.arange(int(sizes.sum())) - firsts[block]
        width = widths[block]
        row = cell // np.maximum(width, 1)
        grouped_dets, grouped_refs = dets[det_order], refs[ref_order]
        return KeyBlocks(
            grouped_dets[starts[block] + row],
            grouped_refs[ref_starts[block] + cell - row * width],
            grouped_dets,
            grouped_refs,
            list(
                zip(
                    starts.tolist(),
                    det_stops.tolist(),
                    ref_starts.tolist(),
                    ref_stops.tolist(),
                    firsts.tolist(),
                    strict=True,
                )
            ),
        )

    def per_key(self) -> Iterator[tuple[IntArray, IntArray, slice]]:
        """Per key: its detections, its references and its cells (a slice of det and ref)."""
        for det_start, det_stop, ref_start, ref_stop, first in self.bounds:
            cells = slice(first, first + (det_stop - det_start) * (ref_stop - ref_start))
            yield self.dets[det_start:det_stop], self.refs[ref_start:ref_stop], cells


def _no_ints() -> IntArray:
    return np.zeros(0, dtype=np.int64)


def _candidate_pairs(
    det_boxes: FloatArray,
    det_keys: IntArray,
    ref_boxes: FloatArray,
    ref_keys: IntArray,
    by_iou: bool,
    iou: float,
) -> tuple[IntArray, IntArray]:
    """Same-key pairs that may pass a test of IoU ≥ iou (+1-pixel convention): with iou > 0 only boxes that
    intersect can, so only those are built; otherwise every same-key pair."""
    if by_iou and iou > 0:
        return _overlapping_same_key_pairs(det_boxes, det_keys, ref_boxes, ref_keys, plus_one=True)
    return _same_key_pairs(det_keys, ref_keys)


def _paired_admissible(
    det_boxes: FloatArray, ref_boxes: FloatArray, by: Literal["iou", "centre"], threshold: float
) -> BoolArray:
    """Row k of det (K, 4) with row k of ref (K, 4): admissible as in `_paired_scores`."""
    if by == "iou":
        admissible: BoolArray = paired_iou(det_boxes, ref_boxes) >= threshold
        return admissible
    distance = np.linalg.norm(box_centres(det_boxes) - box_centres(ref_boxes), axis=1)
    near: BoolArray = distance <= threshold
    return near


def _paired_scores(
    det_boxes: FloatArray,
    ref_boxes: FloatArray,
    by: Literal["iou", "centre"],
    threshold: float,
) -> tuple[FloatArray, BoolArray]:
    """Row k of det (K, 4) with row k of ref (K, 4): the score (IoU, or minus the centre distance) and whether it
    is admissible, the same values cell by cell as a key's full matrix (`_pair_scores` in the tests)."""
    if by == "iou":
        iou = paired_iou(det_boxes, ref_boxes)
        return iou, iou >= threshold
    distance = np.linalg.norm(box_centres(det_boxes) - box_centres(ref_boxes), axis=1)
    return -distance, distance <= threshold


def _assign(
    score: FloatArray, admissible: BoolArray, method: Literal["hungarian", "greedy"]
) -> tuple[IntArray, IntArray]:
    if method == "hungarian":
        return _assign_hungarian(score, admissible)
    return _assign_greedy(score, admissible)


def _assign_hungarian(score: FloatArray, admissible: BoolArray) -> tuple[IntArray, IntArray]:
    # Inadmissible pairs score below every admissible one and are dropped afterwards.
    floor = float(score[admissible].min(initial=0.0)) - 1.0 - float(admissible.size)
    rows, cols = linear_sum_assignment(-np.where(admissible, score, floor))
    keep = admissible[rows, cols]
    return rows[keep].astype(np.int64), cols[keep].astype(np.int64)


def _assign_greedy(score: FloatArray, admissible: BoolArray) -> tuple[IntArray, IntArray]:
    candidate_rows, candidate_cols = np.nonzero(admissible)
    order = np.argsort(-score[candidate_rows, candidate_cols], kind="stable")
    used_rows: set[int] = set()
    used_cols: set[int] = set()
    pairs: list[tuple[int, int]] = []
    for row, col in zip(candidate_rows[order].tolist(), candidate_cols[order].tolist(), strict=True):
        if row not in used_rows and col not in used_cols:
            used_rows.add(row)
            used_cols.add(col)
            pairs.append((row, col))
    chosen = np.array(pairs, dtype=np.int64).reshape(len(pairs), 2)
    return chosen[:, 0], chosen[:, 1]


def detection_scores_per_class(
    det_labels: IntArray, ref_labels: IntArray, matched_det: IntArray
) -> dict[int, DetectionScores]:
    """Precision, recall and F1 per class from one-to-one pairs (`one_to_one_match`'s detection indices).

    TP_c = pairs of class c, FP_c = n_det,c − TP_c, FN_c = n_ref,c − TP_c; precision = TP/(TP+FP),
    recall = TP/(TP+FN), F1 = 2PR/(P+R); 0 where a denominator is 0.

    Example: 2 detections, 4 references, 1 pair → precision 0.5, recall 0.25, F1 1/3.
    """
    scores = {}
    matched_labels = det_labels[matched_det]
    for label in np.union1d(det_labels, ref_labels):
        tp = int(np.sum(matched_labels == label))
        fp = int(np.sum(det_labels == label)) - tp
        fn = int(np.sum(ref_labels == label)) - tp
        precision = _ratio(tp, tp + fp)
        recall = _ratio(tp, tp + fn)
        f1 = _ratio(2.0 * precision * recall, precision + recall)
        scores[int(label)] = DetectionScores(tp, fp, fn, precision, recall, f1)
    return scores


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / denominator if denominator > 0 else 0.0


# ---------------------------------------------------------------- consensus and votes


@dataclass(frozen=True)
class Consensus:
    """Consensus objects (K,): mean box (K, 4), majority label, votes (distinct experts), image."""

    boxes: FloatArray
    labels: IntArray
    votes: IntArray
    images: IntArray


def consensus(
    boxes: FloatArray,
    labels: IntArray,
    experts: IntArray,
    images: IntArray,
    radius: float = CONSENSUS_RADIUS_PX,
    min_votes: int = 1,
) -> Consensus:
    """Multi-expert consensus by clustering box centres per image.

    Clustering (leader rule, deterministic): per image, take objects in array order; the first object not yet
    in a cluster seeds one, which takes every unclustered object whose centre lies within `radius` px of the
    seed's centre. A cluster's votes v = number of distinct experts in it; its label is the most frequent
    label (smallest id on ties); its box is the mean box. Clusters with v ≥ min_votes are kept.
    Shapes: boxes (N, 4), labels / experts / images (N,).

    Example: experts 0 and 1 mark cells 4 px apart, expert 2 one cell 200 px away → votes [2, 1].
    """
    centres = box_centres(boxes)
    cluster = np.full(len(labels), NO_MATCH, dtype=np.int64)
    next_cluster = 0
    for image in np.unique(images):
        members = np.flatnonzero(images == image)
        found = _leader_clusters(centres[members], radius)
        cluster[members] = found + next_cluster
        next_cluster += int(found.max(initial=-1)) + 1
    return _summarise_clusters(boxes, labels, experts, images, cluster, next_cluster, min_votes)


def _leader_clusters(centres: FloatArray, radius: float) -> IntArray:
    """Cluster 0, 1, … of each point (N, 2) by the leader rule of `consensus`, within one image.

    Neighbour lists (distance ≤ radius) come from a k-d tree, so the work grows with the neighbours, not N².
    """
    from scipy.spatial import cKDTree

    neighbours = cKDTree(centres).query_ball_point(centres, r=radius, return_sorted=True)
    cluster = [NO_MATCH] * len(centres)
    count = 0
    for seed, near in enumerate(neighbours):
        if cluster[seed] != NO_MATCH:
            continue
        for other in near:
            if cluster[other] == NO_MATCH:
                cluster[other] = count
        count += 1
    return np.array(cluster, dtype=np.int64)


def _summarise_clusters(
    boxes: FloatArray,
    labels: IntArray,
    experts: IntArray,
    images: IntArray,
    cluster: IntArray,
    n_clusters: int,
    min_votes: int,
) -> Consensus:
    counts = np.bincount(cluster, minlength=n_clusters).astype(np.float64)
    mean_boxes = np.stack(
        [
            np.bincount(cluster, weights=boxes[:, column], minlength=n_clusters) / counts
            for column in range(4)
        ],
        axis=1,
    )
    distinct_pairs = np.unique(np.stack([cluster, experts.astype(np.int64)], axis=1), axis=0)
    votes = np.bincount(distinct_pairs[:, 0], minlength=n_clusters).astype(np.int64)
    majority = _majority_labels(cluster, labels, n_clusters)
    cluster_image = np.zeros(n_clusters, dtype=np.int64)
    cluster_image[cluster] = images
    keep = votes >= min_votes
    return Consensus(mean_boxes[keep], majority[keep], votes[keep], cluster_image[keep])


def _majority_labels(cluster: IntArray, labels: IntArray, n_clusters: int) -> IntArray:
    """The most frequent label (smallest id on ties) of each cluster 0..n_clusters−1."""
    label_values, label_codes = np.unique(labels, return_inverse=True)
    tally = np.zeros((n_clusters, len(label_values)), dtype=np.int64)
    np.add.at(tally, (cluster, label_codes.reshape(-1)), 1)
    if not n_clusters:
        return np.zeros(0, np.int64)
    majority: IntArray = label_values[np.argmax(tally, axis=1)].astype(np.int64)
    return majority


VOTES_NMS_IOU = 0.5


@dataclass(frozen=True)
class VoteCells:
    """Cells found by `nms_votes` (K,): the keeper's box (K, 4), votes, image; and each input's cell (N,)."""

    boxes: FloatArray
    votes: IntArray
    images: IntArray
    cell_of: IntArray


def nms_votes(
    boxes: FloatArray, experts: IntArray, images: IntArray, iou: float = VOTES_NMS_IOU
) -> VoteCells:
    """Count votes per cell by non-maximum suppression over all experts' boxes, as the paper's VotesLoss does.

    Per image, boxes are taken in array order (expert boxes all have confidence 1): the first box not yet in
    a cell keeps a new cell, which takes every box not yet in a cell whose IoU with the keeper (+1-pixel
    convention, `iou_matrix`) is ≥ `iou`. A cell's votes v = number of distinct experts among its boxes
    (one expert's two boxes on the same cell count once). Cells are numbered in order of their keepers.
    Shapes: boxes (N, 4), experts / images (N,) → K cells, cell_of (N,) with values in 0..K−1.

    Example: experts 0 and 1 mark the same 50-px cell 5 px apart (IoU 0.82), expert 2 a cell 200 px away
    → votes [2, 1], cell_of [0, 0, 1].
    """
    cell_of = np.full(len(experts), NO_MATCH, dtype=np.int64)
    count = 0
    for image in np.unique(images):
        members = np.flatnonzero(images == image)
        overlaps = iou_matrix(boxes[members], boxes[members]) >= iou
        local = np.full(len(members), NO_MATCH, dtype=np.int64)
        for keeper in range(len(members)):
            if local[keeper] != NO_MATCH:
                continue
            local[(local == NO_MATCH) & overlaps[keeper]] = count
            count += 1
        cell_of[members] = local
    keepers = np.unique(cell_of, return_index=True)[1] if count else np.zeros(0, dtype=np.int64)
    distinct = np.unique(np.stack([cell_of, experts.astype(np.int64)], axis=1), axis=0)
    votes = np.bincount(distinct[:, 0], minlength=count).astype(np.int64)
    return VoteCells(boxes[keepers].reshape(-1, 4), votes, images[keepers].astype(np.int64), cell_of)


def nms_consensus(
    boxes: FloatArray,
    labels: IntArray,
    experts: IntArray,
    images: IntArray,
    iou: float = VOTES_NMS_IOU,
    min_votes: int = 1,
) -> Consensus:
    """Multi-expert consensus by the paper's vote counting: the cells of `nms_votes` as objects.

    A cell's box is its keeper's box, its votes the distinct experts among its boxes, its label the most
    frequent label of its boxes (smallest id on ties); cells with v ≥ min_votes are kept.
    Shapes: boxes (N, 4), labels / experts / images (N,).

    Example: experts 0 and 1 mark the same cell 5 px apart, expert 2 one 200 px away → votes [2, 1].
    """
    cells = nms_votes(boxes, experts, images, iou)
    majority = _majority_labels(cells.cell_of, labels, len(cells.votes))
    keep = cells.votes >= min_votes
    return Consensus(cells.boxes[keep], majority[keep], cells.votes[keep], cells.images[keep])


def votes_loss_weights(votes: npt.NDArray[np.integer] | FloatArray) -> FloatArray:
    """VotesLoss weights (N,): w = (v − min v) / (max v − min v); all 1 when max v = min v (or N = 0).
    Votes (E, N): the weights of each row by itself.

    >>> votes_loss_weights(np.array([1, 3, 5]))
    array([0. , 0.5, 1. ])
    """
    values = np.asarray(votes, dtype=np.float64)
    if values.size == 0:
        return values
    low, high = values.min(axis=-1, keepdims=True), values.max(axis=-1, keepdims=True)
    flat = high == low
    weights: FloatArray = np.where(flat, 1.0, (values - low) / np.where(flat, 1.0, high - low))
    return weights


def reference_votes(matched: BoolArray) -> IntArray:
    """v_g (M,) = number of experts who matched reference object g, from matched (E, M)."""
    votes: IntArray = matched.sum(axis=0).astype(np.int64)
    return votes


@dataclass(frozen=True)
class VoteWeighted:
    """`vote_weighted_concordance` of E experts: scores, weighted precision and recall (E,), and N = |O|."""

    scores: FloatArray
    precision: FloatArray
    recall: FloatArray
    others: int


def vote_weighted_concordance(matched: BoolArray, kept_error_costs: list[FloatArray]) -> VoteWeighted:
    """Vote-weighted concordance (E,) of each expert of one task and mode: a weighted F1 (DESIGN.md).

    matched (E, M): expert e matched reference object g by one-to-one matching (`one_to_one_match`).
    kept_error_costs: per expert e, the costs u_f (F_e,) of e's objects that match no reference object
    (`kept_error_costs`). With O = the other experts, N = E − 1:
    v_g = Σ_{o ∈ O} matched[o, g] (e's own votes never count for e), w = votes_loss_weights(v) over the M
    reference objects; R = Σ_g w_g·matched[e, g] / Σ_g w_g;
    P = Σ_g w_g·matched[e, g] / (Σ_g w_g·matched[e, g] + Σ_f u_f) (1 when both sums are 0);
    score = 2PR / (P + R) (0 when P + R = 0; NaN when M = 0).
    Properties: with all weights 1 (equal votes, no shared errors) it is F1 = 2TP / (2TP + FP + FN); missing a
    cell few others found costs little, missing one all found costs most; an error others made too costs
    less than one nobody else made; N = 0 gives plain F1.

    Example: matched = [[1, 1], [1, 0], [1, 0]], no kept errors → expert 0 sees v = [2, 0], w = [1, 0]:
    R = 1, P = 1 → 1; expert 1 sees v = [2, 1], w = [1, 0] → 1; all three score 1.
    """
    experts, size = matched.shape
    scores = np.full(experts, np.nan)
    precision = np.full(experts, np.nan)
    recall = np.full(experts, np.nan)
    if not size:
        return VoteWeighted(scores, precision, recall, max(experts - 1, 0))
    weights = votes_loss_weights(reference_votes(matched) - matched)  # each expert's row by itself
    hits = matched.astype(np.float64)
    # one vector product per expert in a stack: the same products as `weights[e] @ matched[e]`
    found_of = np.matmul(weights[:, None, :], hits[:, :, None]).reshape(experts).tolist()
    totals = weights.sum(axis=1).tolist()
    for row in range(experts):
        found = found_of[row]
        cost = float(kept_error_costs[row].sum())
        recall[row] = found / totals[row]
        precision[row] = found / (found + cost) if found + cost > 0 else 1.0
        both = precision[row] + recall[row]
        scores[row] = 2.0 * precision[row] * recall[row] / both if both > 0 else 0.0
    return VoteWeighted(scores, precision, recall, max(experts - 1, 0))


def kept_error_costs(
    boxes: FloatArray,
    labels: IntArray,
    images: IntArray,
    experts: IntArray,
    n_experts: int,
    iou: float = PAPER_IOU,
) -> FloatArray:
    """Cost u_f (K,) of each kept error f: an object of some expert that matches no reference object.

    boxes (K, 4), labels, images, experts (K,): every expert's unmatched objects of one task and mode.
    u_f = 1 − |{o ≠ expert of f : o has an unmatched object of f's image and class with IoU ≥ iou}| / N,
    N = n_experts − 1 (all 1 when N = 0). An error everybody else made too costs 0, one nobody else made 1.

    Example: experts 0 and 1 keep the same fake, expert 2 another one elsewhere, n_experts = 3 →
    u = [0.5, 0.5, 1].
    """
    if n_experts <= 1 or len(labels) == 0:
        return np.ones(len(labels), dtype=np.float64)
    return costs_of_sharing(kept_error_sharing(boxes, labels, images, experts, iou), n_experts)


def costs_of_sharing(sharing: IntArray, n_experts: int) -> FloatArray:
    """u_f = 1 − sharing_f / N of kept errors (`kept_error_costs`), N = n_experts − 1; all 1 when N = 0."""
    others = n_experts - 1
    if others <= 0:
        return np.ones(len(sharing), dtype=np.float64)
    costs: FloatArray = 1.0 - sharing.astype(np.float64) / others
    return costs


def kept_error_sharing(
    boxes: FloatArray, labels: IntArray, images: IntArray, experts: IntArray, iou: float = PAPER_IOU
) -> IntArray:
    """For each kept error f (`kept_error_costs`'s inputs): how many experts other than f's own have an
    unmatched object of f's image and class with IoU ≥ iou with f (+1-pixel convention). Errors of unequal
    images never meet, so several groups of experts (the modes of a batch) count at once when their images
    differ."""
    if len(labels) == 0:
        return np.zeros(0, dtype=np.int64)
    keys = match_keys(labels, images)
    first, second = _candidate_pairs(boxes, keys, boxes, keys, True, iou)
    overlap = paired_iou(take_rows(boxes, first), take_rows(boxes, second)) >= iou
    foreign = overlap & (experts[first] != experts[second])
    codes = experts - int(experts.min())
    width = int(codes.max()) + 1
    pairs = first[foreign] * width + codes[second[foreign]]
    distinct = distinct_ints(pairs, len(labels) * width) // width  # (error, other expert)
    sharing: IntArray = (
        np.bincount(distinct, minlength=len(labels)) if len(distinct) else np.zeros(len(labels), np.int64)
    )
    return sharing


# ---------------------------------------------------------------- injected errors caught or missed


def overlapping_objects(
    entry_boxes: FloatArray,
    entry_keys: IntArray,
    det_boxes: FloatArray,
    det_keys: IntArray,
    iou: float = PAPER_IOU,
) -> tuple[IntArray, IntArray]:
    """Pairs (entry index, detection index) with equal keys and IoU ≥ iou (+1-pixel convention).

    Keys say what may match: image ids alone (any label) or `match_keys` (same image and class).
    """
    entry_index, det_index = _candidate_pairs(entry_boxes, entry_keys, det_boxes, det_keys, True, iou)
    keep = paired_iou(take_rows(entry_boxes, entry_index), take_rows(det_boxes, det_index)) >= iou
    return entry_index[keep], det_index[keep]


def duplicate_originals(
    copy_boxes: FloatArray, copy_images: IntArray, ref_boxes: FloatArray, ref_images: IntArray
) -> IntArray:
    """The original (K,) of each duplicate: the reference object of its image that overlaps the copy most
    (any class, first on ties); NO_MATCH where none overlaps it."""
    best, best_iou = best_reference(copy_boxes, copy_images, ref_boxes, ref_images)
    originals: IntArray = np.where(best_iou > 0, best, NO_MATCH)
    return originals


def caught_errors(
    kind: str,
    entries: tuple[FloatArray, IntArray, IntArray],
    detections: tuple[FloatArray, IntArray, IntArray],
    originals: FloatArray | None = None,
    iou: float = PAPER_IOU,
) -> BoolArray:
    """Whether each injected-error register entry (K,) was caught by the expert whose final objects are given.

    entries, detections: (boxes (·, 4), labels, images); one expert per image id (shift image ids to
    evaluate several experts at once). "Matches" = IoU ≥ iou with the entry's box.
    - removed, class_changed, grade_shifted: caught ⇔ an object with the entry's (reference) label matches;
    - false_positive: caught ⇔ no object of any label matches the fake box;
    - duplicate: caught ⇔ at most one object of any label matches the pair (the copy or its original,
      `originals` (K, 4), NaN rows where it has none); keeping both is missed.
    Example: a duplicate whose copy and original each keep one expert object → 2 objects on the pair → missed.
    """
    entry_boxes, entry_labels, entry_images = entries
    det_boxes, det_labels, det_images = detections
    if kind == "false_positive":
        hits, _ = overlapping_objects(entry_boxes, entry_images, det_boxes, det_images, iou)
        caught: BoolArray = np.bincount(hits, minlength=len(entry_images)) == 0
        return caught
    if kind == "duplicate":
        return _duplicates_caught(entry_boxes, entry_images, det_boxes, det_images, originals, iou)
    entry_keys, det_keys = joint_keys(entry_labels, entry_images, det_labels, det_images)
    hits, _ = overlapping_objects(entry_boxes, entry_keys, det_boxes, det_keys, iou)
    found: BoolArray = np.bincount(hits, minlength=len(entry_images)) > 0
    return found


def _duplicates_caught(
    copy_boxes: FloatArray,
    images: IntArray,
    det_boxes: FloatArray,
    det_images: IntArray,
    originals: FloatArray | None,
    iou: float,
) -> BoolArray:
    pairs = [overlapping_objects(copy_boxes, images, det_boxes, det_images, iou)]
    if originals is not None:
        known = np.flatnonzero(~np.isnan(originals[:, 0]))
        entry, det = overlapping_objects(originals[known], images[known], det_boxes, det_images, iou)
        pairs.append((known[entry], det))
    entry_index = np.concatenate([pair[0] for pair in pairs])
    det_index = np.concatenate([pair[1] for pair in pairs])
    distinct = np.unique(entry_index * max(len(det_images), 1) + det_index)
    on_pair = np.bincount(distinct // max(len(det_images), 1), minlength=len(images))
    caught: BoolArray = on_pair <= 1
    return caught


# ---------------------------------------------------------------- time per image


def seconds_per_image_gaps(
    object_images: IntArray,
    last_edited_seconds: FloatArray,
    n_images: int,
    max_gap: float = MAX_GAP_SECONDS,
) -> FloatArray:
    """Active seconds per image id 0..n_images−1 by the published gap rule.

    Per image: t = sorted ⌊last-edit seconds⌋ of its counted objects; seconds = Σ_k (t_k − t_{k−1}) over the
    gaps with t_k − t_{k−1} < max_gap. An image with fewer than two objects gives 0.
    Shapes: object_images, last_edited_seconds (N,).

    Example: one image, times 0, 10, 400, 405 → gaps 10, 390, 5 → 15 s.
    """
    seconds = np.floor(last_edited_seconds)
    order = lexsort_order((seconds, object_images))
    sorted_images = object_images[order]
    gaps = np.diff(seconds[order])
    counted = (sorted_images[1:] == sorted_images[:-1]) & (gaps < max_gap)
    totals = np.bincount(sorted_images[1:][counted], weights=gaps[counted], minlength=n_images)
    return np.asarray(totals[:n_images], dtype=np.float64)


def lexsort_order(keys: tuple[npt.NDArray[np.int64] | npt.NDArray[np.float64], ...]) -> IntArray:
    """`np.lexsort(keys)` (the last key primary, stable) as one stable sort of the mixed-radix int64 key
    Σ_j (k_j − min k_j) · Π_{i<j} (range of k_i) when every key holds whole numbers and the product of their
    ranges stays below 2⁶²; else `np.lexsort` itself (NaN, fractions, huge ranges). One sort instead of one
    per key, and rows that come nearly in order sort faster.

    Example: keys ([3, 1, 2], [0, 1, 0]) → [2, 0, 1] (by the second key, then the first).
    """
    if not keys or not len(keys[0]):
        return np.lexsort(keys)
    radix, combined = 1, np.zeros(len(keys[0]), dtype=np.int64)
    for key in keys:
        if key.dtype.kind == "f" and not (np.isfinite(key).all() and np.array_equal(np.floor(key), key)):
            return np.lexsort(keys)
        low, high = int(key.min()), int(key.max())
        if radix * (high - low + 1) >= 2**62:
            return np.lexsort(keys)
        combined += (key - low).astype(np.int64) * radix
        radix *= high - low + 1
    return stable_order(combined, radix)


def seconds_per_image_300s_rule(
    images_seen: IntArray,
    object_images: IntArray,
    last_edited_seconds: FloatArray,
    max_gap: float = MAX_GAP_SECONDS,
) -> float:
    """Mean active seconds per image an expert saw, by the published 300-s gap rule.

    mean = (1 / |S|) Σ_{i ∈ S} seconds_i with S = images_seen (every image in the expert's file in any line,
    template header excluded) and seconds_i from `seconds_per_image_gaps` (0 for images without objects).
    NaN when S is empty.

    Example: S = {0, 1}, image 0 has objects at 0 s and 30 s, image 1 none → (30 + 0) / 2 = 15.
    """
    seen = np.unique(images_seen)
    if len(seen) == 0:
        return float("nan")
    n_images = int(max(seen.max(), object_images.max(initial=0))) + 1
    totals = seconds_per_image_gaps(object_images, last_edited_seconds, n_images, max_gap)
    return float(totals[seen].mean())
