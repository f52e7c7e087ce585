"""Exports of a task's objects (EXACT text, COCO JSON, CSV) and of metrics tables (CSV).

The EXACT export of one expert and mode is re-importable with `concord import-exact --role expert`: images
come in the order the expert first saw them, an image seen without objects as a `not in image` line, and
timestamps are the stored naive local times. The annotation table keeps neither EXACT's uuid nor its editor
names, so the export writes the expert as both editors and a uuid derived from the annotation id.

Objects of a simulated study (`concord simulate`) say so in every format: EXACT text starts with the comment
line `exact_format.SIMULATED_HEADER` (the importer skips it), COCO carries `info.simulated`, Concord's JSON a
top-level `simulated`, and every CSV a `simulated` column.
"""

from __future__ import annotations

import csv
import io
import json
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Invalid, NotFound
from app.evaluation import repository, service
from app.evaluation.exact_format import NOT_IN_IMAGE, SIMULATED_HEADER, ExactObject, format_exact
from app.evaluation.schemas import CountOut, PooledOut, StudyMetricsOut
from app.models import Image, Study, Task
from app.offload import Compute

SIMULATED_STUDY = "simulated study: run by simulated experts (concord simulate), not by people"
UUID_NAMESPACE = uuid.UUID("6f1d4c3e-2b0a-4e8f-9a57-0c5e1d2b3a49")
CSV_FIELDS = (
    "image",
    "label",
    "x1",
    "y1",
    "x2",
    "y2",
    "expert",
    "mode",
    "deleted",
    "created_at",
    "updated_at",
    "simulated",
)


@dataclass(frozen=True)
class ExportObject:
    image: str
    image_width: int
    image_height: int
    label: str
    x1: float
    y1: float
    x2: float
    y2: float
    expert: str
    mode: str
    deleted: bool
    created_at: datetime | None
    updated_at: datetime | None
    key: str
    votes: int | None = None
    weight: float | None = None
    simulated: bool = False  # the object's study was run by simulated experts


async def is_simulated(session: AsyncSession, task: Task) -> bool:
    """Whether the task's study was run by simulated experts (`concord simulate`)."""
    study = await session.get(Study, task.study_id)
    return study is not None and study.simulated


def any_simulated(objects: Sequence[ExportObject]) -> bool:
    return any(obj.simulated for obj in objects)


def exact_marked(text: str, simulated: bool) -> str:
    """EXACT text with the simulated-study comment line first when the study was simulated."""
    return SIMULATED_HEADER + "\n" + text if simulated else text


def naive(at: datetime) -> datetime:
    """The stored naive local time: Concord keeps imported timestamps as if they were UTC."""
    return at.replace(tzinfo=None)


async def expert_objects(
    session: AsyncSession, task: Task, expert: str | None, mode: str | None
) -> list[ExportObject]:
    expert_id = await _expert_id(session, expert)
    rows = await repository.annotations_for_export(session, task.id, expert_id, mode)
    simulated = await is_simulated(session, task)
    return [
        ExportObject(
            image=image.name,
            image_width=image.width,
            image_height=image.height,
            label=label.name,
            x1=annotation.x1,
            y1=annotation.y1,
            x2=annotation.x2,
            y2=annotation.y2,
            expert=name,
            mode=annotation.mode,
            deleted=annotation.deleted,
            created_at=naive(annotation.created_at),
            updated_at=naive(annotation.updated_at),
            key=str(uuid.uuid5(UUID_NAMESPACE, f"annotation-{annotation.id}")),
            simulated=simulated,
        )
        for annotation, image, label, name, _, _ in rows
    ]


async def _expert_id(session: AsyncSession, expert: str | None) -> int | None:
    if expert is None:
        return None
    users = await repository.users_by_name(session, [expert])
    if expert not in users:
        raise NotFound(f"no expert {expert!r}")
    return users[expert].id


async def ground_truth_objects(session: AsyncSession, task: Task) -> list[ExportObject]:
    rows = await repository.ground_truth_for_export(session, task.id)
    simulated = await is_simulated(session, task)
    return [
        ExportObject(
            image=image.name,
            image_width=image.width,
            image_height=image.height,
            label=label.name,
            x1=obj.x1,
            y1=obj.y1,
            x2=obj.x2,
            y2=obj.y2,
            expert="ground truth",
            mode="",
            deleted=False,
            created_at=None,
            updated_at=None,
            key=str(uuid.uuid5(UUID_NAMESPACE, f"ground-truth-{obj.id}")),
            simulated=simulated,
        )
        for obj, image, label in rows
    ]


