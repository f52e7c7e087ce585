"""A task's reference rows as float64 tables: its ground truth, suggestions and error register, as the
evaluation reads them and as they are stored.

Reading thousands of reference rows costs a Python object per value; the evaluation instead reads each task's
rows of the three reads (`repository._ground_truth_query`, `_suggestions_query`, `_injected_query`) as one
binary payload (table `reference_columns`) that becomes numpy arrays without copying. The payload is derived
data: it is rebuilt from those reads whenever its revision differs from the task's reference revision, which
database triggers raise on every write that can change one of their rows (migration 0015).

Layout 1, little-endian float64, the three tables one after the other, each in its read's order:
truth (`TRUTH_COLUMNS`), in (position, id) order; suggestions (`SUGGESTION_COLUMNS`), in (set, position, id)
order; register (`REGISTER_COLUMNS`), in (set, position, id) order, its error kind coded by its position in
the task's `kinds` (first seen first), a NULL group or box value as NaN. Ids are exact as float64 up to 2⁵³;
the tables hold every row of the reads, counted or not (whether a box counts depends on its image's size,
which the evaluation reads each time).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt

FloatTable = npt.NDArray[np.float64]

LAYOUT = 1
TRUTH_COLUMNS = ("image", "label", "x1", "y1", "x2", "y2")
SUGGESTION_COLUMNS = ("set", "image", "label", "x1", "y1", "x2", "y2")
REGISTER_COLUMNS = ("kind", "group", "image", "label", "x1", "y1", "x2", "y2")
WIDTHS = (len(TRUTH_COLUMNS), len(SUGGESTION_COLUMNS), len(REGISTER_COLUMNS))
SET, KIND, GROUP = 0, 0, 1
TRUTH_IMAGE, SUGGESTION_IMAGE, REGISTER_IMAGE = 0, 1, 2  # each table's image column; label and box follow
STORED_DTYPE = np.dtype("<f8")


@dataclass(frozen=True)
class References:
    """One task's tables of the layout, and its register's error kinds by code."""

    truth: FloatTable
    suggestions: FloatTable
    register: FloatTable
    kinds: tuple[str, ...]

    def tables(self) -> tuple[FloatTable, FloatTable, FloatTable]:
        return self.truth, self.suggestions, self.register


def empty() -> References:
    truth, suggestions, register = (np.zeros((0, width)) for width in WIDTHS)
    return References(truth, suggestions, register, ())


def pack(references: References) -> bytes:
    return b"".join(
        np.ascontiguousarray(table, dtype=STORED_DTYPE).tobytes() for table in references.tables()
    )


def pack_kinds(references: References) -> str:
    return json.dumps(list(references.kinds))


def unpack(payload: bytes, rows: Sequence[int], kinds_text: str) -> References | None:
    """The stored tables, or None when the payload does not hold tables of the layout with these row counts,
    or holds values no read gives (an id that is no integer, a kind without a name): then rebuild."""
    if len(payload) != sum(count * width for count, width in zip(rows, WIDTHS, strict=True)) * 8:
        return None
    kinds = _kinds(kinds_text)
    if kinds is None:
        return None
    tables, offset = [], 0
    for count, width in zip(rows, WIDTHS, strict=True):
        table = np.frombuffer(payload, dtype=STORED_DTYPE, count=count * width, offset=offset)
        tables.append(table.reshape(count, width))
        offset += count * width * STORED_DTYPE.itemsize
    truth, suggestions, register = tables
    references = References(truth, suggestions, register, kinds)
    return references if _plausible(references) else None


def _kinds(text: str) -> tuple[str, ...] | None:
    try:
        kinds = json.loads(text)
    except ValueError:
        return None
    if not isinstance(kinds, list) or not all(isinstance(kind, str) for kind in kinds):
        return None
    return tuple(kinds)


def _plausible(references: References) -> bool:
    ids = (
        references.truth[:, :2],
        references.suggestions[:, :3],
        references.register[:, 2:4],
        references.register[:, :1],
    )
    if not all(np.array_equal(part, np.trunc(part)) for part in ids):  # NaN and inf are unequal too
        return False
    kinds = references.register[:, KIND]
    return bool(((kinds >= 0) & (kinds < len(references.kinds))).all())


def by_task(
    truth: Sequence[Sequence[Any]],
    suggestions: Sequence[Sequence[Any]],
    register: Sequence[Sequence[Any]],
    task_ids: Sequence[int],
) -> dict[int, References]:
    """The driver's rows of the three reads (task id first, each grouped by task in its read's order) as one
    `References` per task of task_ids, empty tables where a task has no rows."""
    truths = _split(_floats(truth, WIDTHS[0] + 1))
    offered = _split(_floats(suggestions, WIDTHS[1] + 1))
    coded, kinds = _coded_kinds(register)
    registers = _split(_floats(coded, WIDTHS[2] + 1))
    nothing = empty()
    return {
        task_id: References(
            truths.get(task_id, nothing.truth),
            offered.get(task_id, nothing.suggestions),
            registers.get(task_id, nothing.register),
            tuple(kinds.get(task_id, {})),
        )
        for task_id in task_ids
    }


def _floats(rows: Sequence[Sequence[Any]], width: int) -> FloatTable:
    """Rows as one float64 (N, width) array in one pass; a NULL becomes NaN, as numpy's array() makes it."""
    try:
        flat = np.fromiter(chain.from_iterable(rows), dtype=np.float64, count=len(rows) * width)
    except TypeError:
        return np.array(rows, dtype=np.float64).reshape(len(rows), width)
    return flat.reshape(len(rows), width)


def _split(table: FloatTable) -> dict[int, FloatTable]:
    """A table whose first column is the task id, rows grouped by task, into each task's rows (the rest)."""
    if not len(table):
        return {}
    tasks = table[:, 0].astype(np.int64)
    starts = np.flatnonzero(np.r_[True, tasks[1:] != tasks[:-1]])
    stops = [*starts[1:].tolist(), len(tasks)]
    return {
        int(tasks[start]): np.ascontiguousarray(table[start:stop, 1:])
        for start, stop in zip(starts.tolist(), stops, strict=True)
    }


def _coded_kinds(rows: Sequence[Sequence[Any]]) -> tuple[list[tuple[Any, ...]], dict[int, dict[str, int]]]:
    """The register's rows with their kind (second column) replaced by its code in its task's kinds."""
    kinds: dict[int, dict[str, int]] = {}
    coded = []
    for task_id, kind, *rest in rows:
        codes = kinds.setdefault(task_id, {})
        coded.append((task_id, codes.setdefault(kind, len(codes)), *rest))
    return coded, kinds
