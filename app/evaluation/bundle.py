"""Study bundle: one zip that makes a study run on Concord reproducible by others.

`export_study` writes the study's own rows (`data/<table>.json`: design, images as metadata, ground truth,
suggestion sets with their injection protocols and seeds, the injected-error register, every expert's
objects, the full edit log, visits and views), and beside them what a reader opens directly: the design and
protocols as JSON, ground truth and each expert's final objects as EXACT and COCO, the edit log and visits
as CSV, the metrics as JSON and CSV, the plots as SVG, Concord's version and a README.

`import_study` reads `data/` back into another Concord in one transaction (new ids, same order, so the
evaluation gives the same numbers; nothing is written when anything is wrong). Users are matched by name
and created without a password when missing; password hashes, tokens and sessions never leave.
Idempotency keys of the edit log are exported but not imported: they only deduplicate a client's retries
on the server that answered them, and would collide with the keys of the same users there.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from sqlalchemy import ColumnElement, Table, insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, Invalid
from app.evaluation import exports, plots, repository
from app.evaluation.schemas import StudyMetricsOut
from app.evaluation.service import MetricsParams, study_metrics
from app.models import (
    Annotation,
    AnnotationEvent,
    Assignment,
    DetectorModel,
    GroundTruthObject,
    Image,
    ImageCompletion,
    ImageView,
    ImageVisit,
    InjectedError,
    Label,
    Study,
    Suggestion,
    SuggestionSet,
    Task,
    User,
)
from app.models.base import Base, UTCDateTime
from app.offload import Compute, in_thread

FORMAT = "concord-study-bundle"
FORMAT_VERSION = 1
MAX_UNCOMPRESSED_BYTES = 2 * 1024**3
USER_COLUMNS = ("id", "name", "role")
NOT_IMPORTED = {"annotation_event": ("idempotency_key",)}
INSERT_BATCH = 5000


def _table(model: type[Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


# parents before children, so that every foreign key of a row points at a row already imported
MODELS: tuple[type[Base], ...] = (
    Study,
    Task,
    Label,
    Image,
    GroundTruthObject,
    User,
    DetectorModel,
    SuggestionSet,
    Suggestion,
    InjectedError,
    Assignment,
    ImageCompletion,
    Annotation,
    AnnotationEvent,
    ImageVisit,
    ImageView,
)
TABLES = {_table(model).name: _table(model) for model in MODELS}


def version() -> str:
    try:
        return metadata.version("concord")
    except metadata.PackageNotFoundError:
        return "unknown"


# ---------------------------------------------------------------- export


def _study_filters(study_id: int) -> dict[str, ColumnElement[bool]]:
    tasks = select(Task.id).where(Task.study_id == study_id)
    images = select(Image.id).where(Image.task_id.in_(tasks))
    sets = select(SuggestionSet.id).where(SuggestionSet.task_id.in_(tasks))
    assignments = select(Assignment.id).where(Assignment.task_id.in_(tasks))
    people = (
        select(Assignment.expert_id)
        .where(Assignment.task_id.in_(tasks))
        .union(
            select(Assignment.washout_override_by).where(Assignment.task_id.in_(tasks)),
            select(Annotation.expert_id).where(Annotation.image_id.in_(images)),
            select(AnnotationEvent.expert_id).where(AnnotationEvent.image_id.in_(images)),
            select(ImageVisit.expert_id).where(ImageVisit.image_id.in_(images)),
            select(ImageView.expert_id).where(ImageView.image_id.in_(images)),
        )
    )
    return {
        "study": Study.id == study_id,
        "task": Task.study_id == study_id,
        "label": Label.task_id.in_(tasks),
        "image": Image.task_id.in_(tasks),
        "ground_truth_object": GroundTruthObject.image_id.in_(images),
        "user_account": User.id.in_(people),
        "detector_model": DetectorModel.id.in_(
            select(SuggestionSet.detector_model_id).where(SuggestionSet.task_id.in_(tasks))
        ),
        "suggestion_set": SuggestionSet.task_id.in_(tasks),
        "suggestion": Suggestion.suggestion_set_id.in_(sets),
        "injected_error": InjectedError.suggestion_set_id.in_(sets),
        "assignment": Assignment.task_id.in_(tasks),
        "image_completion": ImageCompletion.assignment_id.in_(assignments),
        "annotation": Annotation.image_id.in_(images),
        "annotation_event": AnnotationEvent.image_id.in_(images),
        "image_visit": ImageVisit.image_id.in_(images),
        "image_view": ImageView.image_id.in_(images),
    }


@dataclass
class TableRows:
    columns: list[str]
    rows: list[list[Any]]


async def read_study_tables(session: AsyncSession, study_id: int) -> dict[str, TableRows]:
    """The study's rows of every bundled table, ordered by id, as JSON-ready values."""
    result = {}
    for name, where in _study_filters(study_id).items():
        table = TABLES[name]
        columns = [
            column for column in table.columns if name != "user_account" or column.name in USER_COLUMNS
        ]
        rows = (await session.execute(select(*columns).where(where).order_by(table.c.id))).all()
        result[name] = TableRows(
            [column.name for column in columns], [[_jsonable(v) for v in row] for row in rows]
        )
    return result


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


