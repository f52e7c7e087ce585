"""Study metrics (DESIGN.md "Evaluation"): concordance, time per image, injected errors caught, statistics.

The study is read once (one query per table, `repository.read_study`), turned into arrays, and every number
is computed by the pure functions of `app.evaluation.metrics` and `app.evaluation.statistics`.
Detection order of an expert: images in the order the expert first saw them (image_view), then objects in
source order (annotation position, then id). Every object, reference and register entry passes
`metrics.counted_mask` (not deleted, strictly inside the image by more than 2 px).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import pickle
import re
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from itertools import chain, groupby
from operator import itemgetter
from time import perf_counter
from typing import Any, TypeVar

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Invalid, NotFound
from app.evaluation import metrics as m
from app.evaluation import object_columns, reference_columns, repository, review, statistics
from app.evaluation.reference_columns import References
from app.evaluation.schemas import (
    ConsensusOut,
    CountOut,
    ExpertMetricsOut,
    InjectedModeOut,
    ModeAgreementOut,
    ModeMetricsOut,
    ModeSummaryOut,
    PooledOut,
    SpreadOut,
    StudyMetricsOut,
    SuggestionsOut,
    TaskMetricsOut,
    TestsOut,
    TimingOut,
)
from app.models import Study, TaskKind
from app.offload import Compute, in_thread

MODES = repository.EVALUATED_MODES
ALL_GROUPS = "all"
DEFAULT_COUNT_THRESHOLD = 7.0  # mitotic figures per high-power field (Elston and Ellis, cited by the paper)
MAX_BOOTSTRAP = 5_000


@dataclass(frozen=True)
class MetricsParams:
    """Thresholds of an evaluation; error_iou None means the same as iou. Consensus: by centre radius (px) or
    by NMS vote counting (IoU), at most one of them; neither: no consensus block."""

    iou: float = m.PAPER_IOU
    error_iou: float | None = None
    consensus_radius: float | None = None
    min_votes: int = 1
    consensus_nms: float | None = None
    count_threshold: float = DEFAULT_COUNT_THRESHOLD
    bootstrap: int = 0
    seed: int = 0

    @property
    def register_iou(self) -> float:
        return self.iou if self.error_iou is None else self.error_iou

    def check(self) -> MetricsParams:
        for name, value in (("iou", self.iou), ("error_iou", self.register_iou)):
            if not 0.0 < value <= 1.0:
                raise Invalid(f"{name} must lie in (0, 1], got {value}")
        if self.consensus_radius is not None and self.consensus_radius <= 0:
            raise Invalid("the consensus radius must be positive")
        if self.consensus_nms is not None and not 0.0 < self.consensus_nms <= 1.0:
            raise Invalid(f"the consensus NMS IoU must lie in (0, 1], got {self.consensus_nms}")
        if self.consensus_radius is not None and self.consensus_nms is not None:
            raise Invalid("choose one consensus: by centre radius or by NMS, not both")
        if self.min_votes < 1:
            raise Invalid("minimum votes must be at least 1")
        if not (math.isfinite(self.count_threshold) and self.count_threshold >= 0):
            raise Invalid(f"the count threshold must be a number ≥ 0, got {self.count_threshold}")
        if not 0 <= self.bootstrap <= MAX_BOOTSTRAP:
            raise Invalid(f"bootstrap replicates must lie in 0..{MAX_BOOTSTRAP}, got {self.bootstrap}")
        if not 0 <= self.seed < 2**32:
            raise Invalid(f"the bootstrap seed must lie in 0..2³²−1, got {self.seed}")
        return self


# ---------------------------------------------------------------- arrays of the study


@dataclass(frozen=True)
class Boxes:
    """Objects in detection order: boxes (N, 4) in pixels, label ids, image ids (N,)."""

    boxes: m.FloatArray
    labels: m.IntArray
    images: m.IntArray

    def take(self, index: Any) -> Boxes:
        boxes = self.boxes[index] if isinstance(index, slice) else m.take_rows(self.boxes, np.asarray(index))
        return Boxes(boxes, self.labels[index], self.images[index])

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class ExpertWork:
    """One expert's counted objects in one task and mode, with their last-edit seconds and images seen."""

    objects: Boxes
    edited_seconds: m.FloatArray
    images_seen: list[int] = field(default_factory=list)
    visit_seconds: dict[int, float] = field(default_factory=dict)


@dataclass
class TaskData:
    name: str
    labels: dict[int, str]
    reference: Boxes
    work: dict[str, dict[str, ExpertWork]]  # mode → expert name → work
    suggestions: Boxes | None
    suggestion_set_id: int | None
    register: dict[str, list[tuple[int | None, Boxes]]]  # kind → [(group, entries)], see _register
    span: int = 1  # more than any image id of the study
    kind: TaskKind = TaskKind.classify
    images: m.IntArray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # the task's, ascending


@dataclass(frozen=True)
class ImageSizes:
    """Images of the study sorted by id: task, size and position (upload order)."""

    ids: m.IntArray
    tasks: m.IntArray
    widths: m.FloatArray
    heights: m.FloatArray
    positions: m.IntArray

    def counted(self, boxes: Boxes) -> m.BoolArray:
        index = m.sorted_positions(self.ids, boxes.images)
        deleted = np.zeros(len(boxes), dtype=np.bool_)
        return m.counted_mask(boxes.boxes, self.widths[index], self.heights[index], deleted)


def _numbers(rows: Sequence[Any], first: int, width: int) -> m.FloatArray:
    """Columns first .. first + width − 1 of the driver's rows as one float64 (N, width) array, in one pass
    (ids are exact as float64 up to 2⁵³)."""
    values = chain.from_iterable(map(itemgetter(slice(first, first + width)), rows))
    try:
        flat = np.fromiter(values, dtype=np.float64, count=len(rows) * width)
    except TypeError:  # a NULL: NaN, as numpy's array() makes it
        flat = np.array([row[first : first + width] for row in rows], dtype=np.float64)
    return flat.reshape(len(rows), width)


def _boxes(table: m.FloatArray, image_column: int) -> Boxes:
    """Boxes of a `reference_columns` table, whose image id, label id and x1, y1, x2, y2 are adjacent columns
    from image_column on (a view of the table's boxes: taking the counted ones copies them)."""
    return Boxes(
        table[:, image_column + 2 : image_column + 6],
        table[:, image_column + 1].astype(np.int64),
        table[:, image_column].astype(np.int64),
    )


def build_tasks(rows: repository.StudyRows) -> dict[int, TaskData]:
    """Arrays of every task from the study's rows; counted objects only."""
    sizes = _image_sizes(rows.images)
    users: dict[int, str] = dict(rows.users)
    labels: dict[int, dict[int, str]] = defaultdict(dict)
    for label_id, task_id, name in rows.labels:
        labels[task_id][label_id] = name
    tasks = {
        task_id: TaskData(
            name, labels[task_id], Boxes(np.zeros((0, 4)), _ints(), _ints()), {}, None, None, {}
        )
        for task_id, name in rows.tasks
    }
    for task_id, task in tasks.items():
        task.span = int(sizes.ids.max(initial=0)) + 1
        task.kind = TaskKind(rows.task_kinds.get(task_id, task.kind))
        task.images = sizes.ids[sizes.tasks == task_id]
    _add_reference(tasks, rows.references, sizes)
    _add_work(tasks, rows, sizes, users)
    _add_suggestions(tasks, rows, sizes)
    _add_register(tasks, rows.references, sizes)
    return tasks


