"""Personal API tokens: listed without their secrets, revoked at once, expiring, on the API and the CLI."""

from datetime import timedelta

import pytest
from httpx import ASGITransport, AsyncClient
from sqlalchemy import update

from app.cli import main
from app.models import ApiToken
from app.models.base import utcnow
from tests.conftest import ClientFactory
from tests.factories import make_user


def _bearer(app: object, token: str) -> AsyncClient:
    transport = ASGITransport(app=app)  # type: ignore[arg-type]
    return AsyncClient(
        transport=transport, base_url="http://test", headers={"Authorization": f"Bearer {token}"}
    )


async def test_new_tokens_expire_by_default_and_the_list_never_shows_a_secret(app, client_for):
    await make_user(app, "alice")
    alice = await client_for("alice")
    default = (await alice.post("/api/v1/me/tokens")).json()["token"]
    short = (await alice.post("/api/v1/me/tokens", json={"expires_days": 7})).json()["token"]

    listed = await alice.get("/api/v1/me/tokens")

    assert listed.status_code == 200
    rows = listed.json()
    assert len(rows) == 3  # the client's own token too
    assert all(set(row) == {"id", "created_at", "expires_at", "last_used_at"} for row in rows)
    assert default not in listed.text
    assert short not in listed.text
    expiries = sorted(row["expires_at"] for row in rows[1:])
    now = utcnow()
    assert expiries[0][:10] == (now + timedelta(days=7)).date().isoformat()
    assert expiries[1][:10] == (now + timedelta(days=90)).date().isoformat()
    assert rows[0]["last_used_at"] is not None  # the client authenticated with it


async def test_expiry_outside_one_to_3650_days_is_refused(app, client_for):
    await make_user(app, "alice")
    alice = await client_for("alice")
    for days in (0, -1, 3651):
        response = await alice.post("/api/v1/me/tokens", json={"expires_days": days})
        assert response.status_code == 422
    assert len((await alice.get("/api/v1/me/tokens")).json()) == 1


async def test_revoking_an_own_token_stops_it_at_once_and_leaves_the_others(app, client_for):
    await make_user(app, "alice")
    alice = await client_for("alice")
    spare = (await alice.post("/api/v1/me/tokens")).json()["token"]
    spare_id = (await alice.get("/api/v1/me/tokens")).json()[-1]["id"]
    async with _bearer(app, spare) as spare_client:
        assert (await spare_client.get("/api/v1/me")).status_code == 200

        revoked = await alice.delete(f"/api/v1/me/tokens/{spare_id}")

        assert revoked.status_code == 204
        assert (await spare_client.get("/api/v1/me")).status_code == 401
    assert (await alice.get("/api/v1/me")).status_code == 200
    assert (await alice.delete(f"/api/v1/me/tokens/{spare_id}")).status_code == 404


async def test_another_users_token_cannot_be_revoked_or_listed(app, client_for: ClientFactory):
    await make_user(app, "alice")
    await make_user(app, "bob")
    alice = await client_for("alice")
    bob = await client_for("bob")
    bob_token_id = (await bob.get("/api/v1/me/tokens")).json()[0]["id"]

    assert (await alice.delete(f"/api/v1/me/tokens/{bob_token_id}")).status_code == 404

    assert (await bob.get("/api/v1/me")).status_code == 200
    assert bob_token_id not in [row["id"] for row in (await alice.get("/api/v1/me/tokens")).json()]


async def test_an_expired_token_is_refused(app, client_for, db):
    await make_user(app, "alice")
    alice = await client_for("alice")
    assert (await alice.get("/api/v1/me")).status_code == 200

    await db.execute(update(ApiToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    await db.commit()

    response = await alice.get("/api/v1/me")
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_cli_issues_lists_and_revokes_tokens(tmp_path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("CONCORD_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("CONCORD_DATABASE_URL", raising=False)
    assert main(["migrate"]) == 0
    assert main(["user", "add", "ann", "--role", "expert"]) == 0
    capsys.readouterr()

    assert main(["user", "token", "ann", "--expires", "7"]) == 0
    week = capsys.readouterr().out.strip()
    assert main(["user", "token", "ann", "--expires", "0"]) == 0
    forever = capsys.readouterr().out.strip()
    assert main(["user", "tokens", "ann"]) == 0
    listing = capsys.readouterr().out

    assert week.startswith("cc_")
    assert forever.startswith("cc_")
    assert week not in listing
    assert forever not in listing
    lines = listing.splitlines()[1:]
    assert len(lines) == 2
    assert (utcnow() + timedelta(days=7)).date().isoformat() in lines[0]
    assert "never" in lines[1]

    token_id = lines[0].split()[0]
    assert main(["user", "revoke", "ann", token_id]) == 0
    capsys.readouterr()
    assert main(["user", "tokens", "ann"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["user", "revoke", "ann", token_id]) == 2
    assert "no token" in capsys.readouterr().err


def test_cli_refuses_a_malformed_expiry(capsys) -> None:
    for value in ("-1", "seven", "3651"):
        with pytest.raises(SystemExit) as exit_info:
            main(["user", "token", "ann", "--expires", value])
        assert exit_info.value.code == 2
        assert "DAYS is a whole number" in capsys.readouterr().err
