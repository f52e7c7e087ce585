"""Disabling a user stops their tokens and browser sessions at once and refuses their login."""

import re

import pytest
from httpx import ASGITransport, AsyncClient

from app.cli import main
from tests.factories import PASSWORD, make_user


async def _log_in(app: object, name: str) -> AsyncClient:
    client = AsyncClient(transport=ASGITransport(app=app), base_url="http://test")  # type: ignore[arg-type]
    response = await client.post("/login", data={"name": name, "password": PASSWORD, "next": "/dashboard"})
    assert response.status_code == 303, response.text
    return client


async def test_disabled_users_tokens_and_sessions_stop_at_once_and_login_is_refused(app, client_for):
    await make_user(app, "admin", "admin")
    alice = await make_user(app, "alice")
    admin = await client_for("admin")
    alice_api = await client_for("alice")
    alice_browser = await _log_in(app, "alice")
    assert (await alice_browser.get("/dashboard")).status_code == 200

    disabled = await admin.post(f"/api/v1/users/{alice.id}/disable")

    assert disabled.status_code == 200
    assert disabled.json()["disabled_at"] is not None
    assert (await alice_api.get("/api/v1/me")).status_code == 401
    assert (await alice_browser.get("/dashboard")).headers["location"].startswith("/login")
    refused = await alice_browser.post("/login", data={"name": "alice", "password": PASSWORD})
    assert refused.status_code == 422
    assert "disabled" in refused.text
    assert "concord_session" not in refused.headers.get("set-cookie", "")

    enabled = await admin.post(f"/api/v1/users/{alice.id}/enable")

    assert enabled.status_code == 200
    assert enabled.json()["disabled_at"] is None
    assert (await alice_api.get("/api/v1/me")).status_code == 200
    await alice_browser.aclose()


async def test_wrong_password_of_a_disabled_user_reads_like_any_wrong_password(app, client_for):
    await make_user(app, "admin", "admin")
    alice = await make_user(app, "alice")
    await (await client_for("admin")).post(f"/api/v1/users/{alice.id}/disable")
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client:
        response = await client.post("/login", data={"name": "alice", "password": "not-the-password"})
    assert response.status_code == 422
    assert "wrong user name or password" in response.text
    assert "disabled" not in response.text


async def test_only_admins_disable_others_and_never_themselves(app, client_for):
    admin_user = await make_user(app, "admin", "admin")
    bob = await make_user(app, "bob")
    await make_user(app, "alice")
    admin = await client_for("admin")
    alice = await client_for("alice")

    assert (await alice.post(f"/api/v1/users/{bob.id}/disable")).status_code == 403
    assert (await admin.post(f"/api/v1/users/{admin_user.id}/disable")).status_code == 409
    assert (await admin.post("/api/v1/users/999999/disable")).status_code == 404
    assert (await admin.get("/api/v1/me")).status_code == 200
    bob_client = await client_for("bob")
    assert (await bob_client.get("/api/v1/me")).status_code == 200


def test_cli_disable_and_enable(tmp_path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("CONCORD_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("CONCORD_DATABASE_URL", raising=False)
    assert main(["migrate"]) == 0
    assert main(["user", "add", "ann", "--role", "expert"]) == 0
    assert main(["user", "token", "ann"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert re.fullmatch(r"cc_\S+", token)

    assert main(["user", "disable", "ann"]) == 0
    assert "disabled ann" in capsys.readouterr().out
    assert _bearer_works(tmp_path, token) is False
    assert main(["user", "enable", "ann"]) == 0
    assert "enabled ann" in capsys.readouterr().out
    assert _bearer_works(tmp_path, token) is True
    assert main(["user", "disable", "nobody"]) == 2
    assert "no user 'nobody'" in capsys.readouterr().err


def _bearer_works(data_dir: object, token: str) -> bool:
    import asyncio

    from app.accounts import service
    from app.config import Settings
    from app.db import make_engine, make_sessionmaker

    async def check() -> bool:
        engine = make_engine(Settings(data_dir=data_dir).resolved_database_url)
        async with make_sessionmaker(engine)() as session:
            user = await service.user_from_bearer(session, token)
        await engine.dispose()
        return user is not None

    return asyncio.run(check())
