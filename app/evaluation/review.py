"""Statistics a reviewer asks for, per task: agreement, counts per image, clinical threshold, bootstrap CIs.

Works on the arrays that `service.build_tasks` made (TaskData: counted objects in detection order) and the
pure functions of `agreement`, `bootstrap` and `metrics`.

- Labels vs reference: each expert's objects are matched to the reference by the paper's greedy rule at the
  concordance IoU, ignoring labels; on the matched cells, Cohen's kappa of the expert's label vs the
  reference label (quadratic weights in label order for grading tasks, unweighted otherwise).
- Across experts, per mode: all experts' objects are clustered per image by box centre (the consensus radius,
  default 50 px); each cluster is a unit that every expert labels (their first object in it) or leaves out.
  Fleiss' kappa over labels + "not marked" (detection and label agreement), Krippendorff's alpha over labels
  with "not marked" as missing (label agreement; ordinal for grading tasks).
- Counts per image: of every label, or of the task's first label for detection tasks (the counted figure,
  e.g. mitotic figures), on the images the expert saw. Per expert ICC(A,1) and Bland–Altman vs reference;
  per mode pooled Bland–Altman and ICC(A,1) among experts on the images all of them saw.
- Clinical threshold (detection tasks): expert × image cases on the other side of the threshold than the
  reference, over and under.
- Bootstrap (when asked): 95 % percentile intervals of the mean concordance, mean seconds per image and the
  pooled caught rate of each injected-error kind (`caught_rate.<kind>`, caught by the per-kind rules as in
  the point figures), per mode and for aided − unaided (experts in both modes), by
  `bootstrap.replicate_ratios`; cached per task content and parameters.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from app.evaluation import agreement
from app.evaluation import bootstrap as bs
from app.evaluation import metrics as m
from app.evaluation.schemas import (
    AgreementOut,
    BlandAltmanOut,
    ExpertAgreementOut,
    IntervalOut,
    ModeAgreementOut,
    ThresholdOut,
    UncertaintyOut,
)
from app.models import TaskKind

if TYPE_CHECKING:
    from app.evaluation.service import Batch, Boxes, ExpertWork, MetricsParams, TaskData

DIFFERENCE = "aided_minus_unaided"
CACHE_SIZE = 32
_CACHE: OrderedDict[str, UncertaintyOut] = OrderedDict()


def _number(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _names(experts: dict[str, ExpertWork], order: Callable[[str], Any]) -> list[str]:
    return sorted(experts, key=order)


# ---------------------------------------------------------------- agreement


def task_agreement(task: TaskData, batches: dict[str, Batch], params: MetricsParams) -> AgreementOut:
    """Agreement of every mode of a task (see the module text); batches: `service.Batch` of each mode."""
    modes = {mode: mode_agreement(task, mode, batch, params) for mode, batch in batches.items()}
    return agreement_of_modes(task, modes, params)


def mode_agreement(task: TaskData, mode: str, batch: Batch, params: MetricsParams) -> ModeAgreementOut:
    """Agreement of one mode of a task; batch: the mode's `service.Batch` (`Batch.of`: one block)."""
    (found,) = modes_agreement(task, batch, params).values()
    return found


def modes_agreement(task: TaskData, batch: Batch, params: MetricsParams) -> dict[str, ModeAgreementOut]:
    """Agreement of each mode of a batch of several (`service.Batch.of_modes`), by mode."""
    counted_labels, threshold, radius = _agreement_settings(task, params)
    return _modes_agreement(task, batch, params, counted_labels, threshold, radius)


def agreement_of_modes(
    task: TaskData, modes: dict[str, ModeAgreementOut], params: MetricsParams
) -> AgreementOut:
    counted_labels, threshold, radius = _agreement_settings(task, params)
    return AgreementOut(
        label_kappa_weights="quadratic" if task.kind == TaskKind.grade else "none",
        count_label=task.labels[counted_labels[0]]
        if task.kind == TaskKind.detect and counted_labels
        else None,
        count_threshold=threshold,
        consensus_radius=radius,
        modes=modes,
    )


