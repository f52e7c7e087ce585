"""Login: failures counted per account and per address in the database, 429 with Retry-After at the limit,
and the same argon2 work for an unknown user as for a wrong password."""

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Literal

import pytest
from argon2 import PasswordHasher
from httpx import ASGITransport, AsyncClient
from sqlalchemy import select, update

from app.config import Settings
from app.main import create_app
from app.models import LoginFailures
from app.models.base import utcnow
from tests.factories import PASSWORD, make_user

PER_ACCOUNT = 3
PER_ADDRESS = 5
WINDOW_SECONDS = 600


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        argon2_time_cost=1,
        argon2_memory_kib=64,
        login_max_failures_per_account=PER_ACCOUNT,
        login_max_failures_per_address=PER_ADDRESS,
        login_window_seconds=WINDOW_SECONDS,
    )


class CountingHasher(PasswordHasher):
    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=64)
        self.verified = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        self.verified += 1
        return super().verify(hash, password)


def _client(app: object, **headers: str) -> AsyncClient:
    return AsyncClient(transport=ASGITransport(app=app), base_url="http://test", headers=headers)  # type: ignore[arg-type]


async def _login(client: AsyncClient, name: str, password: str) -> int:
    response = await client.post("/login", data={"name": name, "password": password})
    return response.status_code


async def test_unknown_user_costs_one_hash_check_like_a_wrong_password(app):
    await make_user(app, "alice")
    await make_user(app, "tokenonly")
    async with app.state.sessionmaker() as session, session.begin():
        from app.models import User

        await session.execute(update(User).where(User.name == "tokenonly").values(password_hash=None))
    hasher = CountingHasher()
    app.state.password_hasher = hasher
    async with _client(app) as client:
        for name, password, status in [
            ("alice", "wrong-password-1", 422),
            ("nobody", "wrong-password-1", 422),
            ("tokenonly", "wrong-password-1", 422),
            ("alice", PASSWORD, 303),
        ]:
            before = hasher.verified
            assert await _login(client, name, password) == status
            assert hasher.verified - before == 1, name


async def test_failures_per_account_answer_429_with_retry_after_even_for_the_right_password(app):
    await make_user(app, "alice")
    hasher = CountingHasher()
    app.state.password_hasher = hasher
    async with _client(app) as client:
        for attempt in range(PER_ACCOUNT):
            assert await _login(client, "alice", f"wrong-{attempt}-password") == 422
        checked = hasher.verified

        refused = await client.post("/login", data={"name": "alice", "password": PASSWORD})

    assert refused.status_code == 429
    assert 0 < int(refused.headers["Retry-After"]) <= WINDOW_SECONDS
    assert "too many failed logins" in refused.text
    assert "concord_session" not in refused.headers.get("set-cookie", "")
    assert hasher.verified == checked  # refused before any password work


async def test_unknown_names_are_limited_like_known_ones(app):
    async with _client(app) as client:
        statuses = [
            await _login(client, "nobody", f"wrong-{attempt}-pw") for attempt in range(PER_ACCOUNT + 1)
        ]
    assert statuses == [422] * PER_ACCOUNT + [429]


async def test_failures_per_address_limit_guessing_across_accounts(app):
    await make_user(app, "alice")
    async with _client(app) as client:
        statuses = [
            await _login(client, f"user{attempt}", "wrong-password") for attempt in range(PER_ADDRESS)
        ]
        assert statuses == [422] * PER_ADDRESS
        assert await _login(client, "alice", PASSWORD) == 429


async def test_a_success_clears_the_accounts_count(app):
    await make_user(app, "alice")
    async with _client(app) as client:
        for _ in range(PER_ACCOUNT - 1):
            assert await _login(client, "alice", "wrong-password") == 422
        assert await _login(client, "alice", PASSWORD) == 303
        for _ in range(PER_ACCOUNT - 1):
            assert await _login(client, "alice", "wrong-password") == 422
        assert await _login(client, "alice", PASSWORD) == 303


async def test_counters_expire_with_their_window(app, db):
    await make_user(app, "alice")
    async with _client(app) as client:
        for _ in range(PER_ACCOUNT):
            await _login(client, "alice", "wrong-password")
        assert await _login(client, "alice", PASSWORD) == 429
        await db.execute(
            update(LoginFailures).values(window_started_at=utcnow() - timedelta(seconds=WINDOW_SECONDS + 1))
        )
        await db.commit()
        assert await _login(client, "alice", PASSWORD) == 303


async def test_expired_counters_of_other_names_are_pruned(app, db):
    old = utcnow() - timedelta(seconds=WINDOW_SECONDS + 1)
    db.add(LoginFailures(key="account:long-gone", failures=2, window_started_at=old))
    await db.commit()
    async with _client(app) as client:
        assert await _login(client, "someone", "wrong-password") == 422
    keys = set(await db.scalars(select(LoginFailures.key)))
    assert "account:long-gone" not in keys
    assert {"account:someone", "address:127.0.0.1"} <= keys


@pytest.mark.commits  # concurrent requests: one connection cannot hold their transactions side by side
async def test_concurrent_failures_are_all_counted(app, db):
    """The count is one atomic upsert: failures sent at once are neither lost nor answered 5xx."""
    async with _client(app) as client:
        statuses = await asyncio.gather(*(_login(client, "alice", f"wrong-{i}-pw") for i in range(8)))
    assert set(statuses) <= {422, 429}
    failures = await db.scalar(select(LoginFailures.failures).where(LoginFailures.key == "account:alice"))
    assert failures == statuses.count(422)


@pytest.mark.commits  # a second engine, as a second server process has
async def test_counters_hold_across_server_processes(app, settings):
    """A second app with its own engine and pool (as another server process would have) sees the count."""
    await make_user(app, "alice")
    other = create_app(settings)
    async with other.router.lifespan_context(other), _client(app) as first, _client(other) as second:
        for attempt in range(PER_ACCOUNT):
            client = first if attempt % 2 == 0 else second
            assert await _login(client, "alice", "wrong-password") == 422
        assert await _login(second, "alice", PASSWORD) == 429
        assert await _login(first, "alice", PASSWORD) == 429


async def test_forwarded_for_is_ignored_unless_the_proxy_is_trusted(app):
    async with _client(app) as client:
        for attempt in range(PER_ADDRESS):
            forged = {"X-Forwarded-For": f"10.0.0.{attempt}"}
            response = await client.post(
                "/login", data={"name": f"user{attempt}", "password": "wrong-password"}, headers=forged
            )
            assert response.status_code == 422
        assert await _login(client, "user-next", "wrong-password") == 429


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_count(app, settings, another_app):
    trusted_proxy = settings.model_copy(update={"forwarded_allow_ips": "127.0.0.1"})
    async with another_app(trusted_proxy) as trusting, _client(trusting) as client:
        for attempt in range(PER_ADDRESS + 2):
            forwarded = {"X-Forwarded-For": f"10.0.0.{attempt}"}
            response = await client.post(
                "/login", data={"name": f"user{attempt}", "password": "wrong-password"}, headers=forwarded
            )
            assert response.status_code == 422
        async with trusting.state.sessionmaker() as session:
            keys = set(await session.scalars(select(LoginFailures.key)))
    assert {f"address:10.0.0.{attempt}" for attempt in range(PER_ADDRESS + 2)} <= keys
    assert "address:127.0.0.1" not in keys
