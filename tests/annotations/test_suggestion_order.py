"""Injected fakes are not recognisable by position: an aided expert's copy of a suggestion set is shuffled,
so the rank (by id, the order experts see) of injected objects among an image's objects is like the others'."""

import numpy as np
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import Annotation, Assignment, Suggestion, SuggestionSet
from tests.conftest import ClientFactory
from tests.factories import StudySetup, make_study

EXPERTS = ("e1", "e2", "e3", "e4", "e5", "e6")
IMAGES = 8
GENUINE = 6
FAKES = 2


async def _set_with_fakes_last(db: AsyncSession, task_id: int, image_ids: list[int], label_id: int) -> int:
    """A set as injection makes it: per image the genuine objects, then the injected fakes appended last."""
    suggestion_set = SuggestionSet(task_id=task_id, name="injected", source="injected")
    db.add(suggestion_set)
    await db.flush()
    for image_id in image_ids:
        for position in range(GENUINE + FAKES):
            x = 5 + 20 * position
            db.add(
                Suggestion(
                    suggestion_set_id=suggestion_set.id,
                    image_id=image_id,
                    label_id=label_id,
                    x1=x,
                    y1=10,
                    x2=x + 15,
                    y2=25,
                    score=0.9,
                    position=position,
                )
            )
    await db.flush()
    return suggestion_set.id


async def test_injected_objects_have_the_same_rank_as_the_others(
    app: object, client_for: ClientFactory, db: AsyncSession
) -> None:
    setup = await make_study(app, experts=EXPERTS, modes=("aided",), image_count=IMAGES)
    image_ids = [image.id for image in setup.images]
    set_id = await _set_with_fakes_last(db, setup.task.id, image_ids, setup.labels[0].id)
    for assignment in await db.scalars(select(Assignment).where(Assignment.task_id == setup.task.id)):
        assignment.suggestion_set_id = set_id
    fakes = set(
        await db.scalars(
            select(Suggestion.id).where(
                Suggestion.position >= GENUINE, Suggestion.suggestion_set_id == set_id
            )
        )
    )
    await db.commit()

    ranks: list[float] = []
    orders: dict[int, set[tuple[int | None, ...]]] = {image_id: set() for image_id in image_ids}
    for name in EXPERTS:
        client = await client_for(name)
        for image_id in image_ids:
            response = await client.post(f"/api/v1/images/{image_id}/open?mode=aided")
            assert response.status_code == 200, response.text
            seen = [item["id"] for item in response.json()]
            assert seen == sorted(seen)
            by_id = {row.id: row.suggestion_id for row in await _copies(db, image_id, name, setup)}
            copied = [by_id[annotation_id] for annotation_id in seen]
            assert len(copied) == GENUINE + FAKES
            ranks += [rank / (len(copied) - 1) for rank, source in enumerate(copied) if source in fakes]
            orders[image_id].add(tuple(copied))
            again = await client.get(f"/api/v1/images/{image_id}/annotations?mode=aided")
            assert [item["id"] for item in again.json()] == seen

    assert len(ranks) == len(EXPERTS) * IMAGES * FAKES
    # Uniform ranks on {0, 1/7, …, 1}: mean 0.5, sd 0.33, so the mean of 96 lies within 0.5 ± 0.14 (4 sd);
    # fakes appended last give 0.93.
    assert abs(float(np.mean(ranks)) - 0.5) < 0.14
    assert float(np.mean(np.array(ranks) >= (GENUINE / (GENUINE + FAKES - 1)))) < 0.5
    assert all(len(seen_orders) > 1 for seen_orders in orders.values())  # each expert gets their own order


async def _copies(db: AsyncSession, image_id: int, name: str, setup: StudySetup) -> list[Annotation]:
    expert = next(user for user in setup.experts if user.name == name)
    db.expire_all()
    query = select(Annotation).where(
        Annotation.image_id == image_id, Annotation.expert_id == expert.id, Annotation.mode == "aided"
    )
    return list(await db.scalars(query))
