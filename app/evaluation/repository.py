"""Every query of the evaluation domain: the import's look-ups and writes, and the study read for metrics.

The metrics read uses SQLAlchemy Core, one query per table run on the driver's cursor, so that a study of tens
of thousands of objects loads as the driver's plain tuples without ORM or Row cost. Its two large parts, each
task's expert objects and its reference rows (ground truth, suggestions, error register), come from derived
binary tables (`object_columns`, `reference_columns`) while their revisions are current; the read rebuilds
stale ones from their tables, and `store_derived_object_columns` / the import's `store_study_object_columns`
store them.
"""

from __future__ import annotations

import logging
import sqlite3
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiosqlite
import numpy as np
from sqlalchemy import (
    ColumnElement,
    Connection,
    Float,
    Integer,
    Row,
    Select,
    and_,
    bindparam,
    case,
    cast,
    func,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.util import await_

from app.db import SQLITE_BUSY_TIMEOUT_MS, WRITE_GATE_WAIT_S
from app.evaluation import object_columns, reference_columns
from app.models import (
    Annotation,
    Assignment,
    GroundTruthObject,
    Image,
    ImagePurpose,
    ImageView,
    ImageVisit,
    InjectedError,
    Label,
    Mode,
    ObjectColumns,
    ReferenceColumns,
    Study,
    Suggestion,
    SuggestionSet,
    Task,
    User,
)
from app.models.annotation import task_objects_revision
from app.models.base import utcnow

Rows = Sequence[Row[*tuple[Any, ...]]]
AnySelect = Select[*tuple[Any, ...]]
EVALUATED_MODES = (Mode.unaided.value, Mode.aided.value)
STUDY_IMAGE = Image.purpose == ImagePurpose.study.value  # practice images (training mode) never count
INJECTED_SOURCE = "injected"
logger = logging.getLogger(__name__)
IMPORTED_REGISTER_NAME = "imported register"


# ---------------------------------------------------------------- look-ups of the import


async def study_by_name(session: AsyncSession, name: str) -> Study | None:
    return await session.scalar(select(Study).where(Study.name == name))


async def users_by_name(session: AsyncSession, names: Sequence[str]) -> dict[str, User]:
    users = await session.scalars(select(User).where(User.name.in_(list(names))))
    return {user.name: user for user in users}


async def has_annotations(session: AsyncSession, task_id: int, expert_id: int, mode: str) -> bool:
    query = (
        select(Annotation.id)
        .join(Image, Image.id == Annotation.image_id)
        .where(Image.task_id == task_id, Annotation.expert_id == expert_id, Annotation.mode == mode)
        .limit(1)
    )
    return await session.scalar(query) is not None


async def has_ground_truth(session: AsyncSession, task_id: int) -> bool:
    query = (
        select(GroundTruthObject.id)
        .join(Image, Image.id == GroundTruthObject.image_id)
        .where(Image.task_id == task_id)
        .limit(1)
    )
    return await session.scalar(query) is not None


async def imported_register(session: AsyncSession, task_id: int) -> SuggestionSet | None:
    query = select(SuggestionSet).where(
        SuggestionSet.task_id == task_id,
        SuggestionSet.source == INJECTED_SOURCE,
        SuggestionSet.name == IMPORTED_REGISTER_NAME,
    )
    return await session.scalar(query)


async def next_register_position(session: AsyncSession, suggestion_set_id: int) -> int:
    query = select(func.max(InjectedError.position)).where(
        InjectedError.suggestion_set_id == suggestion_set_id
    )
    current = await session.scalar(query)
    return 0 if current is None else current + 1


async def tasks_of_study(session: AsyncSession, study_id: int) -> list[Task]:
    return list(await session.scalars(select(Task).where(Task.study_id == study_id).order_by(Task.id)))


# ---------------------------------------------------------------- export reads


async def annotations_for_export(
    session: AsyncSession, task_id: int, expert_id: int | None, mode: str | None
) -> Rows:
    """(Annotation, Image, Label, User name, view first_seen_at, view id) in detection order."""
    query = (
        select(Annotation, Image, Label, User.name, ImageView.first_seen_at, ImageView.id)
        .join(Image, Image.id == Annotation.image_id)
        .join(Label, Label.id == Annotation.label_id)
        .join(User, User.id == Annotation.expert_id)
        .outerjoin(ImageView, _view_of_annotation())
        .where(Image.task_id == task_id)
    )
    if expert_id is not None:
        query = query.where(Annotation.expert_id == expert_id)
    if mode is not None:
        query = query.where(Annotation.mode == mode)
    query = query.order_by(
        Annotation.expert_id,
        Annotation.mode,
        ImageView.first_seen_at.is_(None),
        ImageView.first_seen_at,
        ImageView.id,
        Image.position,
        Image.id,
        Annotation.position,
        Annotation.id,
    )
    return (await session.execute(query)).all()


def _view_of_annotation() -> ColumnElement[bool]:
    return and_(
        ImageView.image_id == Annotation.image_id,
        ImageView.expert_id == Annotation.expert_id,
        ImageView.mode == Annotation.mode,
    )


async def views_for_export(session: AsyncSession, task_id: int, expert_id: int, mode: str) -> list[Image]:
    query = (
        select(Image)
        .join(ImageView, ImageView.image_id == Image.id)
        .where(Image.task_id == task_id, ImageView.expert_id == expert_id, ImageView.mode == mode)
        .order_by(ImageView.first_seen_at, ImageView.id)
    )
    return list(await session.scalars(query))


async def ground_truth_for_export(session: AsyncSession, task_id: int) -> Rows:
    query = (
        select(GroundTruthObject, Image, Label)
        .join(Image, Image.id == GroundTruthObject.image_id)
        .join(Label, Label.id == GroundTruthObject.label_id)
        .where(Image.task_id == task_id, STUDY_IMAGE)
        .order_by(GroundTruthObject.position, GroundTruthObject.id)
    )
    return (await session.execute(query)).all()


async def images_and_labels_of_task(
    session: AsyncSession, task_id: int
) -> tuple[dict[int, Image], dict[int, str]]:
    """The task's study images and label names by id (for exports of computed objects)."""
    images = await session.scalars(select(Image).where(Image.task_id == task_id, STUDY_IMAGE))
    labels = await session.execute(select(Label.id, Label.name).where(Label.task_id == task_id))
    return {image.id: image for image in images}, dict(labels.all())


# ---------------------------------------------------------------- the study read for metrics

Table = list[tuple[Any, ...]]
STUDY_PARAMETER = "study_id"
TASKS_PARAMETER = "task_ids"
EXPERTS_PARAMETER = "expert_ids"
IMAGES_PARAMETER = "image_ids"
STORE_LOCK_WAIT_MS = 250
SPLICED_GROUPS_AT_MOST = 0.25  # share of a task's groups changed beyond which reading it whole is cheaper


@dataclass(frozen=True)
class Rebuilt:
    """A task's object table built by a read, the task revision it was read at, and its group digests."""

    revision: int
    table: object_columns.FloatTable
    groups: object_columns.FloatTable
    # the stored row's revision when this table and digests equal the stored ones: storing then only moves
    # that row's revision on, if the row is still the one read (a concurrent store may have replaced it)
    unchanged_since: int | None = None


@dataclass(frozen=True)
class StudyRows:
    """The driver's plain tuples of every table the metrics need, each in the order the maths needs.

    objects: each task's expert objects as an `object_columns` table; rebuilt: the tables that were built
    from the annotation table (whole, or the stored copy with its changed groups read again) because no
    current stored copy existed, with the revision they were read at and their group digests.
    references: each task's ground truth, suggestions and error register as `reference_columns` tables;
    references_rebuilt: the reference revision of each task whose tables were read from those rows because
    no current stored copy existed.
    """

    tasks: Table
    labels: Table
    images: Table
    users: Table
    objects: dict[int, object_columns.FloatTable]
    views: Table
    visits: Table
    references: dict[int, reference_columns.References]
    shown_sets: Table
    rebuilt: dict[int, Rebuilt] = field(default_factory=dict)
    references_rebuilt: dict[int, int] = field(default_factory=dict)
    task_kinds: dict[int, str] = field(default_factory=dict)


async def read_study(session: AsyncSession, study_id: int) -> StudyRows:
    """Every row the metrics need: one SQLAlchemy Core query per table, run on the driver's own cursor.

    The queries are compiled once per dialect and their rows come back as the driver's tuples, without
    SQLAlchemy Row objects or result processing. Expert objects come from each task's stored object columns
    when they are current, else from the annotation table (`rows.rebuilt`); reference rows likewise from the
    stored reference columns, else from their tables (`rows.references_rebuilt`). Reading writes nothing:
    callers store what was rebuilt with `store_derived_object_columns`.
    """
    connection = await session.connection()
    return await connection.run_sync(_read_study, {STUDY_PARAMETER: study_id})


async def store_derived_object_columns(session: AsyncSession, rows: StudyRows) -> None:
    """The evaluation's one write on its read paths, a derived cache: the object and reference tables
    `read_study` rebuilt, stored on a connection of its own so that the next read finds them current."""
    if (rows.rebuilt or rows.references_rebuilt) and isinstance(session.bind, AsyncEngine):
        await store_object_columns(session.bind, rows)


def _read_study(connection: Connection, parameters: dict[str, Any]) -> StudyRows:
    queries = _study_queries(connection.dialect)
    driver = connection.connection.driver_connection
    # on aiosqlite its connection itself (see _fetch), else a DBAPI cursor
    source = driver if isinstance(driver, aiosqlite.Connection) else connection.connection.cursor()
    try:

        def fetch(query: SQLCompiler, extra: dict[str, Any] | None = None) -> Table:
            return _fetch(source, query, {**parameters, **(extra or {})})

        tasks = fetch(queries.tasks)  # revisions first: rows read later are at least as new
        objects, rebuilt = _objects(tasks, fetch(queries.stored_objects), fetch, queries)
        references, references_rebuilt = _references(tasks, fetch(queries.stored_references), fetch, queries)
        return StudyRows(
            tasks=[(task_id, name) for task_id, name, *_ in tasks],
            labels=fetch(queries.labels),
            images=fetch(queries.images),
            users=fetch(queries.users),
            objects=objects,
            views=fetch(queries.views),
            visits=fetch(queries.visits),
            references=references,
            shown_sets=fetch(queries.shown_sets),
            rebuilt=rebuilt,
            references_rebuilt=references_rebuilt,
            task_kinds={task_id: kind for task_id, _, _, kind, _ in tasks},
        )
    finally:
        if source is not driver:
            source.close()


def _objects(
    tasks: Table, stored: Table, fetch: Any, queries: StudyQueries
) -> tuple[dict[int, object_columns.FloatTable], dict[int, Rebuilt]]:
    """Each task's object table: the stored one when its revision is the task's; else the stored one with the
    groups that changed read again, when its group digests are stored; else read whole."""
    revisions = {task_id: revision for task_id, _, revision, *_ in tasks}
    objects, earlier, stored_revisions = {}, {}, {}
    for task_id, revision, layout, rows, payload, groups in stored:
        table = object_columns.unpack(bytes(payload), rows) if layout == object_columns.LAYOUT else None
        if table is None or task_id not in revisions:
            continue
        if revisions[task_id] == revision:
            objects[task_id] = table
        elif (known := object_columns.unpack_groups(None if groups is None else bytes(groups))) is not None:
            earlier[task_id] = (table, known)
            stored_revisions[task_id] = revision
    stale = [task_id for task_id in revisions if task_id not in objects]
    if not stale:
        return objects, {}
    # digests before objects: objects read later are at least as new, so a later edit is seen next time
    digests = object_columns.groups_by_task(fetch(queries.object_groups, {TASKS_PARAMETER: stale}), stale)
    changed = {
        task_id: object_columns.changed_keys(earlier[task_id][1], digests[task_id])
        for task_id in stale
        if task_id in earlier
    }
    partly = [
        task_id
        for task_id, keys in changed.items()
        if len(keys) <= SPLICED_GROUPS_AT_MOST * len(digests[task_id])
    ]
    whole = [task_id for task_id in stale if task_id not in partly]
    read = fetch(queries.annotations, {TASKS_PARAMETER: whole}) if whole else []
    built = object_columns.tables_by_task(read, whole)
    built.update(_spliced(partly, earlier, changed, fetch, queries.changed_annotations))
    objects.update(built)
    return objects, {
        task_id: Rebuilt(
            revisions[task_id],
            table,
            digests[task_id],
            unchanged_since=stored_revisions[task_id]
            if task_id in changed and not len(changed[task_id])
            else None,
        )
        for task_id, table in built.items()
    }


def _references(
    tasks: Table, stored: Table, fetch: Any, queries: StudyQueries
) -> tuple[dict[int, reference_columns.References], dict[int, int]]:
    """Each task's reference tables: the stored ones when their revision is the task's and they unpack; else
    the three reads of the stale tasks' rows, and those tasks' revisions as read (`references_rebuilt`)."""
    revisions = {task_id: revision for task_id, *_, revision in tasks}
    references = {}
    for task_id, revision, layout, truth, offered, register, kinds, payload in stored:
        if layout != reference_columns.LAYOUT or revisions.get(task_id) != revision:
            continue
        found = reference_columns.unpack(bytes(payload), (truth, offered, register), kinds)
        if found is not None:
            references[task_id] = found
    stale = [task_id for task_id in revisions if task_id not in references]
    if not stale:
        return references, {}
    only = {TASKS_PARAMETER: stale}
    references.update(
        reference_columns.by_task(
            fetch(queries.ground_truth, only),
            fetch(queries.suggestions, only),
            fetch(queries.injected, only),
            stale,
        )
    )
    return references, {task_id: revisions[task_id] for task_id in stale}


def _spliced(
    task_ids: list[int],
    earlier: dict[int, tuple[object_columns.FloatTable, object_columns.FloatTable]],
    changed: dict[int, object_columns.FloatTable],
    fetch: Any,
    query: SQLCompiler,
) -> dict[int, object_columns.FloatTable]:
    """The stored tables of the tasks with only their changed groups read again."""
    keys = [changed[task_id] for task_id in task_ids]
    if not any(len(part) for part in keys):
        return {task_id: earlier[task_id][0] for task_id in task_ids}
    every = np.concatenate(keys)
    parameters = {
        TASKS_PARAMETER: task_ids,
        EXPERTS_PARAMETER: sorted({int(expert) for expert in every[:, 1]}),
        IMAGES_PARAMETER: sorted({int(image) for image in every[:, 2]}),
    }
    fresh = object_columns.tables_by_task(fetch(query, parameters), task_ids)
    return {
        task_id: object_columns.spliced(earlier[task_id][0], changed[task_id], fresh[task_id])
        for task_id in task_ids
    }


def _fetch(source: Any, query: SQLCompiler, parameters: dict[str, Any]) -> Table:
    """A query's rows as the driver's tuples. source: a DBAPI cursor, or on aiosqlite its connection, where
    the query runs and its rows are fetched in one call on the driver's thread (`execute_fetchall`, on the
    session's own connection): the adapted cursor makes two, execute and fetch, each a round trip to it."""
    state = query.construct_expanded_state(parameters)
    statement = state.statement
    values = state.positional_parameters if query.positional else state.parameters
    if isinstance(source, aiosqlite.Connection):
        found = await_(source.execute_fetchall(statement, values))
        # the driver's plain tuples (SQLAlchemy sets no row factory), typed as sqlite3.Row
        return typing.cast(Table, found if isinstance(found, list) else list(found))
    source.execute(statement, values)
    rows: Table = source.fetchall()
    return rows


async def store_study_object_columns(session: AsyncSession, study_id: int) -> None:
    """An import's last step: the study's object and reference tables, built from the rows just written and
    stored in the session's transaction (they commit or roll back with those rows), so that the first
    evaluation after an import reads them, not every object and reference row."""
    rows = await read_study(session, study_id)
    await _write_derived(await session.connection(), rows)


async def store_object_columns(engine: AsyncEngine, rows: StudyRows) -> None:
    """Stores the rebuilt object and reference tables in their own short transaction; a busy database only
    skips the store.

    Never waits long for a lock (a long write elsewhere must not stall a metrics request) and never fails the
    read: a table that is not stored is rebuilt by the next read.
    """
    try:
        async with engine.connect() as connection:
            await _store_waiting_briefly(connection, rows)
    except SQLAlchemyError as error:
        tasks = sorted({*rows.rebuilt, *rows.references_rebuilt})
        logger.info("object or reference columns of tasks %s not stored: %s", tasks, error)


def _column_rows(tables: dict[int, Rebuilt]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The upserted tables, and the revision moves of tables whose content equals the stored one."""
    values = [
        {
            "task_id": task_id,
            "revision": rebuilt.revision,
            "layout": object_columns.LAYOUT,
            "rows": len(rebuilt.table),
            "payload": object_columns.pack(rebuilt.table),
            "groups": object_columns.pack(rebuilt.groups),
        }
        for task_id, rebuilt in tables.items()
        if rebuilt.unchanged_since is None
    ]
    revisions = [
        {
            "moved_task_id": task_id,
            "moved_from": rebuilt.unchanged_since,
            "moved_groups": object_columns.pack(rebuilt.groups),
            "moved_revision": rebuilt.revision,
            "moved_at": utcnow(),
        }
        for task_id, rebuilt in tables.items()
        if rebuilt.unchanged_since is not None
    ]
    return values, revisions


async def _store_waiting_briefly(connection: AsyncConnection, rows: StudyRows) -> None:
    if connection.dialect.name == "sqlite":
        await connection.exec_driver_sql(f"PRAGMA busy_timeout = {STORE_LOCK_WAIT_MS}")
        connection.info[WRITE_GATE_WAIT_S] = STORE_LOCK_WAIT_MS / 1000
        try:
            await _write_derived(connection, rows)
            await connection.commit()
        finally:
            await connection.rollback()
            connection.info.pop(WRITE_GATE_WAIT_S, None)
            await connection.exec_driver_sql(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        return
    await connection.exec_driver_sql(f"SET LOCAL lock_timeout = {STORE_LOCK_WAIT_MS}")
    await _write_derived(connection, rows)
    await connection.commit()


async def _write_derived(connection: AsyncConnection, rows: StudyRows) -> None:
    """Upserts the rebuilt object tables (of one whose content equals the stored one, moves only the
    revision: no payload written again) and the rebuilt reference tables."""
    values, revisions = _column_rows(rows.rebuilt)
    if values:
        await connection.execute(_upsert(connection.dialect, ObjectColumns, OBJECT_COLUMNS_REPLACED), values)
    if revisions:
        await connection.execute(_MOVE_REVISION, revisions)
    if rows.references_rebuilt:
        references = _reference_rows(rows)
        upsert = _upsert(connection.dialect, ReferenceColumns, REFERENCE_COLUMNS_REPLACED)
        await connection.execute(upsert, references)


def _reference_rows(rows: StudyRows) -> list[dict[str, Any]]:
    return [
        {
            "task_id": task_id,
            "revision": revision,
            "layout": reference_columns.LAYOUT,
            "truth_rows": len(references.truth),
            "suggestion_rows": len(references.suggestions),
            "register_rows": len(references.register),
            "kinds": reference_columns.pack_kinds(references),
            "payload": reference_columns.pack(references),
        }
        for task_id, revision in rows.references_rebuilt.items()
        for references in (rows.references[task_id],)
    ]


_MOVE_REVISION = (
    update(ObjectColumns)
    .where(
        ObjectColumns.task_id == bindparam("moved_task_id"),
        ObjectColumns.revision == bindparam("moved_from"),
        ObjectColumns.groups == bindparam("moved_groups"),
    )
    .values(revision=bindparam("moved_revision"), built_at=bindparam("moved_at"))
)


OBJECT_COLUMNS_REPLACED = ("revision", "layout", "rows", "payload", "groups", "built_at")
REFERENCE_COLUMNS_REPLACED = (
    "revision",
    "layout",
    "truth_rows",
    "suggestion_rows",
    "register_rows",
    "kinds",
    "payload",
    "built_at",
)


def _upsert(
    dialect: Dialect, model: type[ObjectColumns | ReferenceColumns], replaced: tuple[str, ...]
) -> Any:
    insert = postgresql.insert if dialect.name == "postgresql" else sqlite.insert
    statement = insert(model)
    return statement.on_conflict_do_update(
        index_elements=[model.task_id],
        set_={name: statement.excluded[name] for name in replaced},
    )


@dataclass(frozen=True)
class StudyQueries:
    """The study read's statements, compiled for one dialect."""

    tasks: SQLCompiler
    stored_objects: SQLCompiler
    stored_references: SQLCompiler
    labels: SQLCompiler
    images: SQLCompiler
    users: SQLCompiler
    annotations: SQLCompiler
    object_groups: SQLCompiler
    changed_annotations: SQLCompiler
    views: SQLCompiler
    visits: SQLCompiler
    ground_truth: SQLCompiler
    shown_sets: SQLCompiler
    suggestions: SQLCompiler
    injected: SQLCompiler


_COMPILED_QUERIES: dict[tuple[str, str, str], StudyQueries] = {}


def _study_queries(dialect: Dialect) -> StudyQueries:
    key = (dialect.name, dialect.driver, dialect.paramstyle)
    if key not in _COMPILED_QUERIES:
        _COMPILED_QUERIES[key] = _compile_study_queries(dialect)
    return _COMPILED_QUERIES[key]


def _compile_study_queries(dialect: Dialect) -> StudyQueries:
    study_id = bindparam(STUDY_PARAMETER, type_=Integer())
    tasks = select(Task.id).where(Task.study_id == study_id)

    def compiled(query: AnySelect) -> SQLCompiler:
        compiler = query.compile(dialect=dialect)
        assert isinstance(compiler, SQLCompiler)
        return compiler

    return StudyQueries(
        tasks=compiled(
            select(Task.id, Task.name, task_objects_revision(Task.id), Task.kind, Task.reference_revision)
            .where(Task.study_id == study_id)
            .order_by(Task.id)
        ),
        stored_objects=compiled(_stored_objects_query(tasks)),
        stored_references=compiled(_stored_references_query(tasks)),
        labels=compiled(_labels_query(tasks)),
        images=compiled(_images_query(tasks)),
        users=compiled(select(User.id, User.name)),
        annotations=compiled(_annotations_query(dialect)),
        object_groups=compiled(_object_groups_query()),
        changed_annotations=compiled(
            _annotations_query(dialect).where(
                Annotation.expert_id.in_(bindparam(EXPERTS_PARAMETER, expanding=True)),
                Annotation.image_id.in_(bindparam(IMAGES_PARAMETER, expanding=True)),
            )
        ),
        views=compiled(_views_query(tasks)),
        visits=compiled(_visits_query(tasks)),
        ground_truth=compiled(_ground_truth_query()),
        shown_sets=compiled(_shown_sets_query(tasks)),
        suggestions=compiled(_suggestions_query()),
        injected=compiled(_injected_query()),
    )


def _stored_objects_query(tasks: AnySelect) -> AnySelect:
    return select(
        ObjectColumns.task_id,
        ObjectColumns.revision,
        ObjectColumns.layout,
        ObjectColumns.rows,
        ObjectColumns.payload,
        ObjectColumns.groups,
    ).where(ObjectColumns.task_id.in_(tasks))


def _stored_references_query(tasks: AnySelect) -> AnySelect:
    return select(
        ReferenceColumns.task_id,
        ReferenceColumns.revision,
        ReferenceColumns.layout,
        ReferenceColumns.truth_rows,
        ReferenceColumns.suggestion_rows,
        ReferenceColumns.register_rows,
        ReferenceColumns.kinds,
        ReferenceColumns.payload,
    ).where(ReferenceColumns.task_id.in_(tasks))


def _labels_query(tasks: AnySelect) -> AnySelect:
    return (
        select(Label.id, Label.task_id, Label.name)
        .where(Label.task_id.in_(tasks))
        .order_by(Label.task_id, Label.position, Label.id)
    )


def _images_query(tasks: AnySelect) -> AnySelect:
    return (
        select(Image.id, Image.task_id, Image.width, Image.height, Image.position)
        .where(Image.task_id.in_(tasks), STUDY_IMAGE)
        .order_by(Image.id)
    )


def epoch_seconds(dialect: Dialect, column: Any) -> ColumnElement[float]:
    """Whole seconds since 1970 of a stored timestamp (truncated), computed by the database."""
    if dialect.name == "sqlite":
        if sqlite3.sqlite_version_info >= (3, 38, 0):
            return cast(func.unixepoch(column), Float)
        return cast(func.strftime("%s", column), Float)
    # date_part gives double precision; EXTRACT gives numeric, several times slower over tens of thousands of rows
    return cast(func.floor(func.date_part("epoch", column)), Float)


def _annotations_query(dialect: Dialect) -> AnySelect:
    """Expert objects of the listed tasks: task id, the columns of `object_columns` (layout 1), position, id.

    Only numbers, one query for every task and mode; deleted objects stay in the database. Unordered:
    `object_columns.tables_by_task` sorts them (mode, image, expert, then source order: position, id).
    """
    return (
        select(
            Image.task_id,
            _mode_code(),
            Annotation.expert_id,
            Annotation.image_id,
            Annotation.label_id,
            Annotation.x1,
            Annotation.y1,
            Annotation.x2,
            Annotation.y2,
            epoch_seconds(dialect, Annotation.updated_at),
            Annotation.position,
            Annotation.id,
        )
        .join(Image, Image.id == Annotation.image_id)
        .where(
            Image.task_id.in_(bindparam(TASKS_PARAMETER, expanding=True)),
            Annotation.mode.in_(list(object_columns.MODE_CODES)),
            Annotation.deleted.is_(False),
        )
    )


def _object_groups_query() -> AnySelect:
    """Task id and `object_columns.GROUP_COLUMNS` of every (mode, expert, image) group of the listed tasks'
    annotations of the evaluated modes, deleted ones included; grouped in the order of the annotation index.
    The weighted sum is a float: no integer overflow."""
    content = (
        Annotation.x1
        + 2 * Annotation.y1
        + 3 * Annotation.x2
        + 5 * Annotation.y2
        + 7 * Annotation.label_id
        + 11 * Annotation.position
        + 13 * cast(Annotation.deleted, Integer)
    )
    task_of_image = select(Image.task_id).where(Image.id == Annotation.image_id).scalar_subquery()
    images = select(Image.id).where(Image.task_id.in_(bindparam(TASKS_PARAMETER, expanding=True)))
    return (
        select(
            task_of_image,
            _mode_code(),
            Annotation.expert_id,
            Annotation.image_id,
            func.count(),
            func.sum(Annotation.id),
            func.sum(Annotation.version),
            func.sum(content * cast(Annotation.id, Float)),
        )
        .where(Annotation.image_id.in_(images), Annotation.mode.in_(list(object_columns.MODE_CODES)))
        .group_by(Annotation.image_id, Annotation.expert_id, Annotation.mode)
    )


def _mode_code() -> ColumnElement[int]:
    return case(
        *((Annotation.mode == mode, code) for mode, code in object_columns.MODE_CODES.items()), else_=-1
    )


def _views_query(tasks: AnySelect) -> AnySelect:
    """Images each expert saw, per mode, in the order first seen."""
    return (
        select(Image.task_id, ImageView.mode, ImageView.expert_id, ImageView.image_id)
        .join(Image, Image.id == ImageView.image_id)
        .where(Image.task_id.in_(tasks), ImageView.mode.in_(EVALUATED_MODES))
        .order_by(ImageView.mode, ImageView.expert_id, ImageView.first_seen_at, ImageView.id)
    )


def _visits_query(tasks: AnySelect) -> AnySelect:
    """Active seconds per task, mode, expert and image."""
    return (
        select(
            Image.task_id,
            ImageVisit.mode,
            ImageVisit.expert_id,
            ImageVisit.image_id,
            func.sum(ImageVisit.active_seconds),
        )
        .join(Image, Image.id == ImageVisit.image_id)
        .where(Image.task_id.in_(tasks), ImageVisit.mode.in_(EVALUATED_MODES))
        .group_by(Image.task_id, ImageVisit.mode, ImageVisit.expert_id, ImageVisit.image_id)
    )


def _listed_tasks() -> Any:
    return bindparam(TASKS_PARAMETER, expanding=True)


def _ground_truth_query() -> AnySelect:
    """The listed tasks' ground truth: task id, then `reference_columns.TRUTH_COLUMNS`."""
    return (
        select(
            Image.task_id,
            GroundTruthObject.image_id,
            GroundTruthObject.label_id,
            GroundTruthObject.x1,
            GroundTruthObject.y1,
            GroundTruthObject.x2,
            GroundTruthObject.y2,
        )
        .join(Image, Image.id == GroundTruthObject.image_id)
        .where(Image.task_id.in_(_listed_tasks()), STUDY_IMAGE)
        .order_by(Image.task_id, GroundTruthObject.position, GroundTruthObject.id)
    )


def _shown_sets_query(tasks: AnySelect) -> AnySelect:
    """How many aided assignments show each suggestion set."""
    return (
        select(Assignment.task_id, Assignment.suggestion_set_id, func.count())
        .where(
            Assignment.task_id.in_(tasks),
            Assignment.mode == Mode.aided.value,
            Assignment.suggestion_set_id.is_not(None),
        )
        .group_by(Assignment.task_id, Assignment.suggestion_set_id)
    )


def _suggestions_query() -> AnySelect:
    """The listed tasks' suggestions: task id, then `reference_columns.SUGGESTION_COLUMNS`."""
    return (
        select(
            SuggestionSet.task_id,
            Suggestion.suggestion_set_id,
            Suggestion.image_id,
            Suggestion.label_id,
            Suggestion.x1,
            Suggestion.y1,
            Suggestion.x2,
            Suggestion.y2,
        )
        .join(SuggestionSet, SuggestionSet.id == Suggestion.suggestion_set_id)
        .where(SuggestionSet.task_id.in_(_listed_tasks()))
        .order_by(SuggestionSet.task_id, Suggestion.suggestion_set_id, Suggestion.position, Suggestion.id)
    )


def _injected_query() -> AnySelect:
    """The listed tasks' error register: task id, then `reference_columns.REGISTER_COLUMNS` (the kind as
    its name), entries with a reference box only."""
    return (
        select(
            SuggestionSet.task_id,
            InjectedError.kind,
            InjectedError.group,
            InjectedError.image_id,
            InjectedError.ref_label_id,
            InjectedError.ref_x1,
            InjectedError.ref_y1,
            InjectedError.ref_x2,
            InjectedError.ref_y2,
        )
        .join(SuggestionSet, SuggestionSet.id == InjectedError.suggestion_set_id)
        .where(SuggestionSet.task_id.in_(_listed_tasks()), InjectedError.ref_label_id.is_not(None))
        .order_by(
            SuggestionSet.task_id, InjectedError.suggestion_set_id, InjectedError.position, InjectedError.id
        )
    )
