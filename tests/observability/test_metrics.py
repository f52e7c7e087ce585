"""/metrics: request latency by route template, edits written, tile cache lookups, job queue and workers."""

import asyncio
from pathlib import Path

import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import write_gate_of
from app.main import create_app
from tests.conftest import ClientFactory
from tests.factories import make_study
from tests.observability.helpers import Samples, parse_samples, value
from tests.worker.helpers import enqueue_sleep, wait_for_status
from worker.runner import Worker, WorkerOptions

BOX = {"label": "tumor", "x1": 5, "y1": 5, "x2": 25, "y2": 25}
LATENCY_COUNT = "concord_http_request_duration_seconds_count"


async def _scrape(client: AsyncClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return parse_samples(response.text)


async def test_latency_is_labelled_by_route_template_never_by_raw_path(
    app: object, anonymous: AsyncClient, client_for: ClientFactory
) -> None:
    setup = await make_study(app, experts=("alice",))
    alice = await client_for("alice")
    route = "/api/v1/images/{image_id}"
    before = await _scrape(anonymous)
    assert (await alice.get(f"/api/v1/images/{setup.images[0].id}")).status_code == 200
    assert (await alice.get(f"/api/v1/images/{setup.images[1].id}")).status_code == 200
    assert (await anonymous.get("/no/such/page")).status_code == 404
    after = await _scrape(anonymous)

    counted = value(after, LATENCY_COUNT, method="GET", route=route, status="200")
    assert counted - value(before, LATENCY_COUNT, method="GET", route=route, status="200") == 2
    unmatched = value(after, LATENCY_COUNT, method="GET", route="unmatched", status="404")
    assert unmatched - value(before, LATENCY_COUNT, method="GET", route="unmatched", status="404") == 1
    routes = {dict(labels).get("route", "") for name, labels in after if name == LATENCY_COUNT}
    assert not any(part.isdigit() or part == "such" for item in routes for part in item.split("/"))


async def test_edits_written_count_committed_events_only(app: object, client_for: ClientFactory) -> None:
    setup = await make_study(app, experts=("alice",))
    alice = await client_for("alice")
    image = setup.images[0].id
    before = await _scrape(alice)
    created = await alice.post(f"/api/v1/images/{image}/annotations?mode=unaided", json=BOX)
    assert created.status_code == 201
    outside = {**BOX, "x2": 100_000}
    assert (
        await alice.post(f"/api/v1/images/{image}/annotations?mode=unaided", json=outside)
    ).status_code == 422
    relabel = {"version": created.json()["version"], "label": "normal"}
    assert (await alice.patch(f"/api/v1/annotations/{created.json()['id']}", json=relabel)).status_code == 200
    after = await _scrape(alice)

    edits = "concord_annotation_edits_total"
    assert value(after, edits, kind="create") - value(before, edits, kind="create") == 1
    assert value(after, edits, kind="relabel") - value(before, edits, kind="relabel") == 1


@pytest.mark.commits  # concurrent edits through the batch writer
async def test_edits_refused_beside_others_in_one_batch_do_not_uncount_them(
    app: object, client_for: ClientFactory
) -> None:
    """Concurrent edits share a transaction on SQLite, each in a savepoint: a refused one rolls back its own
    savepoint only, and the committed ones are all counted."""
    state = app.state  # type: ignore[attr-defined]
    gate = write_gate_of(state.engine)
    if gate is None:
        pytest.skip("only SQLite's write gate can hold a batch back until all its edits queued")
    setup = await make_study(app, experts=("alice",))
    alice = await client_for("alice")
    url = f"/api/v1/images/{setup.images[0].id}/annotations?mode=unaided"
    before = await _scrape(alice)
    bodies = [BOX if index % 2 else {**BOX, "label": "no such label"} for index in range(20)]
    assert state.batch_writer is not None
    opened = await alice.post(f"/api/v1/images/{setup.images[0].id}/open?mode=unaided")
    assert opened.status_code == 200  # the first open is written before the gate is held
    async with gate.held():  # the edits queue up behind the gate and are then written in one batch
        sent = asyncio.gather(*(alice.post(url, json=body) for body in bodies))
        async with asyncio.timeout(20):
            while state.batch_writer.queued() < len(bodies):
                await asyncio.sleep(0.01)
    answers = await sent
    assert sorted(answer.status_code for answer in answers) == [201] * 10 + [422] * 10
    after = await _scrape(alice)
    edits = "concord_annotation_edits_total"
    assert value(after, edits, kind="create") - value(before, edits, kind="create") == 10


async def test_tile_cache_lookups_count_a_miss_then_a_hit(app: object, client_for: ClientFactory) -> None:
    setup = await make_study(app, experts=("alice",))
    alice = await client_for("alice")
    tile = f"/api/v1/images/{setup.images[0].id}/tiles/0/0/0"
    before = await _scrape(alice)
    assert (await alice.get(tile)).status_code == 200
    assert (await alice.get(tile)).status_code == 200
    after = await _scrape(alice)

    lookups = "concord_tile_cache_lookups_total"
    assert value(after, lookups, result="miss") - value(before, lookups, result="miss") == 1
    assert value(after, lookups, result="hit") - value(before, lookups, result="hit") == 1


async def test_queue_depth_and_age_come_from_the_job_table(
    anonymous: AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], tmp_path: Path
) -> None:
    empty = await _scrape(anonymous)
    assert value(empty, "concord_job_queue_depth", kind="sleep") == 0
    assert value(empty, "concord_database_up") == 1
    await enqueue_sleep(sessionmaker, 3, tmp_path, seconds=0)
    await asyncio.sleep(0.05)
    queued = await _scrape(anonymous)
    assert value(queued, "concord_job_queue_depth", kind="sleep") == 3
    assert value(queued, "concord_job_queue_oldest_age_seconds", kind="sleep") > 0
    assert value(queued, "concord_jobs_running", kind="sleep") == 0


