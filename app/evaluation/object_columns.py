"""A task's expert objects as one float64 table: what the evaluation reads, and how it is stored.

Reading tens of thousands of annotation rows costs a Python object per value; the evaluation instead reads
each task's objects as one binary payload (table `object_columns`) that becomes a numpy array without
copying. The payload is derived data: it is rebuilt from the annotation table whenever its revision differs
from the task's objects revision, which database triggers raise on every annotation write (migrations 0002, 0014).
A task's reference rows (ground truth, suggestions, error register) are kept the same way, in
`reference_columns`.

Layout 1, one row per non-deleted annotation of an evaluated mode, little-endian float64:
mode code (`MODE_CODES`), expert id, image id, label id, x1, y1, x2, y2, last-edit seconds since 1970
(whole seconds). Rows are in mode, image, expert, source (position, id) order, so that a mode is a slice. Ids are exact as float64 up to 2⁵³.

Beside the table: one digest row per (mode, expert, image) group of the task's annotations, deleted ones
included (`GROUP_COLUMNS`, summed by the database). When the task's revision moved on, the groups whose
digest differs are read again and spliced into the stored table (`spliced`); the others are kept. Every
write the application makes goes through the ORM, which raises the row's version, so the version sum changes
with it; inserts and deletes change the count or the id sum; the id-weighted sum of the box, label, position
and deleted flag catches writes that leave the version alone (as tests' Core updates do).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt

from app.evaluation.metrics import take_rows

FloatTable = npt.NDArray[np.float64]

LAYOUT = 1
COLUMNS = ("mode", "expert", "image", "label", "x1", "y1", "x2", "y2", "edited_seconds")
WIDTH = len(COLUMNS)
MODE, EXPERT, IMAGE, LABEL, BOX, EDITED = 0, 1, 2, 3, slice(4, 8), 8
MODE_CODES = {"unaided": 0, "aided": 1}
STORED_DTYPE = np.dtype("<f8")
GROUP_COLUMNS = ("mode", "expert", "image", "count", "id_sum", "version_sum", "content_by_id")
GROUP_WIDTH = len(GROUP_COLUMNS)
GROUP_KEY = slice(0, 3)
KEY_COLUMNS = [MODE, EXPERT, IMAGE]


def empty() -> FloatTable:
    return np.zeros((0, WIDTH), dtype=np.float64)


def pack(table: FloatTable) -> bytes:
    return np.ascontiguousarray(table, dtype=STORED_DTYPE).tobytes()


def unpack(payload: bytes, rows: int) -> FloatTable | None:
    """The stored table, or None when the payload does not hold `rows` rows of the layout (then rebuild)."""
    if len(payload) != rows * WIDTH * STORED_DTYPE.itemsize:
        return None
    table: FloatTable = np.frombuffer(payload, dtype=STORED_DTYPE).reshape(rows, WIDTH)
    return table


def unpack_groups(payload: bytes | None) -> FloatTable | None:
    if payload is None or len(payload) % (GROUP_WIDTH * STORED_DTYPE.itemsize):
        return None
    return np.frombuffer(payload, dtype=STORED_DTYPE).reshape(-1, GROUP_WIDTH)


def groups_by_task(rows: Sequence[Sequence[Any]], task_ids: Sequence[int]) -> dict[int, FloatTable]:
    """Driver rows (task id, then `GROUP_COLUMNS`) into one digest table per task, rows in key order."""
    groups = {task_id: np.zeros((0, GROUP_WIDTH)) for task_id in task_ids}
    if not rows:
        return groups
    flat = np.fromiter(chain.from_iterable(rows), dtype=np.float64, count=len(rows) * (GROUP_WIDTH + 1))
    everything = flat.reshape(len(rows), GROUP_WIDTH + 1)
    everything = everything[
        np.lexsort((everything[:, 3], everything[:, 2], everything[:, 1], everything[:, 0]))
    ]
    tasks = everything[:, 0].astype(np.int64)
    starts = np.flatnonzero(np.r_[True, tasks[1:] != tasks[:-1]])
    for start, stop in zip(starts, [*starts[1:], len(tasks)], strict=True):
        groups[int(tasks[start])] = np.ascontiguousarray(everything[start:stop, 1:])
    return groups


def changed_keys(stored: FloatTable, current: FloatTable) -> FloatTable:
    """(mode, expert, image) of every group whose digest differs, that is new, or that is gone."""
    both = np.concatenate([stored, current])
    _, inverse, counts = np.unique(both, axis=0, return_inverse=True, return_counts=True)
    unmatched = both[counts[inverse.reshape(-1)] == 1, GROUP_KEY]
    return np.unique(unmatched, axis=0) if len(unmatched) else np.zeros((0, 3))


def of_keys(table: FloatTable, keys: FloatTable) -> npt.NDArray[np.bool_]:
    """Which rows of an object table belong to one of the (mode, expert, image) keys."""
    chosen = np.isin(table[:, IMAGE], keys[:, 2])
    candidates = np.flatnonzero(chosen)
    if not len(candidates) or not len(keys):
        return chosen
    both = np.concatenate([table[candidates][:, KEY_COLUMNS], keys])
    _, inverse = np.unique(both, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    chosen[candidates] = np.isin(inverse[: len(candidates)], inverse[len(candidates) :])
    return chosen


def spliced(table: FloatTable, keys: FloatTable, fresh: FloatTable) -> FloatTable:
    """The stored table with the rows of the keys' groups replaced by `fresh` (their rows as read now, in
    layout order), in layout order: the sort is stable, and a group's rows are all kept or all fresh."""
    kept = take_rows(table, ~of_keys(table, keys))
    fresh = take_rows(fresh, of_keys(fresh, keys))
    both = np.concatenate([kept, fresh])
    order = np.lexsort((both[:, EXPERT], both[:, IMAGE], both[:, MODE]))
    return np.ascontiguousarray(take_rows(both, order))


def tables_by_task(rows: Sequence[Sequence[Any]], task_ids: Sequence[int]) -> dict[int, FloatTable]:
    """Driver rows (task id, then the layout's columns, then the source order: position and id), in any
    order, into one table per task with its rows in the layout's order (mode, image, expert, position, id).

    Every task of task_ids gets a table, empty when it has no rows. Sorting here rather than in SQL spares
    the database a temporary B-tree over every row.
    """
    tables = {task_id: empty() for task_id in task_ids}
    if not rows:
        return tables
    width = WIDTH + 3
    flat = np.fromiter(chain.from_iterable(rows), dtype=np.float64, count=len(rows) * width)
    everything = flat.reshape(len(rows), width)
    source_id, position = everything[:, -1], everything[:, -2]
    tasks = everything[:, 0]
    order = np.lexsort(
        (
            source_id,
            position,
            everything[:, 1 + EXPERT],
            everything[:, 1 + IMAGE],
            everything[:, 1 + MODE],
            tasks,
        )
    )
    tasks, everything = tasks[order].astype(np.int64), take_rows(everything, order)[:, 1 : 1 + WIDTH]
    starts = np.flatnonzero(np.r_[True, tasks[1:] != tasks[:-1]])
    for start, stop in zip(starts, [*starts[1:], len(tasks)], strict=True):
        tables[int(tasks[start])] = np.ascontiguousarray(everything[start:stop])
    return tables


def of_mode(table: FloatTable, mode: str) -> FloatTable:
    """The rows of one mode: a view, as rows are sorted by mode."""
    code = MODE_CODES[mode]
    start, stop = np.searchsorted(table[:, MODE], [code, code + 1])
    return table[start:stop]
