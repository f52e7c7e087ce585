"""Stored reference columns (ground truth, suggestions, error register): rebuilt after every write that changes
a row of their reads, read when current (no reference query runs), never trusted when damaged."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from sqlalchemy import delete, insert, select, update

from app.evaluation import reference_columns, repository, service
from app.evaluation.importer import ImportRequest
from app.evaluation.reference_columns import References
from app.evaluation.service import MetricsParams, clear_result_cache, find_study, study_metrics
from app.models import (
    GroundTruthObject,
    Image,
    ImagePurpose,
    InjectedError,
    Label,
    ObjectColumns,
    ReferenceColumns,
    Suggestion,
    SuggestionSet,
    Task,
)
from tests.evaluation.test_exports import MORE
from tests.evaluation.test_import import GT_FILE, _import, line

# the tables are stored in a transaction of their own, on a second connection (skipped by a session bound to
# the test's connection): these tests read what that store committed
pytestmark = pytest.mark.commits

SUGGESTIONS = "\n".join([GT_FILE, line("b.png", "Neutrophile", (70, 70, 100, 100))])
Ids = dict[str, int]


async def _study(app: Any) -> int:
    """Task T with ground truth, suggestions, two register kinds (one without a group) and an expert's
    work; task U with ground truth only."""
    report = await _import(app, ImportRequest("S", "T", "classify", "ground-truth"), GT_FILE)
    await _import(app, ImportRequest("S", "T", "classify", "suggestions"), SUGGESTIONS)
    removed = ImportRequest("S", "T", "classify", "injected", error_kind="removed", group=2)
    await _import(app, removed, GT_FILE)
    await _import(app, ImportRequest("S", "T", "classify", "injected", error_kind="false_positive"), GT_FILE)
    await _import(app, ImportRequest("S", "T", "classify", "expert", mode="unaided"), MORE)
    await _import(app, ImportRequest("S", "U", "classify", "ground-truth"), GT_FILE)
    return int(report.study_id)


async def _ids(app: Any) -> Ids:
    """Ids of the rows the writes touch: tasks T and U, T's images, label, sets and first rows."""
    async with app.state.sessionmaker() as session:

        async def first(query: Any) -> int:
            return int(await session.scalar(query.limit(1)))

        tasks = dict((await session.execute(select(Task.name, Task.id))).all())
        of_t = Image.task_id == tasks["T"]
        return {
            "T": tasks["T"],
            "U": tasks["U"],
            "a": await first(select(Image.id).where(of_t, Image.name == "a.png")),
            "b": await first(select(Image.id).where(of_t, Image.name == "b.png")),
            "label": await first(select(Label.id).where(Label.task_id == tasks["T"]).order_by(Label.id)),
            "set": await first(select(SuggestionSet.id).where(SuggestionSet.source == "import")),
            "register": await first(select(SuggestionSet.id).where(SuggestionSet.source == "injected")),
            "truth": await first(select(GroundTruthObject.id).join(Image).where(of_t)),
            "suggestion": await first(select(Suggestion.id).order_by(Suggestion.id)),
            "entry": await first(select(InjectedError.id).order_by(InjectedError.id)),
        }


async def _read(app: Any, study_id: int) -> repository.StudyRows:
    async with app.state.sessionmaker() as session:
        rows = await repository.read_study(session, study_id)
        await repository.store_derived_object_columns(session, rows)
        return rows


async def _write(app: Any, statement: Any) -> None:
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(statement)


async def _metrics(app: Any, study_id: int) -> dict[str, Any]:
    clear_result_cache()
    async with app.state.sessionmaker() as session:
        result = await study_metrics(session, await find_study(session, str(study_id)), MetricsParams())
    return result.model_dump(exclude={"timing"})


async def _reference_revisions(app: Any) -> dict[str, int]:
    async with app.state.sessionmaker() as session:
        return dict((await session.execute(select(Task.name, Task.reference_revision))).all())


def _box(ids: Ids, image: str = "a", x1: float = 120.0) -> dict[str, Any]:
    return {"image_id": ids[image], "label_id": ids["label"], "x1": x1, "y1": 20.0, "x2": x1 + 30, "y2": 50.0}


def _entry(ids: Ids) -> dict[str, Any]:
    box = _box(ids)
    return {
        "suggestion_set_id": ids["register"],
        "image_id": ids["a"],
        "kind": "removed",
        "group": 7,
        "ref_label_id": ids["label"],
        **{f"ref_{name}": box[name] for name in ("x1", "y1", "x2", "y2")},
    }


