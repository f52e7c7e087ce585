"""A task's objects revision rises with every annotation write, and (on PostgreSQL) two experts writing
objects of one task do not wait for each other's transaction."""

from itertools import pairwise
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, text, update
from sqlalchemy.exc import DBAPIError

from app.models import Annotation, Task
from app.models.annotation import task_objects_revision
from app.models.base import utcnow
from tests.conftest import ADMIN_DATABASE_URL
from tests.factories import StudySetup, make_study


def _row(setup: StudySetup, expert: int, x1: float = 5.0) -> dict[str, Any]:
    now = utcnow()
    return {
        "image_id": setup.images[0].id,
        "expert_id": setup.experts[expert].id,
        "mode": "unaided",
        "label_id": setup.labels[0].id,
        "x1": x1,
        "y1": 5.0,
        "x2": x1 + 10,
        "y2": 15.0,
        "origin": "expert",
        "deleted": False,
        "version": 1,
        "position": 0,
        "created_at": now,
        "updated_at": now,
    }


async def _revision(app: Any, task_id: int) -> int:
    async with app.state.sessionmaker() as session:
        return int(await session.scalar(select(task_objects_revision(Task.id)).where(Task.id == task_id)))


async def _write(app: Any, statement: Any) -> None:
    async with app.state.sessionmaker() as session, session.begin():
        await session.execute(statement)


async def test_every_insert_update_and_delete_raises_the_revision(app: Any) -> None:
    setup = await make_study(app)
    other = await make_study(app, experts=("carol",))
    revisions = [await _revision(app, setup.task.id)]
    await _write(app, insert(Annotation).values(_row(setup, 0)))
    revisions.append(await _revision(app, setup.task.id))
    await _write(app, update(Annotation).values(x1=Annotation.x1 + 1))
    revisions.append(await _revision(app, setup.task.id))
    await _write(app, insert(Annotation).values(_row(setup, 1)))
    revisions.append(await _revision(app, setup.task.id))
    await _write(app, delete(Annotation))
    revisions.append(await _revision(app, setup.task.id))
    assert all(later > earlier for earlier, later in pairwise(revisions))
    assert await _revision(app, other.task.id) == 0  # another task's writes never move it


@pytest.mark.commits  # two connections, each with a transaction of its own
@pytest.mark.skipif(not ADMIN_DATABASE_URL.startswith("postgresql"), reason="row locks of PostgreSQL")
async def test_two_experts_write_one_task_without_waiting_for_each_other(app: Any) -> None:
    setup = await make_study(app)
    engine = app.state.engine
    async with engine.connect() as first, engine.connect() as second:
        await first.execute(insert(Annotation).values(_row(setup, 0)))  # not committed yet
        await second.execute(text("SET LOCAL lock_timeout = '2s'"))
        try:
            await second.execute(insert(Annotation).values(_row(setup, 1, x1=40.0)))
        except DBAPIError as error:  # before migration 0014: both waited for the task row's lock
            pytest.fail(f"the second expert's insert waited for the first's transaction: {error}")
        await second.commit()
        await first.commit()
    assert await _revision(app, setup.task.id) >= 2