def _ints() -> m.IntArray:
    return np.zeros(0, dtype=np.int64)


def _image_sizes(rows: Sequence[Any]) -> ImageSizes:
    table = _numbers(rows, 0, 5)
    return ImageSizes(
        table[:, 0].astype(np.int64),
        table[:, 1].astype(np.int64),
        np.ascontiguousarray(table[:, 2]),
        np.ascontiguousarray(table[:, 3]),
        table[:, 4].astype(np.int64),
    )


def _runs(values: m.IntArray) -> Iterable[tuple[Any, int, int]]:
    """(key, start, stop) of runs of equal consecutive keys (integer ids)."""
    if not len(values):
        return iter(())
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    stops = [*starts[1:].tolist(), len(values)]
    return zip(values[starts].tolist(), starts.tolist(), stops, strict=True)


def _add_reference(tasks: dict[int, TaskData], references: dict[int, References], sizes: ImageSizes) -> None:
    for task_id, found in references.items():
        if len(found.truth):
            reference = _boxes(found.truth, reference_columns.TRUTH_IMAGE)
            tasks[task_id].reference = reference.take(sizes.counted(reference))


def _add_work(
    tasks: dict[int, TaskData], rows: repository.StudyRows, sizes: ImageSizes, users: dict[int, str]
) -> None:
    views = _numbers(rows.views, 2, 2).astype(np.int64)  # expert, image of each view, in viewing order
    view_modes = np.array([row[1] for row in rows.views], dtype=object)
    for mode in MODES:
        tables = [object_columns.of_mode(table, mode) for table in rows.objects.values()]
        seen = View(views[view_modes == mode], len(views))
        _add_mode_work(tasks, mode, np.concatenate([object_columns.empty(), *tables]), seen, sizes, users)
    # views come grouped by mode and expert: extend each expert's list once per run of rows
    for (task_id, mode, expert_id), group in groupby(rows.views, key=itemgetter(0, 1, 2)):
        _work_of(tasks, task_id, mode, users[expert_id]).images_seen.extend(map(itemgetter(3), group))
    for task_id, mode, expert_id, image_id, seconds in rows.visits:
        _work_of(tasks, task_id, mode, users[expert_id]).visit_seconds[image_id] = float(seconds or 0.0)


def _add_mode_work(
    tasks: dict[int, TaskData],
    mode: str,
    table: object_columns.FloatTable,
    views: View,
    sizes: ImageSizes,
    users: dict[int, str],
) -> None:
    """Sorts one mode's objects (an `object_columns` table) into detection order per expert, in numpy, and
    keeps the counted ones."""
    if not len(table):
        return
    experts, images = (
        table[:, object_columns.EXPERT].astype(np.int64),
        table[:, object_columns.IMAGE].astype(np.int64),
    )
    image_index = m.sorted_positions(sizes.ids, images)
    task_of = sizes.tasks[image_index]
    rank = _view_rank(views, experts, images, sizes.positions[image_index])
    order = m.lexsort_order((rank, experts, task_of))  # stable: keeps the source order inside an image
    experts, task_of = experts[order], task_of[order]
    every = Boxes(table[:, object_columns.BOX], table[:, object_columns.LABEL].astype(np.int64), images)
    keep = sizes.counted(every)[order]
    # the counted rows, gathered once; each expert's are one slice of them (an expert without any keeps
    # an empty slice: the groups are those of every row)
    kept = m.take_rows(table, order[keep])
    boxes = np.ascontiguousarray(kept[:, object_columns.BOX])
    labels = kept[:, object_columns.LABEL].astype(np.int64)
    kept_images = kept[:, object_columns.IMAGE].astype(np.int64)
    edited = np.ascontiguousarray(kept[:, object_columns.EDITED])
    group = task_of * (int(experts.max(initial=0)) + 1) + experts
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    # the counted rows before each group's first row and after its last: its slice of the kept rows
    kept_before = np.concatenate([[0], np.cumsum(keep)])[np.append(starts, len(group))].tolist()
    for index, (task_id, expert_id) in enumerate(
        zip(task_of[starts].tolist(), experts[starts].tolist(), strict=True)
    ):
        part = slice(kept_before[index], kept_before[index + 1])
        tasks[task_id].work.setdefault(mode, {})[users[expert_id]] = ExpertWork(
            Boxes(boxes[part], labels[part], kept_images[part]), edited[part]
        )


@dataclass(frozen=True)
class View:
    """One mode's image views: (expert, image) rows (V, 2) in the order the query gives (by expert, then first
    seen), and how many views all modes hold (unseen images rank after every one of them)."""

    seen: m.IntArray
    total: int


def _view_rank(views: View, experts: m.IntArray, images: m.IntArray, positions: m.IntArray) -> m.IntArray:
    """Rank of each object's image in its expert's viewing order; unseen images after, by upload position."""
    seen = views.seen
    span = int(max(images.max(initial=0), seen[:, 1].max(initial=0))) + 1
    keys = seen[:, 0] * span + seen[:, 1]
    experts_seen = seen[:, 0]
    starts = np.flatnonzero(np.r_[True, experts_seen[1:] != experts_seen[:-1]]) if len(seen) else _ints()
    ranks = np.arange(len(seen), dtype=np.int64) - np.repeat(starts, np.diff(np.append(starts, len(seen))))
    order = np.argsort(keys, kind="stable")
    keys, ranks = keys[order], ranks[order]
    wanted = experts * span + images
    # the objects come in runs of one expert's objects on one image (the object table's order): each run's
    # rank is looked up once, then repeated over the run (the same ranks as a look-up per object)
    heads = np.flatnonzero(np.r_[True, wanted[1:] != wanted[:-1]]) if len(wanted) else _ints()
    head_keys = wanted.take(heads)
    where = np.minimum(np.searchsorted(keys, head_keys), max(len(keys) - 1, 0))
    found = (keys.take(where) == head_keys) if len(keys) else np.zeros(len(heads), dtype=np.bool_)
    seen_rank = np.repeat(
        np.where(found, ranks.take(where) if len(keys) else 0, -1), np.diff(np.append(heads, len(wanted)))
    )
    result: m.IntArray = np.where(seen_rank >= 0, seen_rank, views.total + positions)
    return result


def _work_of(tasks: dict[int, TaskData], task_id: int, mode: str, expert: str) -> ExpertWork:
    experts = tasks[task_id].work.setdefault(mode, {})
    if expert not in experts:
        experts[expert] = ExpertWork(Boxes(np.zeros((0, 4)), _ints(), _ints()), np.zeros(0))
    return experts[expert]