def _agreement_settings(task: TaskData, params: MetricsParams) -> tuple[list[int], float | None, float]:
    """Labels counted per image, the clinical threshold (detection tasks), the cluster radius."""
    label_ids = list(task.labels)
    counted_labels = label_ids[:1] if task.kind == TaskKind.detect else label_ids
    threshold = params.count_threshold if task.kind == TaskKind.detect else None
    return counted_labels, threshold, params.consensus_radius or m.CONSENSUS_RADIUS_PX


def _modes_agreement(
    task: TaskData,
    batch: Batch,
    params: MetricsParams,
    counted_labels: list[int],
    threshold: float | None,
    radius: float,
) -> dict[str, ModeAgreementOut]:
    """Every row's figures at once, then each mode's from its block of rows."""
    names = batch.names
    codes = _label_codes(task.labels)
    kappas = _label_kappas(
        batch, task.reference, codes, params.iou, "quadratic" if task.kind == TaskKind.grade else "none"
    )
    reference_counts = _counts_by_image(task.reference, counted_labels, task.span)
    counts_of_experts = _counts_by_image(batch.objects, counted_labels, batch.span * len(names)).reshape(
        len(names), batch.span
    )  # the batch's image ids are shifted by row · span: one row of counts per expert
    seen_of = [_images_seen(work) for work in batch.works]
    figures = _count_figures(counts_of_experts, reference_counts, seen_of, threshold)
    clusters = _cluster_agreements(task, batch, codes, radius)
    return {
        mode: _mode_agreement(
            names, first, last, kappas, seen_of, figures, reference_counts, clusters[index], threshold
        )
        for index, (mode, first, last) in enumerate(batch.blocks)
    }


def _mode_agreement(
    names: list[str],
    first: int,
    last: int,
    kappas: list[tuple[float, int]],
    seen_of: list[np.ndarray],
    figures: list[CountFigures],
    reference_counts: np.ndarray,
    clusters: tuple[float, float, int],
    threshold: float | None,
) -> ModeAgreementOut:
    """One mode's agreement from its rows first .. last − 1 of the batch's figures."""
    rows: dict[str, ExpertAgreementOut] = {}
    seen_counts: dict[str, dict[int, float]] = {}
    over = under = cases = 0
    for row in range(first, last):
        name = names[row]
        kappa, matched = kappas[row]
        seen, (mine, icc, limits, split) = seen_of[row], figures[row]
        seen_counts[name] = dict(zip(seen.tolist(), mine.tolist(), strict=True))
        if split is not None:
            over, under, cases = over + split.over, under + split.under, cases + split.cases
        rows[name] = ExpertAgreementOut(
            label_kappa=_number(kappa),
            matched_cells=matched,
            images=len(seen),
            count_icc=_number(icc),
            count_bland_altman=_limits(limits),
            threshold_over=None if split is None else split.over,
            threshold_under=None if split is None else split.under,
        )
    pooled_expert = [figures[row][0] for row in range(first, last)]
    pooled_reference = [reference_counts[seen] for seen in seen_of[first:last]]
    fleiss, alpha, found = clusters
    return ModeAgreementOut(
        experts=rows,
        clusters=found,
        fleiss_kappa=_number(fleiss),
        krippendorff_alpha=_number(alpha),
        count_icc_experts=_number(_icc_among(seen_counts)),
        count_bland_altman=_limits(agreement.bland_altman(_joined(pooled_expert), _joined(pooled_reference))),
        threshold=None
        if threshold is None
        else ThresholdOut(threshold=threshold, cases=cases, over=over, under=under),
    )


CountFigures = tuple[np.ndarray, float, agreement.BlandAltman, agreement.ThresholdCases | None]