async def export_study(session: AsyncSession, study: Study, metrics: StudyMetricsOut) -> dict[str, bytes]:
    """Every file of the bundle by path (the caller zips them, off the event loop)."""
    tables = await read_study_tables(session, study.id)
    files: dict[str, bytes] = {
        f"data/{name}.json": _json({"columns": rows.columns, "rows": rows.rows})
        for name, rows in tables.items()
    }
    files["protocols.json"] = _json(_protocols(tables))
    files["metrics/metrics.json"] = _json(metrics.model_dump(mode="json"))
    for table in exports.METRICS_TABLES:
        files[f"metrics/{table}.csv"] = exports.metrics_csv(metrics, table).encode()
    for task in await repository.tasks_of_study(session, study.id):
        files.update(await _task_files(session, task, tables))
    files["log/edits.csv"] = _rows_csv(tables["annotation_event"], tables)
    files["log/visits.csv"] = _rows_csv(tables["image_visit"], tables)
    files["manifest.json"] = _json(
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "concord_version": version(),
            "study": study.name,
            "exported_at": datetime.now(UTC).isoformat(),
            "rows": {name: len(rows.rows) for name, rows in tables.items()},
            "metrics_parameters": {"iou": metrics.iou, "error_iou": metrics.error_iou},
            **simulation_record(study),
        }
    )
    files["design.json"] = _json({**simulation_record(study), **_design(tables)})
    files["README.md"] = (_simulated_banner(study) + _readme(study.name, tables)).encode()
    return files


def simulation_record(study: Study) -> dict[str, Any]:
    """`simulated` and, for a simulated study, how it was run (preset, seed, experts, time scale)."""
    if not study.simulated:
        return {"simulated": False}
    details = {key: value for key, value in (study.simulation or {}).items() if key != "expert_ids"}
    return {"simulated": True, "simulation": {**details, "time_scale": study.simulation_time_scale}}


def _simulated_banner(study: Study) -> str:
    if not study.simulated:
        return ""
    return (
        f"> **Simulated study.** {study.name} was run by simulated experts (`concord simulate`), not by people; "
        "`manifest.json` and `design.json` say how (`simulation`), and every export in it is marked.\n\n"
    )


async def _task_files(session: AsyncSession, task: Task, tables: dict[str, TableRows]) -> dict[str, bytes]:
    folder = f"tasks/{_safe(task.name)}"
    truth = await exports.ground_truth_objects(session, task)
    files = {
        f"{folder}/ground-truth.exact.txt": exports.ground_truth_exact(truth).encode(),
        f"{folder}/ground-truth.coco.json": exports.coco_text(truth).encode(),
    }
    users = {row[0]: row[1] for row in tables["user_account"].rows}
    assignments = tables["assignment"]
    column = assignments.columns.index
    pairs = sorted(
        {
            (users[row[column("expert_id")]], row[column("mode")])
            for row in assignments.rows
            if row[column("task_id")] == task.id
        }
        | _annotation_pairs(tables, task.id, users)
    )
    for expert, mode in pairs:
        if mode not in repository.EVALUATED_MODES:
            continue
        objects = await exports.expert_objects(session, task, expert, mode)
        name = f"{folder}/experts/{_safe(expert)}-{mode}"
        files[f"{name}.exact.txt"] = (await exports.expert_exact(session, task, expert, mode)).encode()
        files[f"{name}.coco.json"] = exports.coco_text(objects).encode()
    return files


