"""Granted tiles: the descriptor authorises once; the tile route checks the signature alone, with no database
work, and refuses another image, another credential, a tampered or an expired grant."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import fastapi.routing
import pytest
from fastapi.responses import Response
from fastapi.routing import APIRoute
from httpx import AsyncClient
from sqlalchemy import delete
from starlette.routing import Match

from app.errors import Forbidden
from app.images import service
from app.images.api import IMMUTABLE, MEDIA, GrantedTileRoute, ImmutableImage, get_granted_tile
from app.images.tile_grants import MAX_CHECKED, Grant, GrantRefused, TileGrants, parse
from app.images.tiles import EncodeFormat
from app.models import Assignment
from tests.conftest import ClientFactory
from tests.factories import _maker, make_study, make_user
from tests.pages.test_pages import browser_client


async def _tile_url(client: AsyncClient, image_id: int, level: int = 0, col: int = 0, row: int = 0) -> str:
    described = (await client.get(f"/api/v1/images/{image_id}")).json()
    assert described["tile_url_expires_at"] > time.time()
    template: str = described["tile_url"]
    return template.format(level=level, col=col, row=row)


def _with_grant(url: str, grant: str) -> str:
    head, rest = url.split("/granted-tiles/", 1)
    return f"{head}/granted-tiles/{grant}/{rest.split('/', 1)[1]}"


def _grant_of(url: str) -> Grant:
    return parse(url.split("/granted-tiles/", 1)[1].split("/", 1)[0])


class _NoDatabase:
    """Stands in for the session factory: any use fails the request (and the test)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the granted tile route opened a database session")


@asynccontextmanager
async def _without_database(app: Any) -> AsyncIterator[None]:
    kept = app.state.sessionmaker
    app.state.sessionmaker = _NoDatabase()
    try:
        yield
    finally:
        app.state.sessionmaker = kept


async def test_a_granted_tile_is_the_tile_and_needs_no_database(app: Any, client_for: ClientFactory) -> None:
    setup = await make_study(app, experts=("alice",))
    alice = await client_for("alice")
    image_id = setup.images[0].id
    url = await _tile_url(alice, image_id)
    plain = await alice.get(f"/api/v1/images/{image_id}/tiles/0/0/0")
    async with _without_database(app):
        granted = await alice.get(url)
        png = await alice.get(f"{url}?format=png&size=128")
    assert granted.status_code == 200, granted.text
    assert granted.content == plain.content
    assert granted.headers["content-type"] == "image/jpeg"
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    # the security headers and the request id, as on every response
    assert granted.headers["x-content-type-options"] == "nosniff"
    assert "content-security-policy" in granted.headers
    assert "x-request-id" in granted.headers


async def test_a_process_that_did_not_issue_the_grant_reads_the_image_row_once(
    app: Any, client_for: ClientFactory
) -> None:
    setup = await make_study(app, experts=("alice",))
    alice = await client_for("alice")
    url = await _tile_url(alice, setup.images[0].id)
    app.state.image_files = type(app.state.image_files)()  # as another server process, or after a restart
    assert (await alice.get(url)).status_code == 200
    async with _without_database(app):
        assert (await alice.get(url.replace("/0/0/0", "/0/1/0") + "?size=128")).status_code == 200


async def test_grants_are_refused_for_another_image_credential_or_a_tampered_or_expired_grant(
    app: Any, client_for: ClientFactory, anonymous: AsyncClient
) -> None:
    setup = await make_study(app, experts=("alice", "bob"))
    alice, bob = await client_for("alice"), await client_for("bob")
    first, second = setup.images[0].id, setup.images[1].id
    url = await _tile_url(alice, first)
    grant = _grant_of(url)
    assert (await alice.get(url)).status_code == 200
    # bob is assigned too, but the grant is alice's (her credential): refused, as with alice's second token
    assert (await bob.get(url)).status_code == 403
    assert (await (await client_for("alice")).get(url)).status_code == 403
    assert (await anonymous.get(url)).status_code == 401
    # the same grant on another image
    assert (await alice.get(url.replace(f"/images/{first}/", f"/images/{second}/"))).status_code == 403
    assert (await alice.get(url.replace(f"/images/{first}/", "/images/999999/"))).status_code == 403
    # tampered: another user id, a later expiry, another signature, garbage
    for forged in (
        f"{grant.user_id + 1}-{grant.expires_at}-{grant.signature}",
        f"{grant.user_id}-{grant.expires_at + 3600}-{grant.signature}",
        f"{grant.user_id}-{grant.expires_at}-{grant.signature[::-1]}",
        "garbage",
    ):
        assert (await alice.get(_with_grant(url, forged))).status_code == 403, forged
    # expired: a grant issued with the app's key an hour and a half ago
    grants: TileGrants = app.state.tile_grants
    file = app.state.image_files.get(first)
    user_id = setup.experts[0].id
    token = alice.headers["Authorization"].split(" ", 1)[1]
    old = grants.issue(first, user_id, token, file.identity, now=time.time() - 5400)
    fresh = grants.issue(first, user_id, token, file.identity)
    assert (await alice.get(_with_grant(url, old.token))).status_code == 403
    assert (await alice.get(_with_grant(url, fresh.token))).status_code == 200