async def expert_exact(session: AsyncSession, task: Task, expert: str | None, mode: str | None) -> str:
    """One expert's objects in one mode as EXACT text, seen images without objects included."""
    if expert is None or mode is None:
        raise Invalid("an EXACT export holds one expert's work in one mode: give expert and mode")
    objects = await expert_objects(session, task, expert, mode)
    expert_id = await _expert_id(session, expert)
    assert expert_id is not None
    seen = [image.name for image in await repository.views_for_export(session, task.id, expert_id, mode)]
    return exact_marked(_exact_text(objects, seen), await is_simulated(session, task))


def _exact_text(objects: Sequence[ExportObject], seen: Sequence[str]) -> str:
    """Images in viewing order (seen images first), each as its objects or one `not in image` line."""
    by_image: dict[str, list[ExportObject]] = {}
    for obj in objects:
        by_image.setdefault(obj.image, []).append(obj)
    parts = []
    for name in dict.fromkeys([*seen, *by_image]):
        if name in by_image:
            parts.append(format_exact(_exact_object(obj) for obj in by_image[name]))
        else:
            parts.append(f"{name}||{NOT_IN_IMAGE}\n")
    return "".join(parts)


def ground_truth_exact(objects: Sequence[ExportObject], simulated: bool | None = None) -> str:
    simulated = any_simulated(objects) if simulated is None else simulated
    return exact_marked(format_exact(_exact_object(obj) for obj in objects), simulated)


def _exact_object(obj: ExportObject) -> ExactObject:
    at = obj.updated_at or datetime(1970, 1, 1)
    return ExactObject(
        image=obj.image,
        label=obj.label,
        x1=round(obj.x1),
        y1=round(obj.y1),
        x2=round(obj.x2),
        y2=round(obj.y2),
        first_editor=obj.expert,
        created=obj.created_at or at,
        last_editor=obj.expert,
        last_edited=at,
        uuid=obj.key,
        deleted=obj.deleted,
        width=obj.image_width,
        height=obj.image_height,
    )


def coco(objects: Sequence[ExportObject], simulated: bool | None = None) -> dict[str, Any]:
    """COCO detection JSON; bbox = [x1, y1, x2 − x1, y2 − y1] in pixels; extra keys expert, mode, deleted;
    `info.simulated` says whether the study was run by simulated experts."""
    images = {name: index + 1 for index, name in enumerate(dict.fromkeys(obj.image for obj in objects))}
    sizes = {obj.image: (obj.image_width, obj.image_height) for obj in objects}
    labels = {name: index + 1 for index, name in enumerate(dict.fromkeys(obj.label for obj in objects))}
    return {
        "info": _coco_info(any_simulated(objects) if simulated is None else simulated),
        "images": [
            {"id": index, "file_name": name, "width": sizes[name][0], "height": sizes[name][1]}
            for name, index in images.items()
        ],
        "categories": [{"id": index, "name": name} for name, index in labels.items()],
        "annotations": [
            {
                "id": number,
                "image_id": images[obj.image],
                "category_id": labels[obj.label],
                "bbox": [obj.x1, obj.y1, obj.x2 - obj.x1, obj.y2 - obj.y1],
                "area": (obj.x2 - obj.x1) * (obj.y2 - obj.y1),
                "iscrowd": 0,
                "expert": obj.expert,
                "mode": obj.mode,
                "deleted": obj.deleted,
                **_votes_fields(obj),
            }
            for number, obj in enumerate(objects, start=1)
        ],
    }


def _coco_info(simulated: bool) -> dict[str, Any]:
    if simulated:
        return {"description": f"Concord export of a {SIMULATED_STUDY}", "simulated": True}
    return {"description": "Concord export", "simulated": False}


def _votes_fields(obj: ExportObject) -> dict[str, Any]:
    return {} if obj.votes is None else {"votes": obj.votes, "weight": obj.weight}


def coco_text(objects: Sequence[ExportObject], simulated: bool | None = None) -> str:
    return json.dumps(coco(objects, simulated), indent=1)


