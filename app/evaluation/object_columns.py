"""A task's expert objects as one float64 table: what the evaluation reads, and how it is stored.

Reading tens of thousands of annotation rows costs a Python object per value; the evaluation instead reads
each task's objects as one binary payload (table `object_columns`) that becomes a numpy array without
copying. The payload is derived data: it is rebuilt from the annotation table whenever its revision differs
from task.objects_revision, which database triggers raise on every annotation write (migration 0002).

Layout 1, one row per non-deleted annotation of an evaluated mode, little-endian float64:
mode code (`MODE_CODES`), expert id, image id, label id, x1, y1, x2, y2, last-edit seconds since 1970
(whole seconds). Rows are in mode, image, expert, source (position, id) order, so that a mode is a slice. Ids are exact as float64 up to 2⁵³.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt

FloatTable = npt.NDArray[np.float64]

LAYOUT = 1
COLUMNS = ("mode", "expert", "image", "label", "x1", "y1", "x2", "y2", "edited_seconds")
WIDTH = len(COLUMNS)
MODE, EXPERT, IMAGE, LABEL, BOX, EDITED = 0, 1, 2, 3, slice(4, 8), 8
MODE_CODES = {"unaided": 0, "aided": 1}
STORED_DTYPE = np.dtype("<f8")


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
    tasks, everything = tasks[order].astype(np.int64), everything[order, 1 : 1 + WIDTH]
    starts = np.flatnonzero(np.r_[True, tasks[1:] != tasks[:-1]])
    for start, stop in zip(starts, [*starts[1:], len(tasks)], strict=True):
        tables[int(tasks[start])] = np.ascontiguousarray(everything[start:stop])
    return tables


def of_mode(table: FloatTable, mode: str) -> FloatTable:
    """The rows of one mode: a view, as rows are sorted by mode."""
    code = MODE_CODES[mode]
    start, stop = np.searchsorted(table[:, MODE], [code, code + 1])
    return table[start:stop]