def _add_suggestions(tasks: dict[int, TaskData], rows: repository.StudyRows, sizes: ImageSizes) -> None:
    """The set shown in aided mode: the one most aided assignments show, else the newest set holding any."""
    shown: dict[int, tuple[int, int]] = {}
    for task_id, set_id, count in rows.shown_sets:
        if count > shown.get(task_id, (0, 0))[0]:
            shown[task_id] = (count, set_id)
    of_set: dict[int, m.FloatArray] = {}
    chosen: dict[int, int] = {}
    for task_id, found in rows.references.items():
        for set_id, start, stop in _runs(found.suggestions[:, reference_columns.SET].astype(np.int64)):
            of_set[set_id] = found.suggestions[start:stop]
            chosen[task_id] = set_id  # the task's sets holding suggestions, in id order: the newest last
    chosen.update({task_id: set_id for task_id, (_, set_id) in shown.items()})
    nothing = reference_columns.empty().suggestions
    for task_id, set_id in chosen.items():
        suggestions = _boxes(of_set.get(set_id, nothing), reference_columns.SUGGESTION_IMAGE)
        tasks[task_id].suggestions = suggestions.take(sizes.counted(suggestions))
        tasks[task_id].suggestion_set_id = set_id


def _add_register(tasks: dict[int, TaskData], references: dict[int, References], sizes: ImageSizes) -> None:
    """Each task's counted register entries by kind, then by group (both in order of first entry)."""
    for task_id, found in references.items():
        if not len(found.register):
            continue
        everything = _boxes(found.register, reference_columns.REGISTER_IMAGE)
        counted = np.flatnonzero(sizes.counted(everything))
        kinds = found.register[counted, reference_columns.KIND].tolist()
        groups = found.register[counted, reference_columns.GROUP].tolist()
        grouped: dict[tuple[str, int | None], list[int]] = defaultdict(list)
        for index, kind, group in zip(counted.tolist(), kinds, groups, strict=True):
            stored_group = None if group != group else int(group)  # NaN: a NULL group
            grouped[(found.kinds[int(kind)], stored_group)].append(index)
        for (kind, group), indices in grouped.items():
            tasks[task_id].register.setdefault(kind, []).append((group, everything.take(np.array(indices))))


# ---------------------------------------------------------------- computing


async def find_study(session: AsyncSession, reference: str) -> Study:
    """A study by name, or by id when no study has that name."""
    study = await repository.study_by_name(session, reference)
    if study is None and reference.isdigit():
        study = await session.get(Study, int(reference))
    if study is None:
        raise NotFound(f"no study {reference!r}")
    return study


async def task_ids_of_study(session: AsyncSession, study_id: int) -> dict[str, int]:
    return {task.name: task.id for task in await repository.tasks_of_study(session, study_id)}


async def study_metrics(
    session: AsyncSession, study: Study, params: MetricsParams, compute: Compute = in_thread
) -> StudyMetricsOut:
    """Reads the study (timed as load_s) and computes every metric off the event loop (compute_s); object
    tables the read rebuilt are stored meanwhile, and compute_s lasts until both are done."""
    params.check()
    started = perf_counter()
    rows = await repository.read_study(session, study.id)
    loaded = perf_counter()
    results, _ = await asyncio.gather(
        compute(all_task_metrics, rows, params), repository.store_derived_object_columns(session, rows)
    )
    computed = perf_counter()
    return StudyMetricsOut(
        study=study.name,
        simulated=study.simulated,
        iou=params.iou,
        error_iou=params.register_iou,
        tasks=results,
        timing=TimingOut(load_s=loaded - started, compute_s=computed - loaded),
    )


def all_task_metrics(rows: repository.StudyRows, params: MetricsParams) -> dict[str, TaskMetricsOut]:
    """Every task's metrics from the study's rows, by task name (pure CPU work, for a worker thread)."""
    results = {task.name: cached_task_metrics(task, params) for task in build_tasks(rows).values()}
    adjust_across_tasks(results)
    return results


RESULT_CACHE_SIZE = 32
V = TypeVar("V")
_RESULTS: OrderedDict[str, bytes] = OrderedDict()  # task digest → pickled (task result, its mode parts)
_MODE_PARTS: OrderedDict[str, tuple[bytes, str]] = OrderedDict()  # mode digest → (that pickle, mode)
_RESULTS_LOCK = threading.Lock()


def cached_task_metrics(task: TaskData, params: MetricsParams) -> TaskMetricsOut:
    """`task_metrics`, kept per task content and parameters: an unchanged task is not computed again; of a
    changed task, a mode whose inputs did not change (an edit touches one mode) is not computed again.

    The keys are digests of everything the metrics read (`task_digests`), so any edit, import or deletion that
    changes what a task holds misses the cache; nothing needs invalidating. Callers get their own copy: the
    results are kept pickled (a third of the time of a deep copy of the model, each way), the task result and
    its mode parts in one pickle, so that the parts the result holds are pickled once.
    """
    key, mode_keys = task_digests(task, params)
    with _RESULTS_LOCK:
        found = _recent(_RESULTS, key)
    if found is not None:
        result: TaskMetricsOut = pickle.loads(found)[0]
        return result
    parts: dict[str, ModeParts] = {}
    missing = []
    for mode in MODES:
        if task.work.get(mode):
            with _RESULTS_LOCK:
                part = _recent(_MODE_PARTS, mode_keys[mode])
            if part is None:
                missing.append(mode)
            else:
                parts[mode] = pickle.loads(part[0])[1][part[1]]
    # the modes not kept, computed together (an edit touches one; an import or a new parameter set both)
    parts.update(modes_parts(task, missing, params) if missing else {})
    parts = {mode: parts[mode] for mode in MODES if mode in parts}
    computed = task_metrics_of_parts(task, params, parts)
    kept = pickle.dumps((computed, parts), protocol=pickle.HIGHEST_PROTOCOL)
    with _RESULTS_LOCK:
        _keep(_RESULTS, key, kept, RESULT_CACHE_SIZE)
        for mode in parts:
            _keep(_MODE_PARTS, mode_keys[mode], (kept, mode), RESULT_CACHE_SIZE * len(MODES))
    return computed


def _recent(kept: OrderedDict[str, V], key: str) -> V | None:
    found = kept.get(key)
    if found is not None:
        kept.move_to_end(key)
    return found


def _keep(kept: OrderedDict[str, V], key: str, value: V, size: int) -> None:
    kept[key] = value
    while len(kept) > size:
        kept.popitem(last=False)


def clear_result_cache() -> None:
    with _RESULTS_LOCK:
        _RESULTS.clear()
        _MODE_PARTS.clear()


def task_digest(task: TaskData, params: MetricsParams) -> str:
    """Digest of a task's arrays (in order) and every other input of `task_metrics`, and the parameters."""
    return task_digests(task, params)[0]


