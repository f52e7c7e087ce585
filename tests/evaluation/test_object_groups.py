"""After an edit, a task's stored object table with only its changed (mode, expert, image) groups read again
equals the table read whole from the annotation table, and so do the metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.evaluation import repository, service
from app.evaluation.importer import ImportRequest
from app.evaluation.service import MetricsParams, clear_result_cache, find_study, study_metrics
from app.models import Annotation, Image, Label, ObjectColumns, Task
from app.models.annotation import task_objects_revision
from tests.evaluation.test_exports import MORE
from tests.evaluation.test_import import GT_FILE, _import

# the object tables are stored in a transaction of their own, on a second connection (skipped by a session
# bound to the test's connection): these tests read what that store committed
pytestmark = pytest.mark.commits

Edit = Callable[[AsyncSession, Annotation], Awaitable[None]]


async def _study(app: Any) -> int:
    report = await _import(app, ImportRequest("S", "T", "classify", "ground-truth"), GT_FILE)
    await _import(app, ImportRequest("S", "T", "classify", "expert", mode="unaided"), MORE)
    await _import(app, ImportRequest("S", "T", "classify", "expert", mode="aided"), MORE)
    return int(report.study_id)


async def _read(app: Any, study_id: int) -> repository.StudyRows:
    async with app.state.sessionmaker() as session:
        rows = await repository.read_study(session, study_id)
        await repository.store_derived_object_columns(session, rows)
        return rows


async def _metrics(app: Any, study_id: int) -> dict[str, Any]:
    clear_result_cache()
    async with app.state.sessionmaker() as session:
        result = await study_metrics(session, await find_study(session, str(study_id)), MetricsParams())
    return result.model_dump(mode="json", exclude={"timing"})


async def _add(session: AsyncSession, like: Annotation) -> None:
    session.add(
        Annotation(
            image_id=like.image_id,
            expert_id=like.expert_id,
            mode=like.mode,
            label_id=like.label_id,
            x1=like.x1 + 3,
            y1=like.y1 + 3,
            x2=like.x2 + 3,
            y2=like.y2 + 3,
            position=like.position + 1,
        )
    )


async def _move(session: AsyncSession, annotation: Annotation) -> None:
    annotation.x1, annotation.x2 = annotation.x1 + 2, annotation.x2 + 2


async def _relabel(session: AsyncSession, annotation: Annotation) -> None:
    other = await session.scalar(select(Label.id).where(Label.id != annotation.label_id).limit(1))
    assert other is not None
    annotation.label_id = other


async def _soft_delete(session: AsyncSession, annotation: Annotation) -> None:
    annotation.deleted = True


async def _hard_delete(session: AsyncSession, annotation: Annotation) -> None:
    await session.delete(annotation)


async def _restore(session: AsyncSession, annotation: Annotation) -> None:
    annotation.deleted = False


EDITS: dict[str, Edit] = {
    "add": _add,
    "move": _move,
    "relabel": _relabel,
    "soft delete": _soft_delete,
    "hard delete": _hard_delete,
    "restore": _restore,
}


async def _edit(app: Any, edit: Edit, deleted: bool = False) -> None:
    """The edit by the ORM, as the application writes, on the aided mode's first object."""
    async with app.state.sessionmaker() as session, session.begin():
        annotation = await session.scalar(
            select(Annotation)
            .where(Annotation.mode == "aided", Annotation.deleted.is_(deleted))
            .order_by(Annotation.id)
            .limit(1)
        )
        assert annotation is not None
        await edit(session, annotation)


async def _from_scratch(app: Any, study_id: int) -> tuple[repository.StudyRows, dict[str, Any]]:
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(delete(ObjectColumns))
    return await _read(app, study_id), await _metrics(app, study_id)