def objects_json(objects: Sequence[ExportObject], simulated: bool | None = None) -> str:
    """Concord's own JSON: one record per object with every field, in evaluation order."""
    records = [
        {
            **{field: getattr(obj, field) for field in ("image", "label", "x1", "y1", "x2", "y2")},
            **{field: getattr(obj, field) for field in ("expert", "mode", "deleted")},
            "image_width": obj.image_width,
            "image_height": obj.image_height,
            "created_at": obj.created_at.isoformat() if obj.created_at else None,
            "updated_at": obj.updated_at.isoformat() if obj.updated_at else None,
        }
        for obj in objects
    ]
    simulated = any_simulated(objects) if simulated is None else simulated
    return json.dumps({"simulated": simulated, "objects": records}, indent=1)


def render_objects(objects: Sequence[ExportObject], format: str, simulated: bool | None = None) -> str:
    """COCO, JSON or CSV text of the objects (EXACT text needs the expert's image order: see callers).
    `simulated` defaults to whether any object comes from a simulated study."""
    if format == "coco":
        return coco_text(objects, simulated)
    if format == "json":
        return objects_json(objects, simulated)
    return objects_csv(objects)


def objects_csv(objects: Sequence[ExportObject]) -> str:
    return rows_csv(
        CSV_FIELDS,
        (
            (
                obj.image,
                obj.label,
                obj.x1,
                obj.y1,
                obj.x2,
                obj.y2,
                obj.expert,
                obj.mode,
                obj.deleted,
                obj.created_at.isoformat(sep=" ") if obj.created_at else "",
                obj.updated_at.isoformat(sep=" ") if obj.updated_at else "",
                obj.simulated,
            )
            for obj in objects
        ),
    )


# ---------------------------------------------------------------- consensus objects

CONSENSUS_EXPERT = "consensus"
CONSENSUS_CSV_FIELDS = ("image", "label", "x1", "y1", "x2", "y2", "votes", "weight", "simulated")


async def consensus_export(
    session: AsyncSession,
    task: Task,
    mode: str,
    params: service.MetricsParams,
    compute: Compute,
    format: str,
) -> str:
    """A task's consensus objects of one mode with votes and VotesLoss weights, as CSV, COCO, JSON or EXACT.

    CSV and COCO carry `votes` and `weight` columns / keys; EXACT has no field for them, so both editors read
    `consensus` and the uuid field holds `votes=V;weight=W` (re-importable as ground truth).
    """
    found = await service.task_consensus(session, task.study_id, task.id, mode, params, compute)
    images, labels = await repository.images_and_labels_of_task(session, task.id)
    simulated = await is_simulated(session, task)
    objects = [_consensus_object(item, images[item.image_id], labels[item.label_id], mode) for item in found]
    if format == "csv":
        return rows_csv(
            CONSENSUS_CSV_FIELDS,
            (
                (obj.image, obj.label, obj.x1, obj.y1, obj.x2, obj.y2, obj.votes, obj.weight, simulated)
                for obj in objects
            ),
        )
    if format == "exact":
        return exact_marked(format_exact(_exact_object(obj) for obj in objects), simulated)
    if format == "json":
        records = [_consensus_record(obj) for obj in objects]
        return json.dumps({"simulated": simulated, "objects": records}, indent=1)
    return coco_text(objects, simulated)


def _consensus_object(item: service.ConsensusObject, image: Image, label: str, mode: str) -> ExportObject:
    x1, y1, x2, y2 = item.box
    return ExportObject(
        image=image.name,
        image_width=image.width,
        image_height=image.height,
        label=label,
        x1=x1,
        y1=y1,
        x2=x2,
        y2=y2,
        expert=CONSENSUS_EXPERT,
        mode=mode,
        deleted=False,
        created_at=None,
        updated_at=None,
        key=f"votes={item.votes};weight={item.weight:.6g}",
        votes=item.votes,
        weight=item.weight,
    )


def _consensus_record(obj: ExportObject) -> dict[str, Any]:
    return {
        **{field: getattr(obj, field) for field in ("image", "label", "x1", "y1", "x2", "y2", "mode")},
        "votes": obj.votes,
        "weight": obj.weight,
    }


# A spreadsheet reads a cell that starts with one of these as a formula (OWASP "CSV injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def csv_cell(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula gets a leading apostrophe; numbers (also
    negative ones, and text that is exactly a number) stay as they are. `csv_cell("=HYPERLINK(…)")` →
    `"'=HYPERLINK(…)"`, `csv_cell(-3.5)` → `-3.5`, `csv_cell("-3.5")` → `"-3.5"`."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES) and not PLAIN_NUMBER.fullmatch(value):
        return "'" + value
    return value