def task_digests(task: TaskData, params: MetricsParams) -> tuple[str, dict[str, str]]:
    """`task_digest`, and by mode the digest of the inputs of `mode_parts` of that mode: the task's shared
    inputs and that mode's work (each array hashed once)."""
    # SHA-256 is OpenSSL's, on the CPU's SHA instructions where it has them: about 2.5× the speed of
    # hashlib's BLAKE2b (portable C) on the ~1.5 MB of a 26 000-object study's arrays
    shared = hashlib.sha256()
    shared.update(repr((task.name, task.kind.value, sorted(task.labels.items()), task.span, params)).encode())
    shared.update(repr(task.suggestion_set_id).encode())
    _add_boxes(shared, task.reference)
    _add_boxes(shared, task.suggestions)
    for kind, parts in sorted(task.register.items()):
        shared.update(f"register {kind}".encode())
        for group, part in parts:
            shared.update(repr(group).encode())
            _add_boxes(shared, part)
    _add_arrays(shared, task.images)
    modes = {}
    for mode, experts in sorted(task.work.items()):
        digest = shared.copy()
        for name, work in sorted(experts.items()):
            digest.update(f"work {mode}/{name}".encode())
            _add_boxes(digest, work.objects)
            _add_arrays(digest, work.edited_seconds)
            digest.update(repr((work.images_seen, sorted(work.visit_seconds.items()))).encode())
        modes[mode] = digest.hexdigest()
    whole = shared.copy()
    whole.update(repr(sorted(modes.items())).encode())
    return whole.hexdigest(), modes


def _add_arrays(digest: Any, *arrays: Any) -> None:
    for array in arrays:
        contiguous = np.ascontiguousarray(array)
        digest.update(f"{contiguous.dtype.str}{contiguous.shape}".encode())
        digest.update(contiguous.data)  # the buffer itself, not a copy


def _add_boxes(digest: Any, boxes: Boxes | None) -> None:
    _add_arrays(digest, *((boxes.boxes, boxes.labels, boxes.images) if boxes is not None else ()))
    digest.update(b"|" if boxes is not None else b"-")


@dataclass(frozen=True)
class ModeParts:
    """What one mode of a task contributes to its metrics: it reads only the task's shared inputs (reference,
    labels, register) and that mode's work, so that an edit in one mode leaves the other's parts valid."""

    metrics: ModeMetricsOut
    agreement: ModeAgreementOut
    injected: dict[str, dict[str, InjectedModeOut]]  # kind → group (and 'all') → counts


ModePartsOf = Callable[["TaskData", str, MetricsParams], ModeParts]


def mode_parts(task: TaskData, mode: str, params: MetricsParams) -> ModeParts:
    return modes_parts(task, [mode], params)[mode]


def modes_parts(task: TaskData, modes: list[str], params: MetricsParams) -> dict[str, ModeParts]:
    """`mode_parts` of each of the modes, computed in one batch of every mode's experts (`Batch.of_modes`): the
    numbers of each expert (a row) come out as in its mode's own batch, the figures of a mode from its rows."""
    batch = Batch.of_modes(task.work, modes, task.span, task.reference, _register_entries(task))
    metrics = _modes_metrics(task, batch, params)
    agreements = review.modes_agreement(task, batch, params)
    injected = _injected_of_modes(task, batch, params)
    return {
        mode: ModeParts(metrics=metrics[mode], agreement=agreements[mode], injected=injected[mode])
        for mode in modes
    }


def task_metrics(task: TaskData, params: MetricsParams, parts_of: ModePartsOf = mode_parts) -> TaskMetricsOut:
    parts = {mode: parts_of(task, mode, params) for mode in MODES if task.work.get(mode)}
    return task_metrics_of_parts(task, params, parts)


def task_metrics_of_parts(
    task: TaskData, params: MetricsParams, parts: dict[str, ModeParts]
) -> TaskMetricsOut:
    modes = {mode: part.metrics for mode, part in parts.items()}
    return TaskMetricsOut(
        modes=modes,
        suggestions=_suggestions_metrics(task, params),
        injected_errors=_injected_metrics(task, parts),
        statistics=_statistics(modes),
        agreement=review.agreement_of_modes(
            task, {mode: part.agreement for mode, part in parts.items()}, params
        ),
        uncertainty=review.task_uncertainty(task, params, _natural_key, seconds_by_image)
        if params.bootstrap
        else None,
    )


def concordance(objects: Boxes, reference: Boxes, iou: float) -> m.Concordance:
    return m.paper_concordance(
        objects.boxes,
        objects.labels,
        objects.images,
        reference.boxes,
        reference.labels,
        reference.images,
        iou=iou,
    )


@dataclass(frozen=True)
class ReferenceOverlaps:
    """The batch's objects against the reference repeated once per expert (`Batch.repeat`): the pairs that
    intersect on the same image whatever their classes (`metrics.overlaps`, computed once) and those of the
    same class, with the keys each set of pairs belongs to. Every matching against the reference starts here:
    concordance, vote-weighted concordance, the agreement statistics' label-agnostic match."""

    references: Boxes
    any_class: m.Overlaps
    same_class: m.Overlaps
    image_keys: tuple[m.IntArray, m.IntArray]
    class_keys: tuple[m.IntArray, m.IntArray]

    @staticmethod
    def of(batch: Batch, reference: Boxes, pairs: m.Overlaps | None = None) -> ReferenceOverlaps:
        """pairs: `batch.overlaps_with_repeated(reference)` when the caller found them already."""
        objects, references = batch.objects, batch.repeat(reference)
        pairs = batch.overlaps_with_repeated(reference) if pairs is None else pairs
        same = objects.labels[pairs.det] == references.labels[pairs.ref]
        class_keys = m.joint_keys(objects.labels, objects.images, references.labels, references.images)
        return ReferenceOverlaps(
            references, pairs, pairs.where(same), (objects.images, references.images), class_keys
        )

    def greedy(self, iou: float, any_class: bool = False) -> m.GreedyMatch:
        """`metrics.greedy_match` of the objects against the references, of the same class or any class."""
        pairs, keys = (self.any_class, self.image_keys) if any_class else (self.same_class, self.class_keys)
        return m.greedy_of_overlaps(pairs, *keys, iou)