async def test_an_unassigned_expert_gets_no_grant_and_a_revoked_one_keeps_it_until_expiry(
    app: Any, client_for: ClientFactory
) -> None:
    setup = await make_study(app, experts=("alice",))
    await make_user(app, "carol")
    alice, carol = await client_for("alice"), await client_for("carol")
    image_id = setup.images[0].id
    assert (await carol.get(f"/api/v1/images/{image_id}")).status_code == 404
    url = await _tile_url(alice, image_id)
    async with _maker(app)() as session, session.begin():
        await session.execute(delete(Assignment).where(Assignment.expert_id == setup.experts[0].id))
    # documented: the grant is honoured until it expires; a new one is not given
    assert (await alice.get(url)).status_code == 200
    assert (await alice.get(f"/api/v1/images/{image_id}")).status_code == 404


async def test_the_workspace_page_grants_tiles_bound_to_its_session_cookie(
    app: Any, client_for: ClientFactory
) -> None:
    setup = await make_study(app, experts=("alice",))
    assignment_id = (await (await client_for("alice")).get("/api/v1/assignments")).json()[0]["id"]
    image_id = setup.images[0].id
    client, _ = await browser_client(app, "alice")
    async with client:
        page = await client.get(f"/work/{assignment_id}/images/{image_id}")
        assert page.status_code == 200
        url = await _tile_url(client, image_id)
        assert (await client.get(url)).status_code == 200
    assert f"/api/v1/images/{image_id}/granted-tiles/" in page.text
    other, _ = await browser_client(app, "alice")  # another session of the same user
    async with other:
        assert (await other.get(url)).status_code == 403


def test_grants_round_expiries_up_and_check_them() -> None:
    grants = TileGrants(b"k" * 32, lifetime_seconds=900)
    grant = grants.issue(7, 3, "credential", "file", now=1_000_000)
    assert grant.expires_at % 225 == 0
    assert 1_000_900 <= grant.expires_at < 1_000_900 + 225
    assert grants.check(grant.token, 7, "credential", "file", now=grant.expires_at - 1) == grant
    for image_id, credential, identity, now in [
        (8, "credential", "file", 1_000_000),
        (7, "other", "file", 1_000_000),
        (7, "credential", "another file", 1_000_000),
        (7, "credential", "file", grant.expires_at),
    ]:
        with pytest.raises(GrantRefused):
            grants.check(grant.token, image_id, credential, identity, now=now)
    other_key = TileGrants(b"x" * 32, lifetime_seconds=900)
    with pytest.raises(GrantRefused):
        other_key.check(grant.token, 7, "credential", "file", now=1_000_000)


@pytest.mark.parametrize("key", [b"k" * 32, b"s" * 16, b"b" * 64, b"l" * 65, bytes(range(200))])
def test_a_grant_s_signature_is_the_hmac_sha256_of_its_fields(key: bytes) -> None:
    """Pinned against hmac.new: a faster call must sign exactly as before (grants issued by another server
    process or before a restart stay valid), for keys shorter and longer than SHA-256's block."""
    grant = TileGrants(key, lifetime_seconds=900).issue(7, 3, "credential", "file", now=1_000_000)
    message = f"tile\n7\n3\n{grant.expires_at}\nfile\ncredential".encode()
    digest = hmac.new(key, message, hashlib.sha256).digest()[:16]
    assert grant.signature == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_an_image_answer_has_the_headers_a_response_with_them_has(fmt: EncodeFormat) -> None:
    body = b"\xff\xd8 an image"
    expected = Response(body, media_type=MEDIA[fmt], headers=IMMUTABLE)
    answer = ImmutableImage(body, fmt)
    assert (answer.status_code, answer.body, answer.raw_headers) == (200, body, expected.raw_headers)
    assert answer.media_type == expected.media_type
    assert answer.background is None