def _count_figures(
    counts_of_experts: np.ndarray,
    reference_counts: np.ndarray,
    seen_of: list[np.ndarray],
    threshold: float | None,
) -> list[CountFigures]:
    """Per expert (row of counts_of_experts): its counts on the images it saw, their ICC(A,1) and Bland–Altman
    against the reference's, the threshold cases; computed at once for the experts that saw as many images
    (with the same sums per expert as one at a time)."""
    figures: list[CountFigures | None] = [None] * len(seen_of)
    by_size: dict[int, list[int]] = {}
    for row, seen in enumerate(seen_of):
        by_size.setdefault(len(seen), []).append(row)
    for size, members in by_size.items():
        chosen = np.array(members, dtype=np.int64)
        seen = np.stack([seen_of[row] for row in members]).reshape(len(members), size)
        mine = counts_of_experts[chosen[:, None], seen]
        theirs = reference_counts[seen]
        iccs = agreement.icc_absolute_of_pairs(mine, theirs).tolist()
        limits = agreement.bland_altman_of_rows(mine, theirs)
        splits = (
            agreement.threshold_cases_of_rows(mine, theirs, threshold)
            if threshold is not None
            else [None] * len(members)
        )
        for index, row in enumerate(members):
            figures[row] = (mine[index], iccs[index], limits[index], splits[index])
    return [figure for figure in figures if figure is not None]


def _joined(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0)


def _limits(result: agreement.BlandAltman) -> BlandAltmanOut:
    return BlandAltmanOut(
        bias=_number(result.bias), lower=_number(result.lower), upper=_number(result.upper), pairs=result.n
    )


class LabelCodes:
    """Label ids → codes 0..K−1 in the task's label order (grade order for grading tasks)."""

    def __init__(self, label_ids: list[int]) -> None:
        self.count = len(label_ids)
        self._sorted = np.array(sorted(label_ids), dtype=np.int64)
        self._codes = np.array([label_ids.index(label) for label in self._sorted.tolist()], dtype=np.int64)

    def __call__(self, labels: np.ndarray) -> np.ndarray:
        codes: np.ndarray = self._codes[m.sorted_positions(self._sorted, labels)]
        return codes


def _label_codes(labels: dict[int, str]) -> LabelCodes:
    return LabelCodes(list(labels))


def _label_kappas(
    batch: Batch, reference: Boxes, codes: LabelCodes, iou: float, weights: Any
) -> list[tuple[float, int]]:
    """Each expert's kappa of its label vs the reference label on the cells matched regardless of label,
    with the number of matched cells; one greedy match for every expert of the batch."""
    if batch.reference is reference:  # the overlaps the concordance found already
        references = batch.reference_overlaps.references
        match = batch.reference_overlaps.greedy(iou, any_class=True)
    else:
        references = batch.repeat(reference)
        match = m.greedy_match(
            batch.objects.boxes,
            np.zeros(len(batch.objects), dtype=np.int64),
            batch.objects.images,
            references.boxes,
            np.zeros(len(references), dtype=np.int64),
            references.images,
            iou=iou,
        )
    hits = np.flatnonzero(match.true_positive)
    mine = codes(batch.objects.labels[hits])
    theirs = codes(references.labels[match.best_reference[hits]])
    size = codes.count**2
    cells = batch.owners[hits] * size + mine * codes.count + theirs
    tables = np.bincount(cells, minlength=len(batch.names) * size).reshape(
        len(batch.names), codes.count, codes.count
    )
    kappas = agreement.cohen_kappa_of_tables(tables, weights).tolist()
    counts = tables.reshape(len(batch.names), -1).sum(axis=1).tolist()
    return list(zip(kappas, counts, strict=True))


def _images_seen(work: ExpertWork) -> np.ndarray:
    seen = list(dict.fromkeys(work.images_seen)) or list(dict.fromkeys(work.objects.images.tolist()))
    seen += [image for image in work.visit_seconds if image not in set(seen)]
    return np.array(seen, dtype=np.int64)


