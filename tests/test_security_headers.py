"""Security headers on every kind of response, HSTS and Secure cookies only over HTTPS, no inline script."""

import re
from pathlib import Path

import pytest
from httpx import ASGITransport, AsyncClient

from tests.factories import PASSWORD, make_user

ROOT = Path(__file__).resolve().parents[1]
EXPECTED = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}
SAMPLE = [
    ("GET", "/api/v1/health", 200),  # JSON
    ("GET", "/login", 200),  # page
    ("GET", "/static/app.js", 200),  # static file
    ("GET", "/static/no-such-file.js", 404),  # static 404
    ("GET", "/api/v1/me", 401),  # API error
    ("GET", "/api/v1/no-such-route", 404),
    ("GET", "/no-such-page", 404),
    ("GET", "/api/v1/studies/not-a-number", 401),
    ("POST", "/login", 422),  # form error
    ("GET", "/dashboard", 303),  # redirect
    ("GET", "/docs", 200),
    ("GET", "/redoc", 200),
    ("GET", "/openapi.json", 200),
]


def _assert_security_headers(response, *, https: bool = False) -> None:
    for name, value in EXPECTED.items():
        assert response.headers.get(name) == value, (response.url, name)
    policy = response.headers["content-security-policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["script-src"] == "'self'"
    assert "'unsafe-inline'" not in directives["script-src"]
    assert "unsafe-eval" not in policy
    assert directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'"
    assert ("strict-transport-security" in response.headers) is https


@pytest.mark.parametrize(("method", "path", "status"), SAMPLE)
async def test_every_kind_of_response_carries_the_headers(app, anonymous, method, path, status):
    response = await anonymous.request(method, path)
    assert response.status_code == status
    _assert_security_headers(response)


async def test_a_refused_upload_carries_the_headers(anonymous):
    files = {"files": ("a.png", b"x" * 100_000, "image/png")}
    response = await anonymous.post("/api/v1/tasks/1/images", files=files)
    assert response.status_code == 401
    assert response.headers["connection"] == "close"
    _assert_security_headers(response)


async def test_an_unhandled_error_still_carries_the_headers(app):
    async def boom() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/api/v1/boom", boom)
    transport = ASGITransport(app=app, raise_app_exceptions=False)
    async with AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.get("/api/v1/boom")
    assert response.status_code == 500
    assert response.text == "Internal Server Error"
    _assert_security_headers(response)


async def _login(app: object, base_url: str, **headers: str):
    async with AsyncClient(transport=ASGITransport(app=app), base_url=base_url, headers=headers) as client:  # type: ignore[arg-type]
        return await client.post("/login", data={"name": "alice", "password": PASSWORD})


async def test_hsts_and_secure_cookie_only_over_https(app):
    await make_user(app, "alice")
    plain = await _login(app, "http://test")
    secure = await _login(app, "https://test")
    assert plain.status_code == secure.status_code == 303
    _assert_security_headers(plain, https=False)
    _assert_security_headers(secure, https=True)
    assert secure.headers["strict-transport-security"] == "max-age=31536000"
    assert "secure" not in plain.headers["set-cookie"].lower()
    assert "; secure" in secure.headers["set-cookie"].lower()
    assert "httponly" in secure.headers["set-cookie"].lower()


async def test_forwarded_proto_counts_only_from_a_trusted_proxy(app, settings, another_app):
    await make_user(app, "alice")
    untrusted = await _login(app, "http://test", **{"X-Forwarded-Proto": "https"})
    _assert_security_headers(untrusted, https=False)
    assert "secure" not in untrusted.headers["set-cookie"].lower()

    async with another_app(settings.model_copy(update={"forwarded_allow_ips": "127.0.0.1"})) as trusting:
        trusted = await _login(trusting, "http://test", **{"X-Forwarded-Proto": "https"})
    _assert_security_headers(trusted, https=True)
    assert "; secure" in trusted.headers["set-cookie"].lower()


def test_templates_and_static_html_have_no_inline_script() -> None:
    """The policy forbids inline script: no <script> without src (JSON data blocks aside), no on*= or hx-on."""
    inline_script = re.compile(r"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", re.I)
    handler = re.compile(r"\s(on[a-z]+|hx-on[:\w-]*)\s*=", re.I)
    offenders = []
    for path in [*ROOT.glob("templates/**/*.html"), *ROOT.glob("app/static/*.html")]:
        text = path.read_text(encoding="utf-8")
        offenders += [f"{path.name}: {match.group(0)}" for match in inline_script.finditer(text)]
        offenders += [f"{path.name}: {match.group(0)}" for match in handler.finditer(text)]
    assert offenders == []


async def test_api_docs_use_vendored_assets_only(app, anonymous):
    for path in ("/docs", "/redoc"):
        page = (await anonymous.get(path)).text
        sources = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page)
        assert sources, sources
        assert all(source.startswith("/static/") for source in sources), sources
        for source in sources:
            assert (await anonymous.get(source)).status_code == 200
        assert not re.search(r"<script(?![^>]*src=)", page)