async def test_the_granted_route_skips_fastapi_s_per_request_wrapper_and_keeps_the_app_s_errors(
    app: Any, client_for: ClientFactory, anonymous: AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    setup = await make_study(app, experts=("alice",))
    alice = await client_for("alice")
    url = await _tile_url(alice, setup.images[0].id)
    plain = await alice.get(f"/api/v1/images/{setup.images[0].id}/tiles/0/0/0")

    async def no_solver(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("FastAPI's dependency solver ran for a granted tile")

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", no_solver)
    granted = await alice.get(url)
    assert granted.status_code == 200, granted.text
    assert granted.content == plain.content
    assert granted.headers["cache-control"] == IMMUTABLE["Cache-Control"]
    invalid = await alice.get(f"{url}?size=1")
    assert invalid.status_code == 422
    assert "size" in invalid.json()["detail"]
    assert (await anonymous.get(url)).status_code == 401
    assert (await alice.get(_with_grant(url, "garbage"))).status_code == 403


def _granted_route(app: Any) -> GrantedTileRoute:
    route = next(route for route in app.router.routes if getattr(route, "endpoint", None) is get_granted_tile)
    assert isinstance(route, GrantedTileRoute)
    return route


def _scope(path: str, method: str = "GET", **more: Any) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "root_path": "", **more}


GRANTED = "/api/v1/images/7/granted-tiles/1-2-sig/0/3/4"


@pytest.mark.parametrize(
    "scope",
    [
        _scope(GRANTED),
        _scope(GRANTED, "HEAD"),
        _scope(GRANTED, "POST"),
        _scope(GRANTED, path_params={"before": "1"}),
        _scope("/api/v1/images/7/granted-tiles/1-2-sig/0/3"),
        _scope("/api/v1/images/7/tiles/0/3/4"),
        _scope("/prefix" + GRANTED, root_path="/prefix"),
        _scope(GRANTED, fastapi={}),
        {"type": "websocket", "path": GRANTED, "root_path": ""},
    ],
)
def test_the_granted_route_matches_as_fastapi_s_route_does(app: Any, scope: dict[str, Any]) -> None:
    route = _granted_route(app)
    assert route.matches(dict(scope)) == APIRoute.matches(route, dict(scope))


def test_the_granted_route_takes_only_plain_string_parameters() -> None:
    with pytest.raises(ValueError, match="plain strings"):
        GrantedTileRoute("/tiles/{level:int}", get_granted_tile, methods=["GET"])


async def test_the_granted_route_refuses_other_methods_as_any_route(
    app: Any, client_for: ClientFactory
) -> None:
    setup = await make_study(app, experts=("alice",))
    alice = await client_for("alice")
    url = await _tile_url(alice, setup.images[0].id)
    assert _granted_route(app).matches(_scope(url, "POST"))[0] is Match.PARTIAL
    refused = await alice.post(url)
    plain = await alice.post(f"/api/v1/images/{setup.images[0].id}/tiles/0/0/0")
    assert (refused.status_code, refused.json()) == (plain.status_code, plain.json()) == (405, plain.json())
    assert refused.headers.keys() - {"x-request-id"} == plain.headers.keys() - {"x-request-id"}
    assert (await alice.head(url)).status_code == (await alice.head(plain.url.path)).status_code


async def test_a_remembered_image_s_file_is_granted_at_once_an_unknown_one_is_left_to_granted_file(
    app: Any, client_for: ClientFactory
) -> None:
    setup = await make_study(app, experts=("alice",))
    alice = await client_for("alice")
    image_id = setup.images[0].id
    url = await _tile_url(alice, image_id)
    grant, token = _grant_of(url).token, alice.headers["authorization"].removeprefix("Bearer ")
    state = app.state
    file = service.remembered_granted_file(state.tile_grants, state.image_files, image_id, grant, token)
    assert file is not None
    assert file == state.image_files.get(image_id)
    with pytest.raises(Forbidden):
        service.remembered_granted_file(state.tile_grants, state.image_files, image_id, grant, "other")
    forgotten = type(state.image_files)()
    assert service.remembered_granted_file(state.tile_grants, forgotten, image_id, grant, token) is None
    with pytest.raises(Forbidden):  # a malformed grant is refused before any look-up
        service.remembered_granted_file(state.tile_grants, forgotten, image_id, "garbage", token)
    args = (state.tile_grants, forgotten, state.sessionmaker, state.settings, image_id)
    assert await service.granted_file(*args, grant, token) == file
    assert forgotten.get(image_id) == file
    with pytest.raises(Forbidden):
        await service.granted_file(*args, grant, "other")


def test_a_checked_grant_is_remembered_for_its_own_values_only_and_still_expires() -> None:
    grants = TileGrants(b"k" * 32, lifetime_seconds=900)
    grant = grants.issue(7, 3, "credential", "file", now=1_000_000)
    assert grants.check(grant.token, 7, "credential", "file", now=1_000_000) == grant
    assert grants.check(grant.token, 7, "credential", "file", now=1_000_001) == grant  # remembered
    for image_id, credential, identity in [
        (8, "credential", "file"),
        (7, "other", "file"),
        (7, "credential", "x"),
    ]:
        with pytest.raises(GrantRefused, match="not valid"):
            grants.check(grant.token, image_id, credential, identity, now=1_000_000)
    with pytest.raises(GrantRefused, match="expired"):
        grants.check(grant.token, 7, "credential", "file", now=grant.expires_at)
    tampered = f"{grant.user_id}-{grant.expires_at}-{'A' * len(grant.signature)}"
    with pytest.raises(GrantRefused, match="not valid"):
        grants.check(tampered, 7, "credential", "file", now=1_000_000)


def test_the_remembered_grants_are_bounded() -> None:
    grants = TileGrants(b"k" * 32, lifetime_seconds=900)
    for image_id in range(1, MAX_CHECKED + 2):
        grant = grants.issue(image_id, 3, "credential", "file", now=1_000_000)
        grants.check(grant.token, image_id, "credential", "file", now=1_000_000)
    assert 1 <= len(grants._checked) <= MAX_CHECKED
    assert grants.check(grant.token, MAX_CHECKED + 1, "credential", "file", now=1_000_000) == grant