def _counts_by_image(objects: Boxes, labels: list[int], span: int) -> np.ndarray:
    keep = m.contained_ints(objects.labels, np.array(labels, dtype=np.int64))
    return np.bincount(objects.images[keep], minlength=span).astype(np.float64)


def _icc_among(seen_counts: dict[str, dict[int, float]]) -> float:
    """ICC(A,1) among experts on the images every one of them saw."""
    if len(seen_counts) < 2:
        return math.nan
    common = set.intersection(*(set(counts) for counts in seen_counts.values()))
    images = sorted(common)
    table = np.array([[counts[image] for counts in seen_counts.values()] for image in images])
    return agreement.icc_absolute(table.reshape(len(images), len(seen_counts)))


def _cluster_agreement(
    task: TaskData, batch: Batch, codes: LabelCodes, radius: float
) -> tuple[float, float, int]:
    """(Fleiss' kappa, Krippendorff's alpha, clusters) of the mode's experts (the batch's, `Batch.of`) on
    centre-radius clusters."""
    (found,) = _cluster_agreements(task, batch, codes, radius)
    return found


def _cluster_agreements(
    task: TaskData, batch: Batch, codes: LabelCodes, radius: float
) -> list[tuple[float, float, int]]:
    """`_cluster_agreement` of each block of the batch's experts (a mode, `Batch.of_modes`): each block's
    objects clustered among themselves, the clusters of every block numbered and counted at once."""
    found = dict.fromkeys(batch.blocks, (math.nan, math.nan, 0))
    chosen = [
        (block, batch.block_objects(block[1], block[2])) for block in batch.blocks if block[2] - block[1] >= 2
    ]
    chosen = [(block, part) for block, part in chosen if part.stop > part.start]
    if not chosen:
        return list(found.values())
    names = batch.names
    index = np.concatenate([np.arange(part.start, part.stop, dtype=np.int64) for _, part in chosen])
    cluster, sizes = _block_clusters(batch, [part for _, part in chosen], radius, task.images)
    n_clusters = int(cluster.max()) + 1
    # each expert's first object in a cluster gives its label (objects are in detection order)
    first = m.first_indices(cluster * len(names) + batch.owners[index], n_clusters * len(names))
    labels = codes(batch.objects.labels[index[first]])
    value_counts = np.bincount(
        cluster[first] * codes.count + labels, minlength=n_clusters * codes.count
    ).reshape(n_clusters, codes.count)
    level: Literal["ordinal", "nominal"] = "ordinal" if task.kind == TaskKind.grade else "nominal"
    low = 0
    for (block, _), size in zip(chosen, sizes, strict=True):
        counts = value_counts[low : low + size]
        not_marked = (block[2] - block[1]) - counts.sum(axis=1, keepdims=True)
        fleiss = agreement.fleiss_kappa(np.hstack([counts, not_marked]))
        found[block] = (fleiss, agreement.krippendorff_alpha(counts, level), size)
        low += size
    return list(found.values())


def _block_clusters(
    batch: Batch, parts: list[slice], radius: float, known_images: np.ndarray
) -> tuple[np.ndarray, list[int]]:
    """`_clusters` of each part's objects (its own image ids, `_cluster_pairs` of the part alone), numbered on
    from the clusters of the parts before it; and how many clusters each part holds. The parts follow each
    other in array order, so the leader rounds of all of them run at once on their pairs end to end."""
    earlier, later, offset = [], [], 0
    for part in parts:
        images = batch.objects.images[part] % batch.span  # the batch shifts image ids per expert
        first, second = _cluster_pairs(m.box_centres(batch.objects.boxes[part]), images, radius, known_images)
        earlier.append(first + offset)
        later.append(second + offset)
        offset += part.stop - part.start
    cluster = _leader_clusters(offset, np.concatenate(earlier), np.concatenate(later))
    starts = np.cumsum([0, *(part.stop - part.start for part in parts[:-1])])
    so_far = (
        np.maximum.reduceat(cluster, starts) + 1
    )  # clusters up to each part's end (every part holds some)
    return cluster, np.diff(np.r_[0, so_far]).tolist()