WRITES: dict[str, Callable[[Ids], Any]] = {
    "insert ground truth": lambda ids: insert(GroundTruthObject).values(_box(ids)),
    "update ground truth": lambda ids: (
        update(GroundTruthObject)
        .where(GroundTruthObject.id == ids["truth"])
        .values(x1=GroundTruthObject.x1 + 1)
    ),
    "delete ground truth": lambda ids: delete(GroundTruthObject).where(GroundTruthObject.id == ids["truth"]),
    "insert a suggestion": lambda ids: insert(Suggestion).values(suggestion_set_id=ids["set"], **_box(ids)),
    "update a suggestion": lambda ids: (
        update(Suggestion).where(Suggestion.id == ids["suggestion"]).values(y2=Suggestion.y2 + 2)
    ),
    "delete a suggestion": lambda ids: delete(Suggestion).where(Suggestion.id == ids["suggestion"]),
    "insert a register entry": lambda ids: insert(InjectedError).values(_entry(ids)),
    "update a register entry": lambda ids: (
        update(InjectedError).where(InjectedError.id == ids["entry"]).values(group=None)
    ),
    "change an entry's kind": lambda ids: (
        update(InjectedError).where(InjectedError.id == ids["entry"]).values(kind="class_changed")
    ),
    "delete a register entry": lambda ids: delete(InjectedError).where(InjectedError.id == ids["entry"]),
    "delete an image (cascade)": lambda ids: delete(Image).where(Image.id == ids["b"]),
    "make an image a practice one": lambda ids: (
        update(Image).where(Image.id == ids["b"]).values(purpose=ImagePurpose.practice.value)
    ),
    "move an image to another task": lambda ids: (
        update(Image).where(Image.id == ids["b"]).values(task_id=ids["U"], name="moved.png")
    ),
    "delete a suggestion set (cascade)": lambda ids: delete(SuggestionSet).where(
        SuggestionSet.id == ids["set"]
    ),
    "delete the register's set (cascade)": lambda ids: delete(SuggestionSet).where(
        SuggestionSet.id == ids["register"]
    ),
    "move a suggestion set to another task": lambda ids: (
        update(SuggestionSet).where(SuggestionSet.id == ids["set"]).values(task_id=ids["U"])
    ),
    "delete a label (cascade, no trigger of its own)": lambda ids: delete(Label).where(
        Label.id == ids["label"]
    ),
}


def _same(first: References, second: References) -> bool:
    return first.kinds == second.kinds and all(
        np.array_equal(one, other, equal_nan=True)
        for one, other in zip(first.tables(), second.tables(), strict=True)
    )


@pytest.mark.parametrize("write", list(WRITES))
async def test_a_write_to_a_reference_row_rebuilds_and_the_metrics_equal_a_fresh_computation(
    app: Any, write: str
) -> None:
    study_id = await _study(app)
    ids = await _ids(app)
    before = await _read(app, study_id)
    assert (await _read(app, study_id)).references_rebuilt == {}
    revisions = await _reference_revisions(app)

    await _write(app, WRITES[write](ids))

    assert (await _reference_revisions(app))["T"] > revisions["T"]
    rebuilt = await _read(app, study_id)
    assert ids["T"] in rebuilt.references_rebuilt
    assert not _same(rebuilt.references[ids["T"]], before.references[ids["T"]])  # the write changed a row
    stored = await _read(app, study_id)
    assert stored.references_rebuilt == {}
    kept = await _metrics(app, study_id)
    await _write(app, delete(ReferenceColumns))
    await _write(app, delete(ObjectColumns))
    fresh = await _read(app, study_id)
    assert set(fresh.references_rebuilt) == {ids["T"], ids["U"]}
    for task_id in (ids["T"], ids["U"]):
        assert _same(stored.references[task_id], fresh.references[task_id])
    assert kept == await _metrics(app, study_id)


async def test_writes_raise_only_their_tasks_revision_and_other_writes_none(app: Any) -> None:
    study_id = await _study(app)
    ids = await _ids(app)
    await _read(app, study_id)
    revisions = await _reference_revisions(app)
    await _write(app, update(Image).where(Image.id == ids["b"]).values(position=9, width=Image.width))
    await _write(app, update(SuggestionSet).where(SuggestionSet.id == ids["set"]).values(notes="seen"))
    await _write(app, update(Label).where(Label.id == ids["label"]).values(colour="#123456"))
    assert await _reference_revisions(app) == revisions
    assert (await _read(app, study_id)).references_rebuilt == {}

    await _write(app, WRITES["update ground truth"](ids))
    raised = await _reference_revisions(app)
    assert raised["U"] == revisions["U"]
    assert raised["T"] > revisions["T"]


