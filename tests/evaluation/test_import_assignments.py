"""The importer finds and makes assignments through the studies service (expert first, then task)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from app.evaluation.importer import ImportFile, ImportRequest, import_exact
from app.models import Assignment, AssignmentStatus, Label, Task
from app.studies import service as studies
from tests.evaluation.test_import import EXPERT_FILE, GT_FILE
from tests.factories import make_user


async def _import(app: Any, request: ImportRequest, text: str) -> Any:
    async with app.state.sessionmaker() as session, session.begin():
        return await import_exact(session, request, [ImportFile("f.txt", text)])


async def _task_whose_id_differs_from(app: Any, user_id: int) -> Task:
    """A task of study S whose id is not the user's, so that swapped ids would miss the assignment."""
    for name in ("T", "T2"):
        report = await _import(app, ImportRequest("S", name, "classify", "ground-truth"), GT_FILE)
        if report.task_id != user_id:
            async with app.state.sessionmaker() as session:
                task = await session.get(Task, int(report.task_id))
            assert isinstance(task, Task)
            return task
    raise AssertionError("two tasks cannot both have the user's id")


async def _assignments(app: Any, task_id: int) -> list[Assignment]:
    async with app.state.sessionmaker() as session:
        query = select(Assignment).where(Assignment.task_id == task_id)
        return list(await session.scalars(query))


async def test_an_import_keeps_the_experts_existing_assignment(app: Any) -> None:
    alice = await make_user(app, "alice")
    task = await _task_whose_id_differs_from(app, alice.id)
    async with app.state.sessionmaker() as session, session.begin():
        existing = await studies.create_assignment(session, task, "alice", "unaided", None)

    await _import(app, ImportRequest("S", task.name, "classify", "expert", mode="unaided"), EXPERT_FILE)

    [kept] = await _assignments(app, task.id)
    assert (kept.id, kept.expert_id, kept.mode) == (existing.id, alice.id, "unaided")


async def test_an_import_without_an_assignment_makes_a_finished_one(app: Any) -> None:
    alice = await make_user(app, "alice")
    task = await _task_whose_id_differs_from(app, alice.id)

    await _import(app, ImportRequest("S", task.name, "classify", "expert", mode="aided"), EXPERT_FILE)

    [made] = await _assignments(app, task.id)
    assert (made.expert_id, made.mode, made.status) == (alice.id, "aided", AssignmentStatus.finished)
    assert made.opened_at is not None
    assert made.opened_at == made.finished_at


async def test_labels_new_to_a_task_follow_its_own(app: Any) -> None:
    await _import(app, ImportRequest("S", "T", "classify", "ground-truth"), GT_FILE)
    more = GT_FILE.replace("Eosinophile", "Lymphocyte")
    await _import(app, ImportRequest("S", "T", "classify", "suggestions"), more)
    async with app.state.sessionmaker() as session:
        labels = list(await session.scalars(select(Label).order_by(Label.position)))
    assert [(label.name, label.position, label.key) for label in labels] == [
        ("Neutrophile", 0, "1"),
        ("Eosinophile", 1, "2"),
        ("Lymphocyte", 2, "3"),
    ]
    assert len({label.colour for label in labels}) == 3