def _clusters(
    centres: np.ndarray, images: np.ndarray, radius: float, known_images: np.ndarray | None = None
) -> np.ndarray:
    """Cluster id (N,) of each object by the leader rule of `metrics.consensus`, per image, without a Python
    loop over objects (the same partition; pinned by a test). Ids are 0, 1, … in the order of the clusters'
    first objects. known_images: every image id of `images`, ascending, when the caller has them (the task's).

    In array order a point is a seed unless an earlier seed lies within `radius` (same image); a point
    that is not a seed joins the earliest seed within `radius`. Decided in rounds over the neighbour pairs:
    a point whose earlier neighbours are all decided non-seeds is a seed, a point with an earlier seed
    neighbour is not; each round decides at least the earliest undecided point.
    """
    return _leader_clusters(len(images), *_cluster_pairs(centres, images, radius, known_images))


def _cluster_pairs(
    centres: np.ndarray, images: np.ndarray, radius: float, known_images: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (earlier, later) of points of one image within `radius` of each other, earlier < later."""
    if len(images) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    # images side by side along x, far enough apart that no pair crosses from one to another
    image_rank = _dense_ranks(images, known_images)
    width = float(np.ptp(centres[:, 0])) + 4.0 * radius + 1.0
    placed = np.column_stack([centres[:, 0] - centres[:, 0].min() + image_rank * width, centres[:, 1]])
    swept = _swept_pairs(placed, radius, SWEEP_CANDIDATES_PER_POINT * len(placed))
    return swept if swept is not None else _tree_pairs(placed, radius)


def _tree_pairs(placed: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """`_cluster_pairs` of placed points (N, 2) by scipy's k-d tree."""
    from scipy.spatial import cKDTree

    # an unbalanced, uncompacted tree builds faster and finds the same pairs
    tree = cKDTree(placed, balanced_tree=False, compact_nodes=False)
    pairs = tree.query_pairs(r=radius, output_type="ndarray").astype(np.int64, copy=False).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]  # scipy gives each pair as (i, j) with i < j


# More candidates per point than this (points packed far closer than the radius), and the k-d tree finds
# the pairs faster than the sweep.
SWEEP_CANDIDATES_PER_POINT = 12


