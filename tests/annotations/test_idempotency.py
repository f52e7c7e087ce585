"""Defect 7: same idempotency key, same answer, always; the same key with another request is 422.

Concurrent retries race their original through the real database (asyncio.gather over one app), on SQLite
and on PostgreSQL alike.
"""

import asyncio
from typing import Any

import pytest
from httpx import ASGITransport, AsyncClient, Response

from app.config import Settings
from tests.conftest import AppStarter, ClientFactory
from tests.factories import make_study

RETRIES = 12


async def _objects_and_events(client: AsyncClient, image_id: int) -> tuple[list[Any], list[Any]]:
    objects = (
        await client.get(f"/api/v1/images/{image_id}/annotations?mode=unaided&include_deleted=true")
    ).json()
    events = (await client.get(f"/api/v1/images/{image_id}/events?mode=unaided")).json()
    return objects, events


def _one_answer(responses: list[Response]) -> Any:
    bodies = [response.json() for response in responses]
    assert all(body == bodies[0] for body in bodies), "retries with one key got different answers"
    return bodies[0]


@pytest.mark.commits  # concurrent requests, each in its own transaction
async def test_concurrent_retries_of_a_create_get_the_same_object(
    app: object, client_for: ClientFactory
) -> None:
    setup = await make_study(app)
    alice = await client_for("alice")
    image = setup.images[0].id
    url = f"/api/v1/images/{image}/annotations?mode=unaided"
    assert (await alice.get(url)).status_code == 200  # the first open would queue the racers up
    box = {"label": "tumor", "x1": 10, "y1": 10, "x2": 40, "y2": 40}
    headers = {"Idempotency-Key": "create-race-0001"}
    responses = await asyncio.gather(*(alice.post(url, json=box, headers=headers) for _ in range(RETRIES)))
    assert sorted(response.status_code for response in responses) == [200] * (RETRIES - 1) + [201]
    answer = _one_answer(responses)
    objects, events = await _objects_and_events(alice, image)
    assert [item["id"] for item in objects] == [answer["id"]]
    assert [event["kind"] for event in events] == ["create"]


@pytest.mark.commits  # concurrent requests, each in its own transaction
async def test_concurrent_retries_of_a_move_are_not_told_409(app: object, client_for: ClientFactory) -> None:
    setup = await make_study(app)
    alice = await client_for("alice")
    image = setup.images[0].id
    box = {"label": "tumor", "x1": 10, "y1": 10, "x2": 40, "y2": 40}
    created = (await alice.post(f"/api/v1/images/{image}/annotations?mode=unaided", json=box)).json()
    move = {"version": 1, "x1": 20, "y1": 20, "x2": 50, "y2": 50}
    headers = {"Idempotency-Key": "move-race-0001"}
    url = f"/api/v1/annotations/{created['id']}"
    responses = await asyncio.gather(*(alice.patch(url, json=move, headers=headers) for _ in range(RETRIES)))
    assert [response.status_code for response in responses] == [200] * RETRIES
    answer = _one_answer(responses)
    assert answer["version"] == 2
    assert answer["x1"] == 20
    _, events = await _objects_and_events(alice, image)
    assert [event["kind"] for event in events] == ["create", "move"]


async def test_a_retry_gets_the_first_answer_even_after_later_edits(
    app: object, client_for: ClientFactory
) -> None:
    setup = await make_study(app)
    alice = await client_for("alice")
    url = f"/api/v1/images/{setup.images[0].id}/annotations?mode=unaided"
    box = {"label": "tumor", "x1": 10, "y1": 10, "x2": 40, "y2": 40, "idempotency_key": "create-then-move"}
    first = await alice.post(url, json=box)
    moved = await alice.patch(
        f"/api/v1/annotations/{first.json()['id']}", json={"version": 1, "label": "normal"}
    )
    assert moved.status_code == 200
    retry = await alice.post(url, json=box)
    assert retry.status_code == 200
    assert retry.json() == first.json()