@contextmanager
def _reference_queries_run(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The names of the study read's reference queries that ran, observed at the read's one fetch."""
    ran: list[str] = []
    fetch = repository._fetch

    def observed(source: Any, query: Any, parameters: dict[str, Any]) -> Any:
        for queries in repository._COMPILED_QUERIES.values():
            ran.extend(
                name
                for name in ("ground_truth", "suggestions", "injected", "stored_references")
                if getattr(queries, name) is query
            )
        return fetch(source, query, parameters)

    monkeypatch.setattr(repository, "_fetch", observed)
    yield ran


async def test_an_unchanged_study_reads_the_stored_tables_and_no_reference_query(
    app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    study_id = await _study(app)
    ids = await _ids(app)
    with _reference_queries_run(monkeypatch) as ran:
        stored = await _read(app, study_id)
    assert ran == ["stored_references"]  # the import's last step stored them
    assert stored.references_rebuilt == {}
    assert stored.references[ids["T"]].kinds == ("removed", "false_positive")

    await _write(app, WRITES["update a suggestion"](ids))
    with _reference_queries_run(monkeypatch) as ran:
        stale = await _read(app, study_id)
    assert ran == ["stored_references", "ground_truth", "suggestions", "injected"]
    assert list(stale.references_rebuilt) == [ids["T"]]  # U's stored tables still count

    with _reference_queries_run(monkeypatch) as ran:
        await _read(app, study_id)
    assert ran == ["stored_references"]


async def test_null_groups_and_boxes_round_trip_as_today(app: Any) -> None:
    study_id = await _study(app)
    ids = await _ids(app)
    await _write(app, update(InjectedError).where(InjectedError.id == ids["entry"]).values(ref_y2=None))
    rebuilt = await _read(app, study_id)
    stored = await _read(app, study_id)
    assert ids["T"] in rebuilt.references_rebuilt
    assert stored.references_rebuilt == {}

    def register(rows: repository.StudyRows) -> dict[str, list[tuple[int | None, list[Any]]]]:
        task = service.build_tasks(rows)[ids["T"]]
        return {
            kind: [(group, [entries.boxes.tolist(), entries.labels.tolist()]) for group, entries in groups]
            for kind, groups in task.register.items()
        }

    assert register(stored) == register(rebuilt)
    assert [group for group, _ in register(stored)["false_positive"]] == [None]
    table = stored.references[ids["T"]].register
    assert np.isnan(table[:, reference_columns.GROUP]).any()
    assert np.isnan(table[:, -1]).sum() == 1


@pytest.mark.parametrize(
    "damage",
    [
        {"payload": b"\x00" * 5},
        {"payload": b"\xff" * 8 * (6 * 2 + 7 * 3 + 8 * 4)},  # the stored length, every value NaN
        {"kinds": "not json"},
        {"kinds": "[]"},  # codes without names
        {"layout": reference_columns.LAYOUT + 1},
        {"suggestion_rows": 2},
    ],
)
async def test_a_damaged_table_is_rebuilt_never_trusted(app: Any, damage: dict[str, Any]) -> None:
    study_id = await _study(app)
    ids = await _ids(app)
    first = await _read(app, study_id)
    async with app.state.sessionmaker() as session:
        stored = await session.get(ReferenceColumns, ids["T"])
        assert stored is not None
        assert (stored.truth_rows, stored.suggestion_rows, stored.register_rows) == (2, 3, 4)
    expected = await _metrics(app, study_id)
    await _write(app, update(ReferenceColumns).where(ReferenceColumns.task_id == ids["T"]).values(damage))

    again = await _read(app, study_id)
    assert list(again.references_rebuilt) == [ids["T"]]
    assert _same(again.references[ids["T"]], first.references[ids["T"]])
    assert (await _read(app, study_id)).references_rebuilt == {}  # stored whole again
    assert await _metrics(app, study_id) == expected


def test_tables_of_the_drivers_rows_pack_and_unpack_exactly() -> None:
    truth = [(1, 10, 3, 0.1, 0.2, 5.5, 7.25), (2, 11, 4, 1.0, 2.0, 3.0, 4.0)]
    suggestions = [(1, 5, 10, 3, 1.0, 2.0, 3.0, 4.0), (1, 6, 10, 3, 1.5, 2.5, 3.5, 4.5)]
    register = [
        (1, "removed", 2, 10, 3, 0.1, 0.2, 0.3, None),
        (1, "false_positive", None, 10, 3, 1.0, 2.0, 3.0, 4.0),
        (1, "removed", 2**52 + 1, 10, 3, 1.0, 2.0, 3.0, 4.0),
        (2, "duplicate", 1, 11, 4, 1.0, 2.0, 3.0, 4.0),
    ]
    found = reference_columns.by_task(truth, suggestions, register, [1, 2, 3])
    assert found[1].kinds == ("removed", "false_positive")
    assert found[2].kinds == ("duplicate",)
    assert found[1].register[:, reference_columns.KIND].tolist() == [0, 1, 0]
    assert int(found[1].register[2, reference_columns.GROUP]) == 2**52 + 1
    assert [len(table) for table in found[3].tables()] == [0, 0, 0]
    assert found[2].suggestions.shape == (0, 7)
    for references in found.values():
        rows = [len(table) for table in references.tables()]
        unpacked = reference_columns.unpack(
            reference_columns.pack(references), rows, reference_columns.pack_kinds(references)
        )
        assert unpacked is not None
        assert _same(unpacked, references)
    assert reference_columns.unpack(reference_columns.pack(found[1]), [2, 2, 3], '["removed"]') is None