@dataclass(frozen=True)
class Batch:
    """Every expert's objects of one task and mode in one array set; image ids shifted by row · span so that
    one call of the pure matching functions evaluates all experts at once without mixing them."""

    names: list[str]
    objects: Boxes
    owners: m.IntArray  # row of each object's expert in names
    bounds: list[tuple[int, int]]
    span: int
    reference: Boxes | None = None
    registers: Boxes | None = None
    works: list[ExpertWork] = field(default_factory=list)  # each row's
    blocks: list[tuple[str, int, int]] = field(default_factory=list)  # (mode, first row, row after the last)

    @staticmethod
    def of(
        experts: dict[str, ExpertWork],
        span: int,
        reference: Boxes | None = None,
        registers: Boxes | None = None,
    ) -> Batch:
        """span: more than any image id of the study; reference: the task's (for `reference_overlaps`);
        registers: the task's register entries of every kind (`_register_entries`, for `register_overlaps`)."""
        return Batch.of_modes({"": experts}, [""], span, reference, registers)

    @staticmethod
    def of_modes(
        work: dict[str, dict[str, ExpertWork]],
        modes: list[str],
        span: int,
        reference: Boxes | None = None,
        registers: Boxes | None = None,
    ) -> Batch:
        """`of` the experts of several modes at once: each mode's experts in a block of rows (`blocks`), in the
        order and with the shifts of their own mode's batch plus the rows before the block. Every row is
        matched on its own, so its numbers are those of its own mode's batch; what compares experts with
        each other (`block_rows`) stays inside a block."""
        names: list[str] = []
        works: list[ExpertWork] = []
        blocks: list[tuple[str, int, int]] = []
        for mode in modes:
            experts = work.get(mode, {})
            start = len(names)
            names += sorted(experts, key=_natural_key)
            works += [experts[name] for name in names[start:]]
            blocks.append((mode, start, len(names)))
        parts = [work.objects for work in works]
        sizes = np.cumsum([0, *(len(part) for part in parts)])
        shifted = [Boxes(part.boxes, part.labels, part.images + row * span) for row, part in enumerate(parts)]
        bounds = [(int(sizes[row]), int(sizes[row + 1])) for row in range(len(parts))]
        owners = np.repeat(np.arange(len(parts), dtype=np.int64), np.diff(sizes))
        objects = _concat(shifted) if parts else _empty()
        return Batch(names, objects, owners, bounds, span, reference, registers, works, blocks)

    def block_objects(self, start: int, stop: int) -> slice:
        """The objects of rows start .. stop − 1 (one block, say): one slice."""
        first = self.bounds[start][0] if start < len(self.bounds) else len(self.objects)
        last = self.bounds[stop - 1][1] if stop > start else first
        return slice(first, last)

    def repeat(self, reference: Boxes) -> Boxes:
        """The reference once per expert, shifted like the expert's objects."""
        span, rows = self.span, len(self.names)
        return Boxes(
            np.tile(reference.boxes, (rows, 1)),
            np.tile(reference.labels, rows),
            (reference.images[None, :] + np.arange(rows, dtype=np.int64)[:, None] * span).reshape(-1),
        )

    @cached_property
    def reference_overlaps(self) -> ReferenceOverlaps:
        """The objects' overlaps with the task's reference, computed on first use and kept with the batch."""
        assert self.reference is not None, "Batch.of(..., reference=) first"
        return ReferenceOverlaps.of(self, self.reference, self._entry_overlaps[0])

    @cached_property
    def register_overlaps(self) -> m.Overlaps:
        """`overlaps_with_repeated` of the task's register entries (`RegisterOverlaps`), kept with the batch."""
        assert self.registers is not None, "Batch.of(..., registers=) first"
        return self._entry_overlaps[1]

    @cached_property
    def _entry_overlaps(self) -> list[m.Overlaps]:
        """The objects' overlaps with the reference and with the register entries, from one sweep (those known
        to the batch; `overlaps_with_repeated` of each)."""
        parts = [part for part in (self.reference, self.registers) if part is not None]
        found = self.overlaps_with_repeated_parts(parts)
        return found if self.reference is not None else [m.Overlaps(_ints(), _ints(), np.zeros(0)), *found]

    def overlaps_with_repeated(self, entries: Boxes) -> m.Overlaps:
        """`metrics.overlaps` of the objects and `repeat(entries)`, found against the entries once: an object's
        pairs lie in its own expert's copy, so the pairs, their order and IoU are those of the repeated set."""
        return self.overlaps_with_repeated_parts([entries])[0]

    def overlaps_with_repeated_parts(self, parts: list[Boxes]) -> list[m.Overlaps]:
        """`overlaps_with_repeated` of each part, from one sweep against the parts end to end: a pair's entry
        lies in one part, and the pairs of a part keep their order (by object, entries ascending)."""
        entries = parts[0] if len(parts) == 1 else _concat(parts) if parts else _empty()
        local = m.overlaps(self.objects.boxes, self.objects.images % self.span, entries.boxes, entries.images)
        found, start = [], 0
        for part in parts:
            stop = start + len(part)
            chosen = local if len(parts) == 1 else local.where((local.ref >= start) & (local.ref < stop))
            repeated = self.owners[chosen.det] * len(part) + (chosen.ref - start)
            found.append(m.Overlaps(chosen.det, repeated, chosen.iou))
            start = stop
        return found


def _empty() -> Boxes:
    return Boxes(np.zeros((0, 4)), _ints(), _ints())


def _modes_metrics(task: TaskData, batch: Batch, params: MetricsParams) -> dict[str, ModeMetricsOut]:
    """Concordance and vote-weighted concordance of every expert of each mode of the batch (`Batch.of_modes`)
    from one shared greedy matching."""
    match = batch.reference_overlaps.greedy(params.iou)
    weighted = vote_weighted_of_blocks(task, batch, params.iou)
    classes, ap, counted = _per_class_ap(batch, match.true_positive, task.reference)
    seconds = _seconds_per_image_of_batch(batch, batch.works)
    modes = {}
    for (mode, first, last), block in zip(batch.blocks, weighted, strict=True):
        results: dict[str, ExpertMetricsOut] = {}
        for row in range(first, last):
            start, stop = batch.bounds[row]
            scores = ap[row, counted[row]]
            results[batch.names[row]] = ExpertMetricsOut(
                objects=stop - start,
                seconds_per_image=_number(seconds[row]),
                concordance=m.mean_of(scores) if len(scores) else 0.0,
                vote_weighted_concordance=_number(float(block.scores[row - first])),
                vote_weighted_precision=_number(float(block.precision[row - first])),
                vote_weighted_recall=_number(float(block.recall[row - first])),
                vote_weighted_note=_vote_weighted_note(block),
                per_class={
                    task.labels.get(label, str(label)): value
                    for label, value in zip(classes[counted[row]].tolist(), scores.tolist(), strict=True)
                },
            )
        modes[mode] = ModeMetricsOut(
            experts=results,
            summary=ModeSummaryOut(
                concordance=spread([result.concordance for result in results.values()]),
                seconds_per_image=spread([result.seconds_per_image for result in results.values()]),
            ),
            consensus=_consensus(task, task.work.get(mode, {}), batch.names[first:last], params),
        )
    return modes


# ---------------------------------------------------------------- vote-weighted concordance