@pytest.mark.commits  # a worker with its own engine
async def test_a_running_worker_is_reported_busy_and_forgotten_when_it_stops(
    anonymous: AsyncClient, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings, tmp_path: Path
) -> None:
    [job_id] = await enqueue_sleep(sessionmaker, 1, tmp_path, seconds=60.0, steps=600)
    options = WorkerOptions(name="metrics-worker", lease_s=1.0, poll_interval_s=0.05, once=True)
    worker = Worker(settings, options)
    running = asyncio.create_task(worker.run())
    try:
        await wait_for_status(sessionmaker, job_id, "running")
        for _ in range(200):  # the first lease heartbeat marks the worker busy
            samples = await _scrape(anonymous)
            if value(samples, "concord_worker_busy", worker="metrics-worker") == 1:
                break
            await asyncio.sleep(0.05)
        assert value(samples, "concord_worker_busy", worker="metrics-worker") == 1
        assert 0 <= value(samples, "concord_worker_heartbeat_age_seconds", worker="metrics-worker") < 60
        assert value(samples, "concord_workers_alive") == 1
        assert value(samples, "concord_jobs_running", kind="sleep") == 1
    finally:
        worker.stop.set()
        await running
    gone = await _scrape(anonymous)
    assert ("concord_worker_busy", frozenset({("worker", "metrics-worker")})) not in gone
    assert value(gone, "concord_workers_alive") == 0


@pytest.mark.parametrize(
    ("switch", "header", "status"),
    [
        ({"metrics_enabled": False}, None, 404),
        ({"metrics_token": "scrape-secret"}, None, 401),
        ({"metrics_token": "scrape-secret"}, "Bearer wrong-secret", 401),
        ({"metrics_token": "scrape-secret"}, "Bearer scrape-secret", 200),
    ],
)
async def test_metrics_can_be_switched_off_or_need_a_token(
    settings: Settings, switch: dict[str, object], header: str | None, status: int
) -> None:
    app = create_app(settings.model_copy(update=switch))
    headers = {"Authorization": header} if header else {}
    async with (
        app.router.lifespan_context(app),
        AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client,
    ):
        response = await client.get("/metrics", headers=headers)
    assert response.status_code == status
    if status == 200:
        assert "concord_database_up 1.0" in response.text
    else:
        assert "concord_" not in response.text


class _CountedCalls:
    def __init__(self) -> None:
        self.amounts: list[float] = []

    def inc(self, amount: float = 1) -> None:
        self.amounts.append(amount)


class _Lookups:
    def __init__(self, hits: int, misses: int) -> None:
        self.lookups = (hits, misses)


def test_the_tile_cache_tally_increments_only_the_count_that_changed() -> None:
    """A tile's request changes the hits or the misses: the other counter is not touched (its lock spared)."""
    from app.observability.metrics import TileCacheTally

    tally = TileCacheTally()
    hits, misses = _CountedCalls(), _CountedCalls()
    tally._hits, tally._misses = hits, misses  # type: ignore[assignment]
    cache = _Lookups(0, 0)
    tally.sync(cache)
    for lookups in ((1, 0), (1, 2), (4, 2), (4, 2)):
        cache.lookups = lookups
        tally.sync(cache)
    assert hits.amounts == [1, 3]
    assert misses.amounts == [2]