def _swept_pairs(placed: np.ndarray, radius: float, limit: int) -> tuple[np.ndarray, np.ndarray] | None:
    """`_cluster_pairs` of placed points (N, 2) by a sweep along x in bands of y, or None when the sweep would
    test more than `limit` candidate pairs.

    Bands a pixel taller than the radius: a pair within the radius lies in one band or in two adjacent ones.
    The points sorted by (band, x); a point's candidates are the points after it in its band with x at most
    `radius` further, and those of the next band with x within `radius` either side: each pair of nearby
    points is a candidate once, and a window of a band holds a fraction of what a sweep over the whole
    height of an image would. Kept when dx² + dy² ≤ radius² on the placed coordinates, the test and the
    sums of the k-d tree's query (scipy's `query_pairs`, p = 2), so the same pairs come out (in another
    order). Each pair is (earlier, later).
    """
    if len(placed) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    # a pixel past radius: the windows hold every point the exact test below may keep, whatever the rounding
    reach = radius + 1.0
    x = placed[:, 0] - placed[:, 0].min()
    band = np.floor((placed[:, 1] - placed[:, 1].min()) / reach)
    row = float(x.max()) + 2.0 * reach + 1.0  # one band's positions, windows included: bands never mix
    position = band * row + x
    order = np.argsort(position)  # any order of equal positions finds the same pairs: not stable, faster
    ordered = position[order]
    points = np.arange(len(ordered), dtype=np.int64)
    low = np.concatenate([points + 1, np.searchsorted(ordered, ordered + (row - reach), side="left")])
    high = np.concatenate(
        [
            np.searchsorted(ordered, ordered + reach, side="right"),
            np.searchsorted(ordered, ordered + (row + reach), side="right"),
        ]
    )
    counts = np.maximum(high - low, 0)
    total = int(counts.sum())
    if total > limit:
        return None
    first = np.repeat(np.concatenate([points, points]), counts)
    # candidate k (of all windows' candidates, from 0) of window w is point k + low[w] − (the candidates of
    # the windows before w)
    shift = np.repeat(low - (np.cumsum(counts) - counts), counts)
    second = np.arange(total, dtype=np.int64) + shift
    one, other = order.take(first), order.take(second)
    xs, ys = placed[:, 0], placed[:, 1]
    dx, dy = xs.take(other) - xs.take(one), ys.take(other) - ys.take(one)
    near = np.flatnonzero(dx * dx + dy * dy <= radius * radius)
    one, other = one.take(near), other.take(near)
    return np.minimum(one, other), np.maximum(one, other)


