"""A crawler from the dashboard, as the admin and as an expert: every internal link, image, script and
HTMX GET target answers neither 404 nor 5xx, and every form and hx-post target is a route of the app."""

import html
import re
from collections import deque
from urllib.parse import urljoin, urlsplit

from httpx import AsyncClient
from starlette.routing import Match

from app.models import Job, JobStatus
from tests.factories import make_study
from tests.pages.test_pages import browser_client

HTML = {"Accept": "text/html,application/xhtml+xml"}
GET_TARGET = re.compile(r'\b(?:href|src|hx-get)="([^"]*)"')
POST_TARGET = re.compile(r'<form\b[^>]*\bmethod="post"[^>]*\baction="([^"]*)"|\bhx-post="([^"]*)"', re.I)
MOST_PAGES = 400


def _internal(base: str, target: str) -> str | None:
    """The path and query of an internal target; None for other sites, fragments and data URLs."""
    url = urlsplit(urljoin(base, html.unescape(target)))
    if url.scheme not in ("http", "") or url.netloc not in ("test", "") or not url.path:
        return None
    return url.path + (f"?{url.query}" if url.query else "")


def _is_route(app: object, method: str, path: str) -> bool:
    scope = {"type": "http", "method": method, "path": urlsplit(path).path, "root_path": ""}
    return any(route.matches(scope)[0] == Match.FULL for route in app.routes)  # type: ignore[attr-defined]


async def _crawl(app: object, client: AsyncClient) -> tuple[dict[str, int], set[str]]:
    """Every GET target reached from the dashboard with its status; the POST targets seen on the way."""
    statuses: dict[str, int] = {}
    posts: set[str] = set()
    waiting = deque(["/dashboard"])
    while waiting and len(statuses) < MOST_PAGES:
        path = waiting.popleft()
        if path in statuses:
            continue
        response = await client.get(path, headers=HTML)
        statuses[path] = response.status_code
        redirected = _internal(path, response.headers.get("location", ""))
        if response.is_redirect and redirected:
            waiting.append(redirected)
        if not response.headers.get("content-type", "").startswith("text/html"):
            continue
        for found in GET_TARGET.findall(response.text):
            target = _internal(path, found)
            if target and target not in statuses and not target.startswith(("/logout", "/docs", "/redoc")):
                waiting.append(target)
        for action, hx_post in POST_TARGET.findall(response.text):
            target = _internal(path, action or hx_post)
            if target:
                posts.add(target)
    return statuses, posts


async def _rich_study(app: object, client_for, sessionmaker) -> None:
    """A study with practice images, all three modes, a suggestion set, a finished detect job."""
    setup = await make_study(
        app, experts=("alice", "bob"), modes=("training", "unaided", "aided"), image_count=2, practice_count=1
    )
    admin = await client_for("admin")
    box = {"image": "img0.png", "label": "tumor", "x1": 5, "y1": 5, "x2": 30, "y2": 30}
    created = await admin.post(
        f"/api/v1/tasks/{setup.task.id}/suggestion-sets", json={"name": "s", "suggestions": [box]}
    )
    alice = await client_for("alice")
    image = setup.images[0].id
    drawn = {key: value for key, value in box.items() if key != "image"}
    assert (
        await alice.post(f"/api/v1/images/{image}/annotations?mode=unaided", json=drawn)
    ).status_code == 201
    for item in setup.images:
        assert (await alice.post(f"/api/v1/images/{item.id}/done?mode=unaided")).status_code == 200
    async with sessionmaker() as session, session.begin():
        session.add(
            Job(
                kind="detect",
                params={"task_id": setup.task.id, "detector_id": 1},
                status=JobStatus.succeeded,
                progress=1.0,
                result={"suggestion_set_id": created.json()["id"]},
            )
        )


async def test_no_link_or_form_leads_nowhere_for_the_admin_or_an_expert(app, client_for, sessionmaker):
    await _rich_study(app, client_for, sessionmaker)
    for name in ("admin", "alice"):
        client, _ = await browser_client(app, name)
        async with client:
            statuses, posts = await _crawl(app, client)
        broken = {path: status for path, status in statuses.items() if status == 404 or status >= 500}
        assert broken == {}, f"{name}: {broken}"
        assert len(statuses) < MOST_PAGES, f"{name}: the crawl did not end"
        missing = sorted(path for path in posts if not _is_route(app, "POST", path))
        assert missing == [], f"{name}: forms post to no route: {missing}"
        pages = [path for path in statuses if not path.startswith(("/static/", "/api/"))]
        if name == "admin":
            expected = {"/admin/studies", "/admin/jobs", "/admin/evaluation", "/static/favicon.svg"}
            assert expected <= set(statuses), sorted(statuses)
            assert any(re.fullmatch(r"/studies/\d+/evaluation", path) for path in pages)
            assert any(re.fullmatch(r"/admin/tasks/\d+/suggestions", path) for path in pages)
        else:
            assert any(re.fullmatch(r"/work/\d+/images/\d+", path) for path in pages), pages
            assert any(re.fullmatch(r"/work/\d+/finish", path) for path in pages), pages
            assert not any(path.startswith("/admin") for path in pages), pages
        assert "/admin/logout" not in posts
        assert "/logout" in posts