def vote_weighted_of_blocks(task: TaskData, batch: Batch, iou: float) -> list[m.VoteWeighted]:
    """`metrics.vote_weighted_concordance` of each block of the batch's experts (a mode, `Batch.of_modes`):
    one-to-one matching (Hungarian, IoU) of every row against the reference at once, each kept error costed
    by the kept errors of the other experts of its block, the votes counted inside the block."""
    rows, size = len(batch.names), len(task.reference)
    det, ref = _one_to_one(batch, task.reference, iou)
    matched = np.zeros(rows * size, dtype=np.bool_)
    matched[ref] = True
    votes = matched.reshape(rows, size)
    kept = np.ones(len(batch.objects), dtype=np.bool_)
    kept[det] = False
    # every block's kept errors counted at once: an error's image is shifted by its block, so that errors
    # of different blocks never share an image (each expert's own shift is undone, as one mode's batch does)
    errors = np.flatnonzero(kept)
    owners = batch.owners[errors]
    block_of_row = np.repeat(np.arange(len(batch.blocks)), [last - first for _, first, last in batch.blocks])
    objects = batch.objects
    sharing = m.kept_error_sharing(
        m.take_rows(objects.boxes, errors),
        objects.labels[errors],
        objects.images[errors] % batch.span + block_of_row[owners] * batch.span,
        owners,
        iou,
    )
    # the errors are in object order, so each row's are one run: its slice of the errors
    row_starts = np.searchsorted(owners, np.arange(rows + 1)).tolist()
    found = []
    for _, first, last in batch.blocks:
        costs = m.costs_of_sharing(sharing[row_starts[first] : row_starts[last]], last - first)
        cuts = [start - row_starts[first] for start in row_starts[first : last + 1]]
        found.append(
            m.vote_weighted_concordance(
                votes[first:last], [costs[cuts[row] : cuts[row + 1]] for row in range(last - first)]
            )
        )
    return found


def _one_to_one(batch: Batch, reference: Boxes, iou: float) -> tuple[m.IntArray, m.IntArray]:
    if batch.reference is reference and iou > 0:
        found = batch.reference_overlaps
        keys = found.class_keys
        objects = batch.objects
        return m.one_to_one_of_overlaps(
            found.same_class, objects.boxes, keys[0], found.references.boxes, keys[1], iou
        )
    return m.one_to_one_match(*_fields(batch.objects), *_fields(batch.repeat(reference)), "iou", iou)


def _vote_weighted_note(weighted: m.VoteWeighted) -> str:
    return "" if weighted.others else "no other expert in this task and mode: plain F1"


def _fields(boxes: Boxes) -> tuple[m.FloatArray, m.IntArray, m.IntArray]:
    return boxes.boxes, boxes.labels, boxes.images


def _per_class_ap(
    batch: Batch, true_positive: m.BoolArray, reference: Boxes
) -> tuple[m.IntArray, m.FloatArray, m.BoolArray]:
    """`metrics.paper_concordance` per expert and class from a batched greedy match, in one pass.

    Returns the classes (C,) sorted, AP (E, C) and which classes count for each expert (E, C): its objects'
    labels ∪ the reference's labels, as `metrics.paper_concordance`.
    """
    rows = len(batch.names)
    classes = m.distinct_values(np.concatenate([batch.objects.labels, reference.labels]))  # np.union1d
    width = len(classes)
    groups = batch.owners * width + m.sorted_positions(classes, batch.objects.labels)
    n_ref = np.bincount(np.searchsorted(classes, reference.labels), minlength=width)
    ap = m.grouped_average_precision(true_positive, groups, np.tile(n_ref, rows)).reshape(rows, width)
    detected = np.bincount(groups, minlength=rows * width).reshape(rows, width) > 0
    return classes, ap, detected | (n_ref > 0)


def seconds_by_image(work: ExpertWork) -> m.FloatArray:
    """Active seconds of each image the expert saw, the terms of `seconds_per_image`'s mean."""
    seen = list(dict.fromkeys(work.images_seen)) or list(dict.fromkeys(work.objects.images.tolist()))
    if work.visit_seconds:
        images = list(dict.fromkeys([*seen, *work.visit_seconds]))
        return np.array([work.visit_seconds.get(image, 0.0) for image in images], dtype=np.float64)
    if not seen:
        return np.zeros(0)
    chosen = np.array(seen, dtype=np.int64)
    n_images = int(max(chosen.max(), work.objects.images.max(initial=0))) + 1
    totals = m.seconds_per_image_gaps(work.objects.images, work.edited_seconds, n_images)
    return np.asarray(totals[chosen], dtype=np.float64)


def _seconds_per_image_of_batch(
    batch: Batch, experts: dict[str, ExpertWork] | list[ExpertWork]
) -> list[float]:
    """`seconds_per_image` of each expert of the batch (experts: by name, or each row's), the 300-s rule's gaps
    found for all of them at once: the batch's image ids are shifted per expert, so each image's gaps are
    those, in the same order, that the rule finds for its expert alone."""
    works = experts if isinstance(experts, list) else [experts[name] for name in batch.names]
    if all(work.visit_seconds for work in works):
        return [seconds_per_image(work) for work in works]
    edited = np.concatenate([np.zeros(0), *(work.edited_seconds for work in works)])
    size = batch.span * len(works)
    totals = m.seconds_per_image_gaps(batch.objects.images, edited, size)
    by_rule = [row for row, work in enumerate(works) if not work.visit_seconds]
    # the distinct images each of them saw, shifted by its row like the batch's image ids: ascending, so each
    # row's are one run, in the order a distinct set of its own would give
    seen = [works[row].images_seen or works[row].objects.images.tolist() for row in by_rule]
    lengths = [len(images) for images in seen]
    shifts = np.repeat(np.array(by_rule, dtype=np.int64) * batch.span, lengths)
    distinct = m.distinct_ints(np.fromiter(chain.from_iterable(seen), np.int64, sum(lengths)) + shifts, size)
    bounds = np.searchsorted(distinct, np.arange(len(works) + 1, dtype=np.int64) * batch.span).tolist()
    seconds = totals[distinct]
    results = []
    for row, work in enumerate(works):
        start, stop = bounds[row], bounds[row + 1]
        if work.visit_seconds:
            results.append(seconds_per_image(work))
        else:
            results.append(m.mean_of(seconds[start:stop]) if stop > start else math.nan)
    return results


def seconds_per_image(work: ExpertWork) -> float:
    """Concord's own visits when there are any (Σ active seconds / images seen), else the published 300-s rule."""
    seen = list(dict.fromkeys(work.images_seen)) or list(dict.fromkeys(work.objects.images.tolist()))
    if work.visit_seconds:
        images = set(seen) | set(work.visit_seconds)
        return sum(work.visit_seconds.values()) / len(images)
    if not seen:
        return math.nan
    return m.seconds_per_image_300s_rule(
        np.array(seen, dtype=np.int64), work.objects.images, work.edited_seconds
    )


# ---------------------------------------------------------------- consensus


def consensus_of(experts: dict[str, ExpertWork], params: MetricsParams) -> m.Consensus | None:
    """Consensus of one task and mode's experts: centre-radius clustering or NMS vote counting (params);
    None when params ask for none. Objects are pooled in the experts' natural name order."""
    if params.consensus_radius is None and params.consensus_nms is None:
        return None
    pooled = [experts[name].objects for name in sorted(experts, key=_natural_key)]
    owners = np.concatenate(
        [_ints(), *(np.full(len(part), row, dtype=np.int64) for row, part in enumerate(pooled))]
    )
    boxes = _concat(pooled) if pooled else _empty()
    if params.consensus_nms is not None:
        return m.nms_consensus(
            boxes.boxes, boxes.labels, owners, boxes.images, params.consensus_nms, params.min_votes
        )
    assert params.consensus_radius is not None
    return m.consensus(
        boxes.boxes, boxes.labels, owners, boxes.images, params.consensus_radius, params.min_votes
    )


