"""Visits: open, heartbeats and close give active seconds; idle gaps beyond the limit do not count."""

from datetime import timedelta

from app.annotations.service import record_presence
from app.models import ImageVisit
from app.models.base import utcnow
from tests.conftest import ClientFactory
from tests.factories import make_study


def _visit(seconds_ago: float) -> ImageVisit:
    then = utcnow() - timedelta(seconds=seconds_ago)
    return ImageVisit(
        image_id=1, expert_id=1, mode="unaided", opened_at=then, last_seen_at=then, active_seconds=0.0
    )


def test_heartbeat_counts_elapsed_time_up_to_the_idle_limit() -> None:
    visit = _visit(20)
    now = visit.last_seen_at + timedelta(seconds=20)
    record_presence(visit, 60.0, active=True, close=False, now=now)
    assert visit.active_seconds == 20
    record_presence(visit, 60.0, active=True, close=False, now=now + timedelta(seconds=500))
    assert visit.active_seconds == 80
    record_presence(visit, 60.0, active=False, close=True, now=now + timedelta(seconds=510))
    assert visit.active_seconds == 80
    assert visit.closed_at is not None


async def test_visit_lifecycle_over_the_api(app: object, client_for: ClientFactory) -> None:
    setup = await make_study(app)
    alice = await client_for("alice")
    image = setup.images[0].id
    opened = await alice.post(f"/api/v1/images/{image}/visits?mode=unaided")
    assert opened.status_code == 201
    visit = opened.json()
    assert (
        await alice.post(f"/api/v1/visits/{visit['id']}/heartbeat", json={"active": True})
    ).status_code == 200
    closed = await alice.post(f"/api/v1/visits/{visit['id']}/close")
    assert closed.status_code == 200
    assert closed.json()["closed_at"] is not None
    assert (await alice.post(f"/api/v1/visits/{visit['id']}/heartbeat")).status_code == 409
    retried = await alice.post(f"/api/v1/visits/{visit['id']}/close", json={"active": True})
    assert retried.status_code == 200
    assert retried.json() == closed.json()
    visits = (await alice.get(f"/api/v1/images/{image}/visits?mode=unaided")).json()
    assert [item["id"] for item in visits] == [visit["id"]]
    assert visits[0]["active_seconds"] >= 0