async def test_a_key_reused_for_another_request_is_422_and_changes_nothing(
    app: object, client_for: ClientFactory
) -> None:
    setup = await make_study(app)
    alice = await client_for("alice")
    first_image, other_image = (image.id for image in setup.images[:2])
    key = {"Idempotency-Key": "used-once-0001"}
    box = {"label": "tumor", "x1": 10, "y1": 10, "x2": 40, "y2": 40}
    created = await alice.post(
        f"/api/v1/images/{first_image}/annotations?mode=unaided", json=box, headers=key
    )
    assert created.status_code == 201

    on_another_image = await alice.post(
        f"/api/v1/images/{other_image}/annotations?mode=unaided", json=box, headers=key
    )
    with_another_box = await alice.post(
        f"/api/v1/images/{first_image}/annotations?mode=unaided", json={**box, "x2": 41}, headers=key
    )
    as_a_move = await alice.patch(
        f"/api/v1/annotations/{created.json()['id']}",
        json={"version": 1, "x1": 1, "y1": 1, "x2": 9, "y2": 9},
        headers=key,
    )
    assert [on_another_image.status_code, with_another_box.status_code, as_a_move.status_code] == [422] * 3
    assert "idempotency key" in on_another_image.json()["detail"]

    second = (await alice.post(f"/api/v1/images/{other_image}/annotations?mode=unaided", json=box)).json()
    move = {"version": 1, "label": "normal"}
    moved_key = {"Idempotency-Key": "move-first-0001"}
    assert (
        await alice.patch(f"/api/v1/annotations/{created.json()['id']}", json=move, headers=moved_key)
    ).is_success
    on_another_object = await alice.patch(f"/api/v1/annotations/{second['id']}", json=move, headers=moved_key)
    assert on_another_object.status_code == 422

    objects, events = await _objects_and_events(alice, first_image)
    assert [(item["x1"], item["label"], item["version"]) for item in objects] == [(10, "normal", 2)]
    assert [event["kind"] for event in events] == ["create", "relabel"]
    other_objects, other_events = await _objects_and_events(alice, other_image)
    assert [item["label"] for item in other_objects] == ["tumor"]
    assert len(other_events) == 1


@pytest.mark.commits  # concurrent requests, each in its own transaction
async def test_bulk_upload_retried_with_its_key_returns_the_same_objects(
    app: object, client_for: ClientFactory
) -> None:
    setup = await make_study(app)
    alice = await client_for("alice")
    image = setup.images[1].id
    url = f"/api/v1/images/{image}/annotations/bulk?mode=unaided"
    items = [{"label": "tumor", "x1": i * 10 + 1, "y1": 5, "x2": i * 10 + 9, "y2": 15} for i in range(4)]
    headers = {"Idempotency-Key": "bulk-upload-0001"}
    first = await alice.post(url, json=items, headers=headers)
    assert first.status_code == 201
    retries = await asyncio.gather(*(alice.post(url, json=items, headers=headers) for _ in range(4)))
    assert [response.status_code for response in retries] == [200] * 4
    assert _one_answer([first, *retries]) == first.json()
    objects, events = await _objects_and_events(alice, image)
    assert sorted(item["id"] for item in objects) == sorted(item["id"] for item in first.json())
    assert len(events) == 4
    changed = await alice.post(url, json=items[:3], headers=headers)
    assert changed.status_code == 422


@pytest.mark.commits  # concurrent requests, each in its own transaction
async def test_concurrent_first_bulk_uploads_with_one_key_create_once(
    app: object, client_for: ClientFactory
) -> None:
    setup = await make_study(app)
    alice = await client_for("alice")
    image = setup.images[1].id
    url = f"/api/v1/images/{image}/annotations/bulk?mode=unaided"
    items = [{"label": "normal", "x1": i * 10 + 1, "y1": 5, "x2": i * 10 + 9, "y2": 15} for i in range(3)]
    headers = {"Idempotency-Key": "bulk-race-00001"}
    responses = await asyncio.gather(*(alice.post(url, json=items, headers=headers) for _ in range(6)))
    assert sorted(response.status_code for response in responses) == [200] * 5 + [201]
    answer = _one_answer(responses)
    objects, _ = await _objects_and_events(alice, image)
    assert sorted(item["id"] for item in objects) == sorted(item["id"] for item in answer)


@pytest.mark.commits  # two apps, each with its own engine and batch writer, as two server processes
async def test_concurrent_retries_through_two_server_processes_get_one_answer(
    app: object, settings: Settings, another_app: AppStarter, client_for: ClientFactory
) -> None:
    """Retries split over two processes meet in different batches: the later one waits for the earlier
    one's commit and answers its object."""
    setup = await make_study(app)
    alice = await client_for("alice")
    image = setup.images[0].id
    url = f"/api/v1/images/{image}/annotations?mode=unaided"
    assert (await alice.get(url)).status_code == 200
    box = {"label": "tumor", "x1": 10, "y1": 10, "x2": 40, "y2": 40}
    headers = {"Idempotency-Key": "two-process-race-0001"}
    async with another_app(settings) as other:
        transport = ASGITransport(app=other)
        async with AsyncClient(
            transport=transport, base_url="http://test", headers=alice.headers
        ) as other_side:
            responses = await asyncio.gather(
                *(
                    (alice if index % 2 else other_side).post(url, json=box, headers=headers)
                    for index in range(RETRIES)
                )
            )
    assert sorted(response.status_code for response in responses) == [200] * (RETRIES - 1) + [201]
    answer = _one_answer(responses)
    objects, events = await _objects_and_events(alice, image)
    assert [item["id"] for item in objects] == [answer["id"]]
    assert [event["kind"] for event in events] == ["create"]
