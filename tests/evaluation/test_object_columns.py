"""Stored object columns: rebuilt after every kind of annotation write, read when current, never a failure."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
import pytest
from sqlalchemy import delete, select, text, update

from app.db import make_engine
from app.evaluation import object_columns, repository
from app.evaluation.importer import ImportRequest
from app.evaluation.service import MetricsParams, clear_result_cache, find_study, study_metrics
from app.models import Annotation, Image, ObjectColumns, Task
from app.models.annotation import task_objects_revision
from tests.evaluation.test_exports import MORE
from tests.evaluation.test_import import GT_FILE, _import

# the object tables are stored in a transaction of their own, on a second connection (skipped by a session
# bound to the test's connection): these tests read what that store committed
pytestmark = pytest.mark.commits


async def _imported_study(app: Any) -> int:
    report = await _import(app, ImportRequest("S", "T", "classify", "ground-truth"), GT_FILE)
    await _import(app, ImportRequest("S", "T", "classify", "expert", mode="unaided"), MORE)
    await _import(app, ImportRequest("S", "U", "classify", "ground-truth"), GT_FILE)
    return int(report.study_id)


async def _study(app: Any) -> int:
    """The imported study without the object tables its import stored: the first read rebuilds them."""
    study_id = await _imported_study(app)
    await _write(app, delete(ObjectColumns))
    return study_id


async def _read(app: Any, study_id: int) -> repository.StudyRows:
    async with app.state.sessionmaker() as session:
        rows = await repository.read_study(session, study_id)
        await repository.store_derived_object_columns(session, rows)
        return rows


async def _revisions(app: Any) -> dict[str, int]:
    async with app.state.sessionmaker() as session:
        rows = await session.execute(select(Task.name, task_objects_revision(Task.id)))
        return dict(rows.all())


async def _stored(app: Any) -> dict[int, tuple[int, int]]:
    async with app.state.sessionmaker() as session:
        rows = await session.execute(
            select(ObjectColumns.task_id, ObjectColumns.revision, ObjectColumns.rows)
        )
        return {task_id: (revision, count) for task_id, revision, count in rows}


async def _write(app: Any, statement: Any) -> None:
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(statement)


def _task_t(rows: repository.StudyRows) -> int:
    return int(next(task_id for task_id, name in rows.tasks if name == "T"))


async def test_stored_table_is_read_until_a_write_makes_it_stale(app: Any) -> None:
    study_id = await _study(app)
    first = await _read(app, study_id)
    task = _task_t(first)
    assert set(first.rebuilt) == {task_id for task_id, _ in first.tasks}  # U's table is empty, still stored
    assert (await _stored(app))[task] == ((await _revisions(app))["T"], 2)  # the deleted object stays out

    second = await _read(app, study_id)
    assert second.rebuilt == {}
    assert np.array_equal(second.objects[task], first.objects[task])
    assert second.objects[task][:, object_columns.MODE].tolist() == [0, 0]

    await _write(app, update(Annotation).where(Annotation.deleted.is_(False)).values(x1=Annotation.x1 + 1))
    third = await _read(app, study_id)
    assert set(third.rebuilt) == {task}
    assert (third.objects[task][:, object_columns.BOX][:, 0] == first.objects[task][:, 4] + 1).all()
    assert (await _stored(app))[task][0] == (await _revisions(app))["T"]


async def test_insert_update_and_delete_each_raise_only_their_tasks_revision(app: Any) -> None:
    await _study(app)
    before = await _revisions(app)
    await _write(app, update(Annotation).values(label_id=Annotation.label_id))
    after_update = await _revisions(app)
    await _write(app, delete(Annotation).where(Annotation.deleted.is_(True)))
    after_delete = await _revisions(app)
    await _import(app, ImportRequest("S", "T", "classify", "expert", mode="aided"), MORE)
    after_insert = await _revisions(app)

    for revisions in (before, after_update, after_delete, after_insert):
        assert revisions["U"] == 0
    assert before["T"] < after_update["T"] < after_delete["T"] < after_insert["T"]


async def test_metrics_follow_an_edit_and_a_deleted_image(app: Any) -> None:
    study_id = await _study(app)

    async def objects() -> int:
        async with app.state.sessionmaker() as session:
            result = await study_metrics(session, await find_study(session, str(study_id)), MetricsParams())
        return result.tasks["T"].modes["unaided"].experts["alice"].objects

    assert await objects() == 2
    await _write(app, update(Annotation).where(Annotation.deleted.is_(False)).values(deleted=True))
    assert await objects() == 0
    await _write(app, update(Annotation).values(deleted=False))
    assert await objects() == 3
    await _write(app, delete(Image).where(Image.name == "b.png"))  # cascades to its annotations
    assert await objects() == 2


async def test_a_damaged_payload_is_rebuilt(app: Any) -> None:
    study_id = await _study(app)
    first = await _read(app, study_id)
    await _write(app, update(ObjectColumns).values(payload=b"\x00" * 5))
    again = await _read(app, study_id)
    assert set(again.rebuilt) == set(first.rebuilt)
    assert np.array_equal(again.objects[_task_t(again)], first.objects[_task_t(first)])


async def test_a_locked_store_skips_storing_and_still_answers(app: Any, database_url: str) -> None:
    study_id = await _study(app)
    task = _task_t(await _read(app, study_id))
    await _write(app, update(Annotation).where(Annotation.deleted.is_(False)).values(x1=Annotation.x1 + 1))
    stale = (await _stored(app))[task]

    async with _store_locked(database_url, task):
        locked = await _read(app, study_id)
    assert task in locked.rebuilt
    assert (await _stored(app))[task] == stale
    assert np.array_equal(locked.objects[task], (await _read(app, study_id)).objects[task])
    assert (await _stored(app))[task][0] == (await _revisions(app))["T"]


@asynccontextmanager
async def _store_locked(database_url: str, task_id: int) -> AsyncIterator[None]:
    """Another connection holds the lock that storing needs: SQLite's write lock, PostgreSQL's row lock."""
    if database_url.startswith("sqlite"):
        writer = sqlite3.connect(database_url.split("///", 1)[1], isolation_level=None)
        writer.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            writer.rollback()
            writer.close()
        return
    engine = make_engine(database_url)
    async with engine.connect() as connection:
        query = "SELECT task_id FROM object_columns WHERE task_id = :task FOR UPDATE"
        await connection.execute(text(query), {"task": task_id})
        yield
        await connection.rollback()
    await engine.dispose()


async def test_an_import_stores_the_object_tables_it_wrote_and_the_first_read_uses_them(app: Any) -> None:
    study_id = await _imported_study(app)
    revisions = await _revisions(app)
    async with app.state.sessionmaker() as session:
        task_ids = dict((await session.execute(select(Task.name, Task.id))).all())
    stored = await _stored(app)
    assert stored[task_ids["T"]][0] == revisions["T"]
    assert stored[task_ids["U"]][0] == revisions["U"]

    rows = await _read(app, study_id)
    assert rows.rebuilt == {}
    async with app.state.sessionmaker() as session:
        study = await find_study(session, "S")
        kept = await study_metrics(session, study, MetricsParams())
        await session.execute(delete(ObjectColumns))
        await session.commit()
        clear_result_cache()
        rebuilt = await study_metrics(session, study, MetricsParams())
    assert kept.model_dump(exclude={"timing"}) == rebuilt.model_dump(exclude={"timing"})
