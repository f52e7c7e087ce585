"""A study's evaluation computed once per study content and parameters, shared by the dashboard and its downloads.

Every request still reads the study (one query per table, `repository.read_study`): that read is how it
knows whether the study changed. The result is kept under a digest of everything read (expert objects,
reference, register, suggestions, views, visits, tasks, labels) and the parameters, so an edit of any of it
computes afresh on the next request, while the dashboard, its plot downloads and its CSV tables of the same
content and parameters compute it once. Bootstrap intervals cost seconds: they are a separate entry per task
under the same digest, computed when first asked for (the dashboard asks after drawing the main figures).

Entries live in this process (a few studies, least recently used first out); the cache holds results only,
never the rows read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import pickle
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from time import perf_counter
from typing import Any, TypeVar

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from app.evaluation import reference_columns, repository, review, service
from app.evaluation.schemas import StudyMetricsOut, TaskMetricsOut, TimingOut, UncertaintyOut
from app.evaluation.service import MetricsParams
from app.models import Study
from app.offload import Compute

CACHE_SIZE = 8
V = TypeVar("V")


class _Recent(OrderedDict[Hashable, V]):
    """At most CACHE_SIZE entries, the least recently used dropped first."""

    def get_recent(self, key: Hashable) -> V | None:
        if key not in self:
            return None
        self.move_to_end(key)
        return self[key]

    def keep(self, key: Hashable, value: V) -> V:
        self[key] = value
        while len(self) > CACHE_SIZE:
            self.popitem(last=False)
        return value


_RESULTS: _Recent[StudyMetricsOut] = _Recent()
_INTERVALS: _Recent[UncertaintyOut | None] = _Recent()


@dataclass(frozen=True)
class Evaluation:
    """A study's metrics (cached, without bootstrap) and what this request read to find them."""

    metrics: StudyMetricsOut
    rows: repository.StudyRows
    params: MetricsParams
    key: tuple[Hashable, ...]
    computed: bool  # False: served from the cache


async def study_evaluation(
    session: AsyncSession, study: Study, params: MetricsParams, compute: Compute
) -> Evaluation:
    """The study's metrics for params (bootstrap left out; see `task_intervals`), computed only when the
    study's content or the parameters differ from a cached result."""
    params = _main_params(params.check())
    started = perf_counter()
    rows = await repository.read_study(session, study.id)
    await repository.store_derived_object_columns(session, rows)
    loaded = perf_counter()
    key = (study.id, study.name, study.simulated, await compute(rows_digest, rows), params)
    cached = _RESULTS.get_recent(key)
    if cached is not None:
        return Evaluation(cached, rows, params, key, computed=False)
    results = await compute(service.all_task_metrics, rows, params)
    metrics = StudyMetricsOut(
        study=study.name,
        simulated=study.simulated,
        iou=params.iou,
        error_iou=params.register_iou,
        tasks=results,
        timing=TimingOut(load_s=loaded - started, compute_s=perf_counter() - loaded),
    )
    return Evaluation(_RESULTS.keep(key, metrics), rows, params, key, computed=True)


async def task_intervals(
    evaluation: Evaluation, task: str, replicates: int, seed: int, compute: Compute
) -> UncertaintyOut | None:
    """Bootstrap intervals of one task of the evaluation (cached like the evaluation); None: no such task."""
    key = (*evaluation.key, task, replicates, seed)
    if key in _INTERVALS:
        return _INTERVALS.get_recent(key)
    params = dataclasses.replace(evaluation.params, bootstrap=replicates, seed=seed)
    found = await compute(review.uncertainty_of_task, evaluation.rows, task, params)
    return _INTERVALS.keep(key, found)


def known_intervals(evaluation: Evaluation, task: str, replicates: int, seed: int) -> UncertaintyOut | None:
    """The task's intervals when they are cached already, else None (nothing is computed)."""
    return _INTERVALS.get_recent((*evaluation.key, task, replicates, seed))


def with_intervals(task: TaskMetricsOut, intervals: UncertaintyOut | None) -> TaskMetricsOut:
    return task if intervals is None else task.model_copy(update={"uncertainty": intervals})


def _main_params(params: MetricsParams) -> MetricsParams:
    """The parameters that decide the main figures, in one spelling (error IoU written out, no bootstrap)."""
    return dataclasses.replace(params, error_iou=params.register_iou, bootstrap=0, seed=0)


def rows_digest(rows: repository.StudyRows) -> str:
    """A digest of everything the metrics read (tables rebuilt on the way are the same objects again)."""
    digest = hashlib.sha256()
    for field in dataclasses.fields(rows):
        if field.name not in ("rebuilt", "references_rebuilt"):
            digest.update(field.name.encode())
            _feed(digest, getattr(rows, field.name))
    return digest.hexdigest()


def _feed(digest: Any, value: object) -> None:
    if isinstance(value, np.ndarray):
        digest.update(f"{value.dtype}{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, reference_columns.References):
        for table in value.tables():
            _feed(digest, table)
        digest.update(_plain_bytes(value.kinds))
    elif isinstance(value, dict):
        for key in sorted(value, key=repr):
            digest.update(repr(key).encode())
            _feed(digest, value[key])
    elif isinstance(value, list | tuple) and any(isinstance(item, np.ndarray | dict) for item in value):
        for item in value:
            _feed(digest, item)
    else:
        digest.update(_plain_bytes(value))  # the driver's rows: numbers, strings, timestamps


def _plain_bytes(value: object) -> bytes:
    """The value pickled without the memo, so that equal values give equal bytes whichever objects they
    share; rows as plain tuples (asyncpg's records are not picklable). A few times cheaper than `repr`, which
    writes every float out in decimal."""
    if isinstance(value, list):
        value = [row if isinstance(row, tuple) else tuple(row) for row in value]
    written = io.BytesIO()
    pickler = pickle.Pickler(written, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.fast = True  # no memo: nothing written as a reference to an object seen before
    pickler.dump(value)
    return written.getvalue()


def clear() -> None:
    """Forget every cached result (tests)."""
    _RESULTS.clear()
    _INTERVALS.clear()