@pytest.mark.parametrize("kind", list(EDITS))
async def test_an_edit_reads_only_its_group_and_equals_a_read_from_scratch(
    app: Any, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(repository, "SPLICED_GROUPS_AT_MOST", 1.0)  # a tiny study: always splice
    study_id = await _study(app)
    before = await _read(app, study_id)
    fetched: list[Any] = []
    real_fetch = repository._fetch

    def fetch(cursor: Any, query: Any, parameters: dict[str, Any]) -> Any:
        fetched.append(query)
        return real_fetch(cursor, query, parameters)

    monkeypatch.setattr(repository, "_fetch", fetch)
    await _edit(app, EDITS[kind], deleted=kind == "restore")
    edited = await _read(app, study_id)
    after = await _metrics(app, study_id)
    monkeypatch.setattr(repository, "_fetch", real_fetch)
    scratch, scratch_metrics = await _from_scratch(app, study_id)

    (task,) = edited.rebuilt
    assert not np.array_equal(edited.objects[task], before.objects[task])
    assert np.array_equal(edited.objects[task], scratch.objects[task])
    assert np.array_equal(edited.rebuilt[task].groups, scratch.rebuilt[task].groups)
    assert after == scratch_metrics
    (queries,) = repository._COMPILED_QUERIES.values()
    assert queries.changed_annotations in fetched
    assert queries.annotations not in fetched


async def test_edits_one_after_another_stay_equal_to_a_read_from_scratch(app: Any) -> None:
    study_id = await _study(app)
    for kind, edit in EDITS.items():
        await _read(app, study_id)
        await _edit(app, edit, deleted=kind == "restore")
    edited = await _read(app, study_id)
    scratch, _ = await _from_scratch(app, study_id)
    assert edited.objects.keys() == scratch.objects.keys()
    for task, table in edited.objects.items():
        assert np.array_equal(table, scratch.objects[task])


async def test_a_write_that_leaves_the_version_is_still_seen(app: Any) -> None:
    study_id = await _study(app)
    await _read(app, study_id)
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(
            update(Annotation).where(Annotation.mode == "aided").values(y2=Annotation.y2 - 1)
        )
    edited = await _read(app, study_id)
    scratch, _ = await _from_scratch(app, study_id)
    for task, table in edited.objects.items():
        assert np.array_equal(table, scratch.objects[task])


async def test_a_raised_revision_without_a_changed_group_stores_only_the_revision(app: Any) -> None:
    study_id = await _study(app)
    await _read(app, study_id)
    async with app.state.sessionmaker() as session:
        (stored_before,) = (await session.execute(select(ObjectColumns.payload, ObjectColumns.groups))).all()
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(update(Task).values(objects_revision=Task.objects_revision + 1))
    raised = await _read(app, study_id)
    (task,) = raised.rebuilt
    assert raised.rebuilt[task].unchanged_since is not None
    async with app.state.sessionmaker() as session:
        revision = await session.scalar(select(task_objects_revision(Task.id)).where(Task.id == task))
        stored = (
            await session.execute(select(ObjectColumns.revision, ObjectColumns.payload, ObjectColumns.groups))
        ).one()
    assert stored.revision == revision
    assert (stored.payload, stored.groups) == tuple(stored_before)
    again = await _read(app, study_id)
    assert again.rebuilt == {}
    assert np.array_equal(again.objects[task], raised.objects[task])


async def test_a_revision_is_not_moved_onto_a_row_another_store_replaced(app: Any) -> None:
    study_id = await _study(app)
    await _read(app, study_id)
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(update(Task).values(objects_revision=Task.objects_revision + 1))
    async with app.state.sessionmaker() as session:
        raised = await repository.read_study(session, study_id)
    async with app.state.sessionmaker() as session, session.begin():  # another reader's store meanwhile
        await session.execute(update(ObjectColumns).values(revision=ObjectColumns.revision - 1))
    async with app.state.sessionmaker() as session:
        await repository.store_derived_object_columns(session, raised)
        stored = await session.scalar(select(ObjectColumns.revision))
    (task,) = raised.rebuilt
    assert stored != raised.rebuilt[task].revision
    assert (await _read(app, study_id)).rebuilt  # still stale, so the next read checks it again


async def test_metrics_after_a_deleted_image_equal_those_from_scratch(app: Any) -> None:
    # The image's annotations go by cascade after the image row: the triggers find no task to raise (as
    # before 0013), the stored table keeps the rows of the gone image, and the metrics leave them out.
    study_id = await _study(app)
    await _read(app, study_id)
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(delete(Image).where(Image.name == "b.png"))
    after = await _metrics(app, study_id)
    _, scratch_metrics = await _from_scratch(app, study_id)
    assert after == scratch_metrics


@pytest.mark.parametrize("kind", ["move", "relabel", "soft delete"])
async def test_after_an_edit_only_the_edited_mode_is_computed_and_equals_a_computation_from_scratch(
    app: Any, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    study_id = await _study(app)
    await _metrics(app, study_id)  # every result and mode part kept
    computed: list[str] = []
    real_parts = service.modes_parts

    def parts(task: Any, modes: list[str], params: MetricsParams) -> dict[str, service.ModeParts]:
        computed.extend(modes)
        return real_parts(task, modes, params)

    monkeypatch.setattr(service, "modes_parts", parts)
    await _edit(app, EDITS[kind])
    async with app.state.sessionmaker() as session:
        study = await find_study(session, str(study_id))
        kept = (await study_metrics(session, study, MetricsParams())).model_dump(
            mode="json", exclude={"timing"}
        )
    assert computed == ["aided"]
    assert kept == await _metrics(app, study_id)