def rows_csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([csv_cell(name) for name in header])
    writer.writerows([csv_cell(value) for value in row] for row in rows)
    return buffer.getvalue()


# ---------------------------------------------------------------- metrics tables


METRICS_TABLES = ("experts", "summary", "injected", "statistics")


def metrics_csv(metrics: StudyMetricsOut, table: str) -> str:
    """One metrics table as CSV, with a last column `simulated` (the study was run by simulated experts)."""
    header, rows = metrics_table(metrics, table)
    return rows_csv([*header, "simulated"], ([*row, metrics.simulated] for row in rows))


def metrics_table(metrics: StudyMetricsOut, table: str) -> tuple[list[str], list[list[Any]]]:
    """One table behind the dashboard: header and rows."""
    if table == "experts":
        return _experts_table(metrics)
    if table == "summary":
        return _summary_table(metrics)
    if table == "injected":
        return _injected_table(metrics)
    if table == "statistics":
        return _statistics_table(metrics)
    raise NotFound(f"no metrics table {table!r}; tables: {', '.join(METRICS_TABLES)}")


def _experts_table(metrics: StudyMetricsOut) -> tuple[list[str], list[list[Any]]]:
    header = [
        "task",
        "mode",
        "expert",
        "objects",
        "seconds_per_image",
        "concordance",
        "vote_weighted_concordance",
    ]
    rows = [
        [
            task,
            mode,
            expert,
            result.objects,
            result.seconds_per_image,
            result.concordance,
            result.vote_weighted_concordance,
        ]
        for task, task_result in metrics.tasks.items()
        for mode, mode_result in task_result.modes.items()
        for expert, result in mode_result.experts.items()
    ]
    return header, rows


def _summary_table(metrics: StudyMetricsOut) -> tuple[list[str], list[list[Any]]]:
    header = ["task", "mode", "measure", "mean", "min", "max", "sd"]
    rows = []
    for task, task_result in metrics.tasks.items():
        for mode, mode_result in task_result.modes.items():
            for measure, value in (
                ("concordance", mode_result.summary.concordance),
                ("seconds_per_image", mode_result.summary.seconds_per_image),
            ):
                rows.append([task, mode, measure, value.mean, value.min, value.max, value.sd])
        rows.append(
            [task, "aided", "suggestions_concordance", task_result.suggestions.concordance, None, None, None]
        )
    return header, rows


def _injected_table(metrics: StudyMetricsOut) -> tuple[list[str], list[list[Any]]]:
    """caught / missed by the per-kind rules; matched (and the pooled rate = matched / total) are the
    published analysis's raw figures."""
    header = [
        "task",
        "kind",
        "group",
        "mode",
        "expert",
        "total",
        "caught",
        "missed",
        "caught_rate",
        "matched",
        "rate",
    ]
    rows: list[list[Any]] = []
    for task, task_result in metrics.tasks.items():
        for kind, groups in task_result.injected_errors.items():
            for group, modes in groups.items():
                for mode, result in modes.items():
                    rows += [
                        [
                            task,
                            kind,
                            group,
                            mode,
                            expert,
                            *_count_cells(count),
                            _rate(count.matched, count.total),
                        ]
                        for expert, count in result.experts.items()
                    ]
                    rows.append(
                        [task, kind, group, mode, "pooled", *_count_cells(result.pooled), result.pooled.rate]
                    )
    return header, rows


def _count_cells(count: CountOut | PooledOut) -> list[Any]:
    return [count.total, count.caught, count.missed, count.caught_rate, count.matched]


def _rate(part: int, total: int) -> float | None:
    return part / total if total else None


def _statistics_table(metrics: StudyMetricsOut) -> tuple[list[str], list[list[Any]]]:
    header = [
        "task",
        "measure",
        "anova_F",
        "anova_df",
        "anova_p",
        "paired_t",
        "paired_df",
        "paired_p",
        "note",
    ]
    rows = [
        [
            task,
            measure,
            tests.anova_F,
            "/".join(str(df) for df in tests.anova_df),
            tests.anova_p,
            tests.paired_t,
            tests.paired_df,
            tests.paired_p,
            tests.note,
        ]
        for task, task_result in metrics.tasks.items()
        for measure, tests in task_result.statistics.items()
    ]
    return header, rows