def _annotation_pairs(
    tables: dict[str, TableRows], task_id: int, users: dict[int, str]
) -> set[tuple[str, str]]:
    images = tables["image"]
    of_task = {row[0] for row in images.rows if row[images.columns.index("task_id")] == task_id}
    annotations = tables["annotation"]
    column = annotations.columns.index
    return {
        (users[row[column("expert_id")]], row[column("mode")])
        for row in annotations.rows
        if row[column("image_id")] in of_task
    }


async def bundle_of_study(session: AsyncSession, study: Study, compute: Compute = in_thread) -> bytes:
    """The zip of a study: metrics at the published thresholds, files, plots (plots and zip off the loop)."""
    metrics = await study_metrics(session, study, MetricsParams(), compute)
    files = await export_study(session, study, metrics)
    return await compute(_with_plots_zipped, files, metrics)


def _with_plots_zipped(files: dict[str, bytes], metrics: StudyMetricsOut) -> bytes:
    return zip_files({**files, **render_plots(metrics)})


def render_plots(metrics: StudyMetricsOut) -> dict[str, bytes]:
    """Every plot of every task as SVG (matplotlib: CPU work, for a worker thread)."""
    return {
        f"plots/{_safe(task)}-{plot}.svg": plots.render(result, plot, "svg")
        for task, result in metrics.tasks.items()
        for plot in plots.PLOTS
    }


def zip_files(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(files):
            archive.writestr(path, files[path])
    return buffer.getvalue()


def _design(tables: dict[str, TableRows]) -> dict[str, Any]:
    def records(name: str, keep: Sequence[str] | None = None) -> list[dict[str, Any]]:
        rows = tables[name]
        return [
            {key: value for key, value in zip(rows.columns, row, strict=True) if keep is None or key in keep}
            for row in rows.rows
        ]

    return {
        "study": records("study"),
        "tasks": records("task", ("id", "name", "kind", "default_box_size")),
        "labels": records("label"),
        "images": records("image"),
        "experts": records("user_account"),
        "assignments": records("assignment"),
    }


def _protocols(tables: dict[str, TableRows]) -> list[dict[str, Any]]:
    rows = tables["suggestion_set"]
    return [dict(zip(rows.columns, row, strict=True)) for row in rows.rows]


def _rows_csv(rows: TableRows, tables: dict[str, TableRows]) -> bytes:
    users = {row[0]: row[1] for row in tables["user_account"].rows}
    header = [*rows.columns, "expert"]
    expert = rows.columns.index("expert_id")
    return exports.rows_csv(header, ([*row, users.get(row[expert], "")] for row in rows.rows)).encode()


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, indent=1).encode()


def _safe(name: str) -> str:
    return "".join(char if char.isalnum() or char in "-_." else "_" for char in name) or "_"


def _readme(study: str, tables: dict[str, TableRows]) -> str:
    counts = "\n".join(f"| `data/{name}.json` | {len(rows.rows)} |" for name, rows in tables.items())
    return f"""# Study bundle: {study}

Written by Concord {version()} (`concord export-study`). `concord import-study` reads it into another
Concord; `concord evaluate` there gives the same metrics as `metrics/metrics.json` (all but `timing`).

| path | what it is |
|---|---|
| `manifest.json` | format, Concord's version, row counts, the parameters of the metrics |
| `design.json` | study (washout days), tasks, label schemas, images (names, sizes, sha256), experts, assignments |
| `protocols.json` | suggestion sets: source, parent, injection protocol with its seed, detector model |
| `data/*.json` | the study's rows, table by table (`columns`, `rows`), ids as in the source |
| `tasks/<task>/ground-truth.exact.txt`, `.coco.json` | the reference objects |
| `tasks/<task>/experts/<expert>-<mode>.exact.txt`, `.coco.json` | each expert's final objects |
| `log/edits.csv`, `log/visits.csv` | the full edit log (before/after of every edit) and image visits |
| `metrics/metrics.json`, `metrics/*.csv` | the evaluation at the time of export |
| `plots/*.svg` | Figure 2 of each task |

The injected-error register is `data/injected_error.json` (reference box and label, what was shown).
Image pixels are not included: `design.json` names each image with its sha256.

Rows per table:

| file | rows |
|---|---|
{counts}
"""


