"""app/client.py against the app: lost answers and 5xx are retried with the same key, 4xx are not."""

import httpx
import pytest
from httpx import ASGITransport

from app.client import ApiError, ConcordClient, RetryPolicy
from tests.factories import make_study, token_for

FAST = RetryPolicy(attempts=5, first_delay_s=0.001, max_delay_s=0.01)


class FlakyTransport(httpx.AsyncBaseTransport):
    """Passes requests to the app; the first `drops` answers are lost after the app handled the request,
    the first `unavailable` requests are answered 503 without reaching it."""

    def __init__(self, app: object, drops: int = 0, unavailable: int = 0) -> None:
        self.inner = ASGITransport(app=app)  # type: ignore[arg-type]
        self.drops = drops
        self.unavailable = unavailable
        self.keys: list[str | None] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.keys.append(request.headers.get("Idempotency-Key"))
        if self.unavailable:
            self.unavailable -= 1
            return httpx.Response(503, json={"detail": "restarting"})
        response = await self.inner.handle_async_request(request)
        if self.drops:
            self.drops -= 1
            await response.aread()
            raise httpx.ReadError("connection reset", request=request)
        return response


async def _client(app: object, transport: FlakyTransport) -> ConcordClient:
    return ConcordClient("http://test", await token_for(app, "alice"), retry=FAST, transport=transport)


async def test_a_lost_answer_is_retried_with_the_same_key_and_applied_once(app: object) -> None:
    setup = await make_study(app, experts=("alice",))
    transport = FlakyTransport(app, drops=1)
    async with await _client(app, transport) as client:
        edit = await client.create(setup.images[0].id, "unaided", (10, 10, 50, 50), "tumor")
        objects = await client.annotations(setup.images[0].id, "unaided")
    assert transport.keys[:2] == [edit.key, edit.key]
    assert edit.status == 200, "the retry is answered as a replay of the first request"
    assert [obj.id for obj in objects] == [edit.annotation.id]
    assert client.stats.network_errors == 1


async def test_a_5xx_is_retried_and_counted(app: object) -> None:
    setup = await make_study(app, experts=("alice",))
    transport = FlakyTransport(app, unavailable=2)
    async with await _client(app, transport) as client:
        edit = await client.create(setup.images[0].id, "unaided", (10, 10, 50, 50), "tumor")
        moved = await client.update(edit.annotation, box=(20, 20, 60, 60))
    assert edit.status == 201
    assert transport.keys[:3] == [edit.key] * 3
    assert client.stats.errors_5xx == 2
    assert moved.annotation.box == (20, 20, 60, 60)
    assert moved.annotation.version == 2


async def test_a_4xx_is_raised_at_once(app: object) -> None:
    setup = await make_study(app, experts=("alice",))
    transport = FlakyTransport(app)
    async with await _client(app, transport) as client:
        with pytest.raises(ApiError) as raised:
            await client.create(setup.images[0].id, "unaided", (10, 10, 50, 50), "no-such-label")
    assert raised.value.status == 422
    assert len(transport.keys) == 1