def _consensus(
    task: TaskData, experts: dict[str, ExpertWork], names: list[str], params: MetricsParams
) -> ConsensusOut | None:
    found = consensus_of(experts, params)
    if found is None:
        return None
    agreed = Boxes(found.boxes, found.labels, found.images)
    values, counts = np.unique(found.votes, return_counts=True)
    return ConsensusOut(
        method="nms" if params.consensus_nms is not None else "radius",
        radius=params.consensus_radius,
        nms_iou=params.consensus_nms,
        min_votes=params.min_votes,
        objects=len(agreed),
        concordance=concordance(agreed, task.reference, params.iou).mean,
        votes={int(value): int(count) for value, count in zip(values, counts, strict=True)},
    )


@dataclass(frozen=True)
class ConsensusObject:
    """One consensus object for export: image and label ids, box in pixels, votes and VotesLoss weight."""

    image_id: int
    label_id: int
    box: tuple[float, float, float, float]
    votes: int
    weight: float


async def task_consensus(
    session: AsyncSession, study_id: int, task_id: int, mode: str, params: MetricsParams, compute: Compute
) -> list[ConsensusObject]:
    """Consensus objects of one task and mode with their votes and VotesLoss weights (over these objects)."""
    params.check()
    rows = await repository.read_study(session, study_id)
    await repository.store_derived_object_columns(session, rows)
    return await compute(_consensus_objects, rows, task_id, mode, params)


def _consensus_objects(
    rows: repository.StudyRows, task_id: int, mode: str, params: MetricsParams
) -> list[ConsensusObject]:
    task = build_tasks(rows)[task_id]
    found = consensus_of(task.work.get(mode, {}), params)
    if found is None:
        return []
    weights = m.votes_loss_weights(found.votes)
    return [
        ConsensusObject(int(image), int(label), (box[0], box[1], box[2], box[3]), int(votes), float(weight))
        for image, label, box, votes, weight in zip(
            found.images.tolist(),
            found.labels.tolist(),
            found.boxes.tolist(),
            found.votes.tolist(),
            weights.tolist(),
            strict=True,
        )
    ]


def _suggestions_metrics(task: TaskData, params: MetricsParams) -> SuggestionsOut:
    if task.suggestions is None:
        return SuggestionsOut(suggestion_set_id=None, concordance=None)
    score = concordance(task.suggestions, task.reference, params.iou)
    return SuggestionsOut(suggestion_set_id=task.suggestion_set_id, concordance=score.mean)


def _injected_metrics(
    task: TaskData, parts: dict[str, ModeParts]
) -> dict[str, dict[str, dict[str, InjectedModeOut]]]:
    """kind → group (and 'all') → mode → per-expert and pooled counts: caught and missed by the per-kind rule,
    and the published analysis's raw `matched` (entries found with their label)."""
    results: dict[str, dict[str, dict[str, InjectedModeOut]]] = {}
    for kind in task.register:
        by_group: dict[str, dict[str, InjectedModeOut]] = {}
        for mode, part in parts.items():
            for group, counts in part.injected[kind].items():
                by_group.setdefault(group, {})[mode] = counts
        results[kind] = by_group
    return results


def _injected_of_modes(
    task: TaskData, batch: Batch, params: MetricsParams
) -> dict[str, dict[str, dict[str, InjectedModeOut]]]:
    """mode → kind → group (and 'all') → the mode's counts (see `_injected_metrics`); each mode's from its
    block of the batch's rows (`Batch.of_modes`)."""
    results: dict[str, dict[str, dict[str, InjectedModeOut]]] = {mode: {} for mode, _, _ in batch.blocks}
    registers = {kind: _concat([part for _, part in parts]) for kind, parts in task.register.items()}
    overlaps = (
        RegisterOverlaps(batch.register_overlaps, sum(len(part) for part in registers.values()))
        if batch.registers is not None
        else RegisterOverlaps.of(batch, list(registers.values()))
    )
    offsets = np.cumsum([0, *(len(entries) for entries in registers.values())]).tolist()
    for index, (kind, parts) in enumerate(task.register.items()):
        entries = registers[kind]
        groups = np.concatenate([np.full(len(part), -1 if group is None else group) for group, part in parts])
        kind_pairs = overlaps.of_kind(offsets[index], len(entries))
        found, caught = _register_flags(task, kind, entries, batch, kind_pairs, params.register_iou)
        masks = _group_masks(groups)
        for mode, first, last in batch.blocks:
            results[mode][kind] = {
                key: _injected_mode(batch.names[first:last], found[first:last], caught[first:last], mask)
                for key, mask in masks
            }
    return results


@dataclass(frozen=True)
class RegisterOverlaps:
    """A batch's objects against every register entry of the task (all kinds, concatenated, repeated once per
    expert like `Batch.repeat`): their intersecting pairs on the same image, any class, found once per mode."""

    pairs: m.Overlaps
    total: int  # entries of all kinds

    @staticmethod
    def of(batch: Batch, registers: list[Boxes]) -> RegisterOverlaps:
        pairs = batch.overlaps_with_repeated(_concat(registers) if registers else _empty())
        return RegisterOverlaps(pairs, sum(len(part) for part in registers))

    def of_kind(self, offset: int, size: int) -> m.Overlaps:
        """The pairs with one kind's entries, their indices into `Batch.repeat` of that kind's entries."""
        row, column = np.divmod(self.pairs.ref, max(self.total, 1))
        local = column - offset
        keep = (local >= 0) & (local < size)
        chosen = self.pairs.where(keep)
        return m.Overlaps(chosen.det, row[keep] * size + local[keep], chosen.iou)


def _register_flags(
    task: TaskData, kind: str, entries: Boxes, batch: Batch, pairs: m.Overlaps, iou: float
) -> tuple[m.BoolArray, m.BoolArray]:
    """matched, caught (E, K) of one kind's entries: `metrics.matched_register_entries` (greedy, same class) and
    `caught_entries`, from the kind's overlapping pairs (IoU > 0 is needed by both when iou > 0)."""
    rows, size = len(batch.names), len(entries)
    repeated = batch.repeat(entries)
    if iou <= 0:
        candidates = batch.objects.take(_register_candidates(batch, [entries]))
        found = m.matched_register_entries(*_fields(repeated), *_fields(candidates), iou=iou)
        return found.reshape(rows, size), caught_entries(task, kind, entries, batch, iou)
    same = batch.objects.labels[pairs.det] == repeated.labels[pairs.ref]
    det_keys, ref_keys = m.joint_keys(
        batch.objects.labels, batch.objects.images, repeated.labels, repeated.images
    )
    found = m.greedy_of_overlaps(pairs.where(same), det_keys, ref_keys, iou).reference_taken
    if kind == "duplicate":
        caught = caught_entries(task, kind, entries, batch, iou)
    else:
        hits = pairs.iou >= iou if kind == "false_positive" else (pairs.iou >= iou) & same
        overlapped = np.bincount(pairs.ref[hits], minlength=rows * size) > 0
        caught = (~overlapped if kind == "false_positive" else overlapped).reshape(rows, size)
    return found.reshape(rows, size), caught