# ---------------------------------------------------------------- import


@dataclass(frozen=True)
class ImportedStudy:
    study: str
    study_id: int
    rows: dict[str, int]
    new_experts: list[str]


def read_bundle(payload: bytes) -> dict[str, TableRows]:
    """The data tables of a bundle, checked against the schema; Invalid with a clear message otherwise."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(payload))
    except zipfile.BadZipFile as error:
        raise Invalid(f"not a study bundle: not a zip file ({error})") from error
    with archive:
        if sum(info.file_size for info in archive.infolist()) > MAX_UNCOMPRESSED_BYTES:
            raise Invalid("not a study bundle: it unpacks to more than 2 GiB")
        manifest = _member_json(archive, "manifest.json")
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise Invalid(f"not a study bundle: manifest.json does not say format {FORMAT!r}")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise Invalid(
                f"bundle format version {manifest.get('format_version')!r} is not {FORMAT_VERSION} "
                f"(written by Concord {manifest.get('concord_version')!r})"
            )
        return {name: _table_rows(archive, name) for name in TABLES}


def _member_json(archive: zipfile.ZipFile, path: str) -> Any:
    try:
        return json.loads(archive.read(path))
    except KeyError as error:
        raise Invalid(f"not a study bundle: {path} is missing") from error
    except (ValueError, zipfile.BadZipFile, OSError) as error:
        raise Invalid(f"bundle file {path} cannot be read: {error}") from error


def _table_rows(archive: zipfile.ZipFile, name: str) -> TableRows:
    path = f"data/{name}.json"
    content = _member_json(archive, path)
    if not isinstance(content, dict) or not isinstance(content.get("columns"), list):
        raise Invalid(f"{path}: expected an object with 'columns' and 'rows'")
    columns, rows = content["columns"], content.get("rows")
    known = {column.name for column in TABLES[name].columns}
    unknown = [column for column in columns if column not in known]
    if unknown or "id" not in columns:
        raise Invalid(f"{path}: unknown columns {unknown} (or no id column) for table {name}")
    if not isinstance(rows, list) or any(
        not isinstance(row, list) or len(row) != len(columns) for row in rows
    ):
        raise Invalid(f"{path}: every row must be a list of {len(columns)} values")
    return TableRows(columns, rows)


async def import_study(session: AsyncSession, payload: bytes, rename: str | None = None) -> ImportedStudy:
    """Writes a bundle's rows with new ids (caller's transaction; raises before anything is committed)."""
    tables = read_bundle(payload)
    if len(tables["study"].rows) != 1:
        raise Invalid("data/study.json must hold exactly one study")
    study_rows = tables["study"]
    name = rename or study_rows.rows[0][study_rows.columns.index("name")]
    if await repository.study_by_name(session, name) is not None:
        raise Conflict(f"a study named {name!r} exists already (import it under another name with --as)")
    new_ids: dict[str, dict[Any, int]] = {}
    new_experts: list[str] = []
    for table_name, rows in tables.items():
        if table_name == "user_account":
            new_ids[table_name] = await _users(session, rows, new_experts)
            continue
        if table_name == "detector_model":
            new_ids[table_name] = await _detector_models(session, rows, new_ids)
            continue
        overrides = {"name": name} if table_name == "study" else {}
        new_ids[table_name] = await _insert(session, TABLES[table_name], rows, new_ids, overrides)
    study_id = next(iter(new_ids["study"].values()))
    await repository.store_study_object_columns(session, study_id)
    return ImportedStudy(
        name, study_id, {table: len(rows.rows) for table, rows in tables.items()}, new_experts
    )


async def _users(session: AsyncSession, rows: TableRows, created: list[str]) -> dict[Any, int]:
    column = rows.columns.index
    names = [row[column("name")] for row in rows.rows]
    existing = await repository.users_by_name(session, names)
    ids = {}
    for row in rows.rows:
        user = existing.get(row[column("name")])
        if user is None:
            role = row[column("role")] if "role" in rows.columns else "expert"
            user = User(name=row[column("name")], role=role if role in ("admin", "expert") else "expert")
            session.add(user)
            await session.flush()
            created.append(user.name)
        ids[row[column("id")]] = user.id
    return ids


async def _detector_models(
    session: AsyncSession, rows: TableRows, new_ids: dict[str, dict[Any, int]]
) -> dict[Any, int]:
    """Models are unique by sha256: one the target has already is reused, the others are inserted."""
    column = rows.columns.index
    hashes = [row[column("sha256")] for row in rows.rows]
    query = select(DetectorModel.sha256, DetectorModel.id).where(DetectorModel.sha256.in_(hashes))
    existing = dict((await session.execute(query)).all())
    missing = TableRows(rows.columns, [row for row in rows.rows if row[column("sha256")] not in existing])
    ids = await _insert(session, TABLES["detector_model"], missing, new_ids, {})
    ids.update(
        {
            row[column("id")]: existing[row[column("sha256")]]
            for row in rows.rows
            if row[column("sha256")] in existing
        }
    )
    return ids


async def _insert(
    session: AsyncSession,
    table: Table,
    rows: TableRows,
    new_ids: dict[str, dict[Any, int]],
    overrides: dict[str, Any],
) -> dict[Any, int]:
    """Inserts rows in their order with new ids; foreign keys through the maps of the tables before."""
    skipped = set(NOT_IMPORTED.get(table.name, ()))
    converters = [_converter(table, column, new_ids) for column in rows.columns]
    values = []
    for row in rows.rows:
        record = {
            column: convert(value)
            for column, convert, value in zip(rows.columns, converters, row, strict=True)
            if column != "id" and column not in skipped
        }
        values.append({**record, **overrides})
    ids: dict[Any, int] = {}
    old_ids = [row[rows.columns.index("id")] for row in rows.rows]
    for start in range(0, len(values), INSERT_BATCH):
        batch = values[start : start + INSERT_BATCH]
        if not batch:
            continue
        statement = insert(table).returning(table.c.id, sort_by_parameter_order=True)
        try:
            returned = (await session.execute(statement, batch)).scalars().all()
        except SQLAlchemyError as error:  # a bundle that breaks a constraint: one clear line, nothing written
            raise Invalid(
                f"data/{table.name}.json cannot be imported: {str(error).splitlines()[0]}"
            ) from error
        ids.update(zip(old_ids[start : start + len(batch)], returned, strict=True))
    return ids


def _converter(table: Table, name: str, new_ids: dict[str, dict[Any, int]]) -> Any:
    column = table.c[name]
    targets = [key.column.table.name for key in column.foreign_keys]
    if targets:
        mapping = new_ids.get(targets[0])
        label = f"data/{table.name}.json column {name}"

        def foreign(value: Any) -> Any:
            if value is None:
                return None
            if mapping is None or value not in mapping:
                raise Invalid(f"{label}: {value!r} points at no row of {targets[0]} in the bundle")
            return mapping[value]

        return foreign
    if isinstance(column.type, UTCDateTime):

        def moment(value: Any) -> Any:
            if value is None:
                return None
            try:
                return datetime.fromisoformat(value)
            except (TypeError, ValueError) as error:
                raise Invalid(f"data/{table.name}.json column {name}: not a timestamp: {value!r}") from error

        return moment
    return lambda value: value


def describe(imported: ImportedStudy) -> str:
    rows = ", ".join(f"{name} {count}" for name, count in imported.rows.items() if count)
    created = ", ".join(imported.new_experts) or "none"
    return f"study {imported.study!r} (id {imported.study_id}) imported: {rows}; new users: {created}"