def _leader_clusters(n: int, earlier: np.ndarray, later: np.ndarray) -> np.ndarray:
    """`_clusters` of n points from their neighbour pairs (earlier < later), in leader rounds."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    UNDECIDED, SEED, MEMBER = 0, 1, 2
    # the first round: a point without an earlier neighbour is a seed
    state = np.full(n, SEED, dtype=np.int8)
    state[later] = UNDECIDED
    open_earlier, open_later = earlier, later
    while len(open_later):
        # a point with an earlier seed neighbour is a member
        state[open_later[state[open_earlier] == SEED]] = MEMBER
        # only the pairs of points still undecided decide anything more (after the second round, a few)
        still_open = state[open_later] == UNDECIDED
        open_earlier, open_later = open_earlier[still_open], open_later[still_open]
        # a point whose earlier neighbours are all members is a seed
        blocked = np.zeros(n, dtype=np.bool_)
        blocked[open_later[state[open_earlier] != MEMBER]] = True
        state[(state == UNDECIDED) & ~blocked] = SEED
    seeds = np.flatnonzero(state == SEED)
    cluster = np.full(n, n, dtype=np.int64)
    cluster[seeds] = seeds
    from_seed = state[earlier] == SEED
    np.minimum.at(cluster, later[from_seed], earlier[from_seed])
    # every point's cluster is a seed's index: number the seeds 0, 1, … in array order
    seed_rank = np.cumsum(state == SEED, dtype=np.int64) - 1
    numbered: np.ndarray = seed_rank[cluster]
    return numbered


def _dense_ranks(values: np.ndarray, known: np.ndarray | None) -> np.ndarray:
    """Rank of each value among the distinct values (`np.unique`'s inverse); known: ascending values that
    hold every one of them spare the sort (else it sorts)."""
    where = m.sorted_positions(known, values) if known is not None and len(known) else None
    if where is None or known is None or not np.array_equal(known[np.minimum(where, len(known) - 1)], values):
        ranks: np.ndarray = np.unique(values, return_inverse=True)[1].reshape(len(values))
        return ranks
    present = np.zeros(len(known), dtype=np.int64)
    present[where] = 1
    ranks = (np.cumsum(present) - 1)[where]
    return ranks


# ---------------------------------------------------------------- bootstrap


def uncertainty_of_task(rows: Any, task_name: str, params: MetricsParams) -> UncertaintyOut | None:
    """Bootstrap intervals of one task of a study's rows (`repository.StudyRows`), without computing the
    other figures; None when the study has no task of that name."""
    from app.evaluation import service  # service imports this module

    for task in service.build_tasks(rows).values():
        if task.name == task_name:
            return task_uncertainty(task, params, service._natural_key, service.seconds_by_image)
    return None


def task_uncertainty(
    task: TaskData, params: MetricsParams, order: Callable[[str], Any], seconds_by_image: Callable[..., Any]
) -> UncertaintyOut:
    """Bootstrap intervals of a task (cached: the same task content and parameters are computed once)."""
    key = _cache_key(task, params)
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    result = _uncertainty(task, params, order, seconds_by_image)
    _CACHE[key] = result
    while len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return result


def _cache_key(task: TaskData, params: MetricsParams) -> str:
    digest = hashlib.sha256()
    digest.update(repr((task.name, task.kind.value, sorted(task.labels.items()), params)).encode())
    for boxes in (task.reference, *(part for _, parts in sorted(task.register.items()) for _, part in parts)):
        _update(digest, boxes)
    for mode, experts in sorted(task.work.items()):
        for name, work in sorted(experts.items()):
            digest.update(f"{mode}/{name}".encode())
            _update(digest, work.objects)
            digest.update(np.ascontiguousarray(work.edited_seconds).tobytes())
            digest.update(repr((work.images_seen, sorted(work.visit_seconds.items()))).encode())
    digest.update(np.ascontiguousarray(task.images).tobytes())
    return digest.hexdigest()


def _update(digest: Any, boxes: Boxes) -> None:
    for array in (boxes.boxes, boxes.labels, boxes.images):
        digest.update(np.ascontiguousarray(array).tobytes())


def _uncertainty(
    task: TaskData, params: MetricsParams, order: Callable[[str], Any], seconds_by_image: Callable[..., Any]
) -> UncertaintyOut:
    universe = np.asarray(task.images, dtype=np.int64)
    modes = {mode: experts for mode, experts in task.work.items() if experts}
    samples: dict[str, dict[str, dict[str, bs.ExpertSample]]] = {}  # measure → mode → expert → sample
    for mode, experts in modes.items():
        names = _names(experts, order)
        for measure, by_expert in _samples(task, experts, names, universe, params, seconds_by_image).items():
            samples.setdefault(measure, {})[mode] = by_expert
    measures = {
        measure: _intervals(task.name, measure, by_mode, params) for measure, by_mode in samples.items()
    }
    return UncertaintyOut(replicates=params.bootstrap, seed=params.seed, level=bs.LEVEL, measures=measures)


def _intervals(
    task_name: str, measure: str, by_mode: dict[str, dict[str, bs.ExpertSample]], params: MetricsParams
) -> dict[str, IntervalOut]:
    """Per mode, and aided − unaided over the experts in both modes (one paired run when every expert did both)."""
    out: dict[str, IntervalOut] = {}
    paired = [name for name in by_mode.get("unaided", {}) if name in by_mode.get("aided", {})]
    alone = [mode for mode, by_expert in by_mode.items() if not paired or set(by_expert) != set(paired)]
    for mode in alone:
        experts = list(by_mode[mode].values())
        rng = bs.generator(params.seed, task_name, measure, mode)
        values = bs.replicate_ratios([experts], params.bootstrap, rng)[:, 0]
        out[mode] = _interval(bs.percentile_interval(_estimate(experts), values))
    if paired:
        groups = [[by_mode[mode][name] for name in paired] for mode in ("unaided", "aided")]
        rng = bs.generator(params.seed, task_name, measure, DIFFERENCE)
        values = bs.replicate_ratios(groups, params.bootstrap, rng)
        estimates = [_estimate(group) for group in groups]
        for column, mode in enumerate(("unaided", "aided")):
            if mode not in out:
                out[mode] = _interval(bs.percentile_interval(estimates[column], values[:, column]))
        difference = estimates[1] - estimates[0]
        out[DIFFERENCE] = _interval(bs.percentile_interval(difference, values[:, 1] - values[:, 0]))
    return {key: out[key] for key in (*MODE_ORDER, DIFFERENCE) if key in out}


MODE_ORDER = ("unaided", "aided")
CAUGHT_RATE = "caught_rate"


def _estimate(experts: list[bs.ExpertSample]) -> float:
    """The statistic on the data as observed: every expert once, every image once."""
    numerator = denominator = 0.0
    for sample in experts:
        top, bottom = sample.values(np.ones((1, sample.universe), dtype=np.int64))
        numerator, denominator = numerator + float(top[0]), denominator + float(bottom[0])
    return numerator / denominator if denominator > 0 else math.nan


def _interval(interval: bs.Interval) -> IntervalOut:
    return IntervalOut(
        estimate=_number(interval.estimate), low=_number(interval.low), high=_number(interval.high)
    )


def _samples(
    task: TaskData,
    experts: dict[str, ExpertWork],
    names: list[str],
    universe: np.ndarray,
    params: MetricsParams,
    seconds_by_image: Callable[..., Any],
) -> dict[str, dict[str, bs.ExpertSample]]:
    """measure → expert → sample, for one mode: concordance, seconds per image, register rate per kind."""
    classes = np.union1d(
        task.reference.labels, np.concatenate([experts[name].objects.labels for name in names])
    )
    reference_counts = _image_class_counts(task.reference, universe, classes)
    result: dict[str, dict[str, bs.ExpertSample]] = {"concordance": {}, "seconds_per_image": {}}
    for kind, by_expert in _caught_samples(task, experts, names, universe, params).items():
        result[f"{CAUGHT_RATE}.{kind}"] = by_expert
    for name in names:
        objects = experts[name].objects
        match = m.greedy_match(*_fields(objects), *_fields(task.reference), iou=params.iou)
        result["concordance"][name] = bs.concordance_sample(
            match.true_positive,
            np.searchsorted(classes, objects.labels),
            np.searchsorted(universe, objects.images),
            reference_counts,
        )
        result["seconds_per_image"][name] = bs.mean_sample(seconds_by_image(experts[name]))
    return result


def _caught_samples(
    task: TaskData,
    experts: dict[str, ExpertWork],
    names: list[str],
    universe: np.ndarray,
    params: MetricsParams,
) -> dict[str, dict[str, bs.ExpertSample]]:
    """kind → expert → sample of the pooled caught rate: the entries each expert caught by the per-kind rules
    of `service.caught_entries` (duplicates judged on the pair), the same flags as the point figures."""
    from app.evaluation import service  # service imports this module

    batch = service.Batch.of(experts, task.span)
    rows = {name: row for row, name in enumerate(batch.names)}
    result: dict[str, dict[str, bs.ExpertSample]] = {}
    for kind, parts in task.register.items():
        entries = _joined_boxes([part for _, part in parts])
        caught = service.caught_entries(task, kind, entries, batch, params.register_iou)
        entry_images = np.searchsorted(universe, entries.images)
        result[kind] = {
            name: bs.rate_sample(caught[rows[name]].astype(np.float64), entry_images, len(universe))
            for name in names
        }
    return result


def _fields(boxes: Boxes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return boxes.boxes, boxes.labels, boxes.images


def _joined_boxes(parts: list[Boxes]) -> Boxes:
    first = parts[0]
    return type(first)(
        np.concatenate([part.boxes for part in parts]).reshape(-1, 4),
        np.concatenate([part.labels for part in parts]),
        np.concatenate([part.images for part in parts]),
    )


def _image_class_counts(reference: Boxes, universe: np.ndarray, classes: np.ndarray) -> np.ndarray:
    counts = np.zeros((len(universe), len(classes)), dtype=np.int64)
    np.add.at(
        counts, (np.searchsorted(universe, reference.images), np.searchsorted(classes, reference.labels)), 1
    )
    return counts
