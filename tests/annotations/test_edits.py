"""An expert's edit sequence: one event per edit, idempotent retries, 409 on stale versions, 422 on bad boxes."""

from typing import Any

from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.annotations import repository
from tests.conftest import ClientFactory
from tests.factories import make_study

KEY = "key-0001-abcdef"


async def _state(client: AsyncClient, image_id: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    objects = (
        await client.get(f"/api/v1/images/{image_id}/annotations?mode=unaided&include_deleted=true")
    ).json()
    events = (await client.get(f"/api/v1/images/{image_id}/events?mode=unaided")).json()
    return objects, events


async def test_edit_sequence_appends_exactly_one_event_per_edit(
    app: object, client_for: ClientFactory
) -> None:
    setup = await make_study(app)
    alice = await client_for("alice")
    image = setup.images[0].id
    url = f"/api/v1/images/{image}/annotations?mode=unaided"

    first = await alice.post(
        url, json={"label": "tumor", "x1": 10, "y1": 10, "x2": 40, "y2": 40, "idempotency_key": KEY}
    )
    assert first.status_code == 201
    created = first.json()
    retry = await alice.post(
        url, json={"label": "tumor", "x1": 10, "y1": 10, "x2": 40, "y2": 40, "idempotency_key": KEY}
    )
    assert retry.status_code == 200
    assert retry.json()["id"] == created["id"]

    moved = await alice.patch(
        f"/api/v1/annotations/{created['id']}",
        json={"version": 1, "x1": 20, "y1": 20, "x2": 50, "y2": 50, "idempotency_key": "key-move-0001"},
    )
    assert moved.status_code == 200
    assert moved.json()["version"] == 2
    relabelled = await alice.patch(
        f"/api/v1/annotations/{created['id']}", json={"version": 2, "label": "normal"}
    )
    assert relabelled.json()["label"] == "normal"
    deleted = await alice.post(f"/api/v1/annotations/{created['id']}/delete", json={"version": 3})
    assert deleted.json()["deleted"] is True
    restored = await alice.post(f"/api/v1/annotations/{created['id']}/restore", json={"version": 4})
    assert restored.json()["deleted"] is False
    assert restored.json()["version"] == 5

    objects, events = await _state(alice, image)
    assert [event["kind"] for event in events] == ["create", "move", "relabel", "delete", "restore"]
    assert events[1]["before"]["x1"] == 10
    assert events[1]["after"]["x1"] == 20
    assert events[2]["before"]["label"] == "tumor"
    assert events[2]["after"]["label"] == "normal"
    assert len(objects) == 1
    assert objects[0]["x1"] == 20
    assert objects[0]["label"] == "normal"


async def test_retried_edit_with_the_same_key_changes_nothing(app: object, client_for: ClientFactory) -> None:
    setup = await make_study(app)
    alice = await client_for("alice")
    image = setup.images[0].id
    created = (
        await alice.post(
            f"/api/v1/images/{image}/annotations?mode=unaided",
            json={"label": "tumor", "x1": 1, "y1": 1, "x2": 30, "y2": 30},
        )
    ).json()
    edit = {"version": 1, "x1": 5, "y1": 5, "x2": 35, "y2": 35}
    headers = {"Idempotency-Key": "retry-key-123"}
    first = await alice.patch(f"/api/v1/annotations/{created['id']}", json=edit, headers=headers)
    second = await alice.patch(f"/api/v1/annotations/{created['id']}", json=edit, headers=headers)
    assert first.status_code == second.status_code == 200
    assert second.json()["version"] == 2
    _, events = await _state(alice, image)
    assert [event["kind"] for event in events] == ["create", "move"]


async def test_stale_version_gets_409_and_changes_nothing(app: object, client_for: ClientFactory) -> None:
    setup = await make_study(app)
    alice = await client_for("alice")
    image = setup.images[0].id
    created = (
        await alice.post(
            f"/api/v1/images/{image}/annotations?mode=unaided",
            json={"label": "tumor", "x1": 1, "y1": 1, "x2": 30, "y2": 30},
        )
    ).json()
    await alice.patch(f"/api/v1/annotations/{created['id']}", json={"version": 1, "label": "normal"})
    stale = await alice.patch(
        f"/api/v1/annotations/{created['id']}", json={"version": 1, "x1": 2, "y1": 2, "x2": 9, "y2": 9}
    )
    assert stale.status_code == 409
    stale_delete = await alice.post(f"/api/v1/annotations/{created['id']}/delete", json={"version": 1})
    assert stale_delete.status_code == 409
    objects, events = await _state(alice, image)
    assert len(events) == 2
    assert objects[0]["x1"] == 1
    assert objects[0]["deleted"] is False
    assert objects[0]["version"] == 2


async def test_an_edit_is_written_only_over_the_version_it_read(
    app: object, client_for: ClientFactory, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    """The write's own optimistic check: another edit committed between an edit's read and its write."""
    setup = await make_study(app)
    alice = await client_for("alice")
    created = (
        await alice.post(
            f"/api/v1/images/{setup.images[0].id}/annotations?mode=unaided",
            json={"label": "tumor", "x1": 1, "y1": 1, "x2": 30, "y2": 30},
        )
    ).json()
    async with sessionmaker() as session:
        read = await session.run_sync(repository.annotation_by_id, created["id"])
        assert read is not None
        assert read.version == 1
    await alice.patch(f"/api/v1/annotations/{created['id']}", json={"version": 1, "label": "normal"})
    read.x1 = 5.0
    async with sessionmaker() as session:
        assert not await session.run_sync(repository.write_edit, read, 1)
        assert await session.run_sync(repository.write_edit, read, 2)
        await session.commit()
    async with sessionmaker() as session:
        stored = await session.run_sync(repository.annotation_by_id, created["id"])
    assert stored is not None
    assert (stored.version, stored.x1, stored.label_id) == (3, 5.0, read.label_id)


async def test_box_outside_image_or_unknown_label_gets_422_and_changes_nothing(
    app: object, client_for: ClientFactory
) -> None:
    setup = await make_study(app)
    alice = await client_for("alice")
    image = setup.images[0]
    url = f"/api/v1/images/{image.id}/annotations?mode=unaided"
    outside = {"label": "tumor", "x1": image.width - 5, "y1": 1, "x2": image.width + 20, "y2": 30}
    assert (await alice.post(url, json=outside)).status_code == 422
    inverted = {"label": "tumor", "x1": 30, "y1": 1, "x2": 10, "y2": 30}
    assert (await alice.post(url, json=inverted)).status_code == 422
    unknown = {"label": "dragon", "x1": 1, "y1": 1, "x2": 10, "y2": 10}
    response = await alice.post(url, json=unknown)
    assert response.status_code == 422
    assert "dragon" in response.json()["detail"]
    bulk = [{"label": "tumor", "x1": 1, "y1": 1, "x2": 10, "y2": 10}, outside]
    assert (
        await alice.post(f"/api/v1/images/{image.id}/annotations/bulk?mode=unaided", json=bulk)
    ).status_code == 422
    objects, events = await _state(alice, image.id)
    assert objects == []
    assert events == []


async def test_bulk_upload_creates_each_object_with_an_event(app: object, client_for: ClientFactory) -> None:
    setup = await make_study(app)
    alice = await client_for("alice")
    image = setup.images[1].id
    items = [{"label": "tumor", "x1": i * 10 + 1, "y1": 5, "x2": i * 10 + 9, "y2": 15} for i in range(5)]
    response = await alice.post(f"/api/v1/images/{image}/annotations/bulk?mode=unaided", json=items)
    assert response.status_code == 201
    objects, events = await _state(alice, image)
    assert [obj["x1"] for obj in objects] == [1, 11, 21, 31, 41]
    assert len(events) == 5


async def test_finished_assignment_refuses_edits(app: object, client_for: ClientFactory) -> None:
    setup = await make_study(app)
    alice = await client_for("alice")
    assignment = (await alice.get("/api/v1/assignments")).json()[0]
    finished = await alice.post(f"/api/v1/assignments/{assignment['id']}/finish")
    assert finished.status_code == 200
    retried = await alice.post(f"/api/v1/assignments/{assignment['id']}/finish")  # its answer was lost
    assert retried.status_code == 200
    assert retried.json()["finished_at"] == finished.json()["finished_at"]
    url = f"/api/v1/images/{setup.images[0].id}/annotations?mode=unaided"
    response = await alice.post(url, json={"label": "tumor", "x1": 1, "y1": 1, "x2": 9, "y2": 9})
    assert response.status_code == 409