# ---------------------------------------------------------------- injected errors caught or missed


def caught_entries(task: TaskData, kind: str, entries: Boxes, batch: Batch, iou: float) -> m.BoolArray:
    """caught (E, K): whether each expert of the batch caught each register entry of one kind
    (`metrics.caught_errors`; a duplicate's original is the reference object overlapping the copy most)."""
    rows = len(batch.names)
    originals = None
    if kind == "duplicate":
        original = m.duplicate_originals(
            entries.boxes, entries.images, task.reference.boxes, task.reference.images
        )
        boxes = np.vstack([task.reference.boxes, np.full((1, 4), np.nan)])
        originals = np.tile(m.take_rows(boxes, original), (rows, 1))  # NO_MATCH (−1) picks the NaN row
    on_register_images = m.contained_ints(batch.objects.images % batch.span, entries.images)
    detections = batch.objects.take(np.flatnonzero(on_register_images))
    caught = m.caught_errors(kind, _fields(batch.repeat(entries)), _fields(detections), originals, iou)
    return caught.reshape(rows, len(entries))


def _register_entries(task: TaskData) -> Boxes:
    """Every register entry of the task, kind after kind (`task.register`'s order), as `RegisterOverlaps` takes
    them."""
    parts = [part for parts in task.register.values() for _, part in parts]
    return _concat(parts) if parts else _empty()


def _register_candidates(batch: Batch, registers: list[Boxes]) -> m.IntArray:
    """Indices of the batch's objects that share an image and class with some register entry, in order.

    The greedy register matching can only match these, and leaving the others out changes no result.
    """
    entries = _concat(registers) if registers else _empty()
    images = np.concatenate([batch.objects.images % batch.span, entries.images])
    keys = m.match_keys(np.concatenate([batch.objects.labels, entries.labels]), images)
    return np.flatnonzero(np.isin(keys[: len(batch.objects)], keys[len(batch.objects) :]))


def _concat(parts: list[Boxes]) -> Boxes:
    return Boxes(
        np.concatenate([part.boxes for part in parts]).reshape(-1, 4),
        np.concatenate([part.labels for part in parts]),
        np.concatenate([part.images for part in parts]),
    )


def _group_masks(groups: m.IntArray) -> list[tuple[str, m.BoolArray]]:
    masks = [(ALL_GROUPS, np.ones(len(groups), dtype=np.bool_))]
    masks += [(str(int(group)), groups == group) for group in np.unique(groups) if group >= 0]
    return masks


def _injected_mode(
    names: list[str], matched: m.BoolArray, caught: m.BoolArray, mask: m.BoolArray
) -> InjectedModeOut:
    """matched, caught (E, K): each expert's flags per register entry (rows in names' order); mask (K,): the
    entries of one group."""
    total = int(mask.sum())
    caught_counts = np.count_nonzero(caught[:, mask], axis=1).tolist()
    matched_counts = np.count_nonzero(matched[:, mask], axis=1).tolist()
    experts = {}
    for name, hits, found in zip(names, caught_counts, matched_counts, strict=True):
        experts[name] = CountOut(
            total=total,
            caught=hits,
            missed=total - hits,
            caught_rate=hits / total if total else None,
            matched=found,
        )
    total = sum(count.total for count in experts.values())
    pooled_matched = sum(count.matched for count in experts.values())
    pooled_caught = sum(count.caught for count in experts.values())
    return InjectedModeOut(
        experts=experts,
        pooled=PooledOut(
            total=total,
            caught=pooled_caught,
            missed=total - pooled_caught,
            caught_rate=pooled_caught / total if total else None,
            matched=pooled_matched,
            rate=pooled_matched / total if total else None,
        ),
    )


def _statistics(modes: dict[str, ModeMetricsOut]) -> dict[str, TestsOut]:
    return {
        "concordance": _tests(modes, lambda result: result.concordance),
        "seconds_per_image": _tests(modes, lambda result: result.seconds_per_image),
    }


def _tests(modes: dict[str, ModeMetricsOut], value: Any) -> TestsOut:
    unaided = modes.get("unaided")
    aided = modes.get("aided")
    first = {name: value(result) for name, result in unaided.experts.items()} if unaided else {}
    second = {name: value(result) for name, result in aided.experts.items()} if aided else {}
    anova = statistics.anova_oneway(_finite(first.values()), _finite(second.values()))
    both = [name for name in first if name in second]
    before, after = [_nan(first[name]) for name in both], [_nan(second[name]) for name in both]
    paired = statistics.paired_t(before, after)
    differences = [b - a for a, b in zip(before, after, strict=True) if math.isfinite(b - a)]
    return TestsOut(
        anova_F=_number(anova.f),
        anova_df=[anova.df_between, anova.df_within],
        anova_p=_number(anova.p),
        paired_t=_number(paired.t),
        paired_df=paired.df,
        paired_p=_number(paired.p),
        note="; ".join(reason for reason in (anova.reason, paired.reason) if reason),
        mean_difference=float(np.mean(differences)) if differences else None,
        effect_size_dz=_number(statistics.paired_effect_size(before, after)),
    )


def adjust_across_tasks(results: dict[str, TaskMetricsOut]) -> None:
    """Holm adjustment of each measure's paired and ANOVA p-values across the study's tasks."""
    measures = {measure for result in results.values() for measure in result.statistics}
    for measure in measures:
        tests = [result.statistics[measure] for result in results.values() if measure in result.statistics]
        for adjusted, test in zip(statistics.holm([test.paired_p for test in tests]), tests, strict=True):
            test.paired_p_holm = adjusted
        for adjusted, test in zip(statistics.holm([test.anova_p for test in tests]), tests, strict=True):
            test.anova_p_holm = adjusted


def spread(values: Iterable[float | None]) -> SpreadOut:
    """Mean, min, max and population SD of the finite values; nulls when there are none."""
    finite = np.array(_finite(values), dtype=np.float64)
    if len(finite) == 0:
        return SpreadOut(mean=None, min=None, max=None, sd=None)
    return SpreadOut(
        mean=float(finite.mean()), min=float(finite.min()), max=float(finite.max()), sd=float(finite.std())
    )


def _finite(values: Iterable[float | None]) -> list[float]:
    return [value for value in values if value is not None and math.isfinite(value)]


def _nan(value: float | None) -> float:
    return math.nan if value is None else value


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    """'Participant_3' before 'Participant_11'."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in re.split(r"(\d+)", name))
