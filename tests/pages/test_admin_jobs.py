"""The admin job page over httpx: roles, live progress rows that stop polling, cancel through the page."""

import re

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.jobs import service
from app.jobs.repository import ClaimKey
from app.models import Job
from tests.factories import make_user
from tests.pages.test_pages import browser_client

Maker = async_sessionmaker[AsyncSession]
POLLING = 'hx-trigger="every 1s"'


async def _queued_job(sessionmaker: Maker, seconds: int = 5) -> Job:
    async with sessionmaker() as session, session.begin():
        return await service.enqueue(session, "sleep", {"seconds": seconds}, None)


async def _claim_with_progress(sessionmaker: Maker, fraction: float, message: str) -> ClaimKey:
    async with sessionmaker() as session, session.begin():
        job = await service.claim_next(session, "test-worker", 60.0)
        assert job is not None
        key = ClaimKey(job.id, "test-worker", job.attempts)
    async with sessionmaker() as session, session.begin():
        assert await service.heartbeat(session, key, 60.0, (fraction, message)) is False
    return key


def _row(page: str, job_id: int) -> str:
    match = re.search(rf'<tr id="job-{job_id}".*?</tr>', page, re.S)
    assert match, page
    return match.group(0)


async def test_experts_get_403_on_every_job_page(app: object, sessionmaker: Maker) -> None:
    job = await _queued_job(sessionmaker)
    await make_user(app, "alice")
    client, csrf = await browser_client(app, "alice")
    async with client:
        assert (await client.get("/admin/jobs")).status_code == 403
        assert (await client.get(f"/admin/jobs/{job.id}/progress")).status_code == 403
        cancel = await client.post(f"/admin/jobs/{job.id}/cancel", headers={"X-CSRF-Token": csrf})
        assert cancel.status_code == 403
    async with sessionmaker() as session:
        assert (await service.get_job(session, job.id)).status == "queued"


async def test_anonymous_is_sent_to_login(app: object, anonymous: object) -> None:
    response = await anonymous.get("/admin/jobs")  # type: ignore[attr-defined]
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/admin/jobs"


async def test_queued_job_polls_until_it_has_succeeded(app: object, sessionmaker: Maker) -> None:
    job = await _queued_job(sessionmaker)
    await make_user(app, "admin", "admin")
    client, _ = await browser_client(app, "admin")
    async with client:
        page = await client.get("/admin/jobs")
        queued = _row(page.text, job.id)
        assert POLLING in queued
        assert f'hx-get="/admin/jobs/{job.id}/progress"' in queued
        assert "<code>sleep</code>" in queued
        assert ">queued<" in queued
        assert "0 / 3" in queued
        assert "Cancel" in queued

        key = await _claim_with_progress(sessionmaker, 0.4, "step 2 of 5")
        running = await client.get(f"/admin/jobs/{job.id}/progress", headers={"HX-Request": "true"})
        assert running.status_code == 200
        assert running.text.lstrip().startswith("<tr")
        assert POLLING in running.text
        assert ">running<" in running.text
        assert 'value="0.4"' in running.text
        assert "40 %" in running.text
        assert "step 2 of 5" in running.text
        assert "1 / 3" in running.text
        assert "HX-Trigger" not in running.headers

        async with sessionmaker() as session, session.begin():
            assert await service.mark_succeeded(session, key, {"slept": 5})
        done = await client.get(f"/admin/jobs/{job.id}/progress", headers={"HX-Request": "true"})
        listed = await client.get("/admin/jobs")
    assert "hx-trigger" not in done.text
    assert "hx-get" not in done.text
    assert ">succeeded<" in done.text
    assert "100 %" in done.text
    assert "Cancel" not in done.text
    assert done.headers["HX-Trigger"] == "job-ended"
    assert "hx-trigger" not in _row(listed.text, job.id)


async def test_failed_job_shows_its_error(app: object, sessionmaker: Maker) -> None:
    await _queued_job(sessionmaker)
    key = await _claim_with_progress(sessionmaker, 0.1, "starting")
    async with sessionmaker() as session, session.begin():
        assert await service.mark_failed(session, key, "ValueError: <bad> input")
    await make_user(app, "admin", "admin")
    client, _ = await browser_client(app, "admin")
    async with client:
        row = _row((await client.get("/admin/jobs?status=failed")).text, key.job_id)
        empty = await client.get("/admin/jobs?status=queued", headers={"HX-Request": "true"})
    assert "ValueError: &lt;bad&gt; input" in row
    assert ">failed<" in row
    assert "<html" not in empty.text
    assert "No jobs with status queued" in empty.text


async def test_cancel_through_the_page(app: object, sessionmaker: Maker) -> None:
    queued = await _queued_job(sessionmaker)
    await make_user(app, "admin", "admin")
    client, csrf = await browser_client(app, "admin")
    async with client:
        refused = await client.post(f"/admin/jobs/{queued.id}/cancel")
        assert refused.status_code == 403
        response = await client.post(
            f"/admin/jobs/{queued.id}/cancel", headers={"X-CSRF-Token": csrf, "HX-Request": "true"}
        )
        assert response.status_code == 200
        assert ">cancelled<" in response.text
        assert "hx-trigger" not in response.text
        again = await client.post(
            f"/admin/jobs/{queued.id}/cancel", headers={"X-CSRF-Token": csrf, "HX-Request": "true"}
        )
        assert again.status_code == 409
        assert "already finished" in again.text

        await _queued_job(sessionmaker)
        key = await _claim_with_progress(sessionmaker, 0.5, "halfway")
        plain = await client.post(f"/admin/jobs/{key.job_id}/cancel", data={"csrf_token": csrf})
        assert plain.status_code == 303
        assert plain.headers["location"] == "/admin/jobs"
        running = _row((await client.get("/admin/jobs")).text, key.job_id)
    assert "(stopping)" in running
    assert POLLING in running
    assert "Cancel" not in running
    async with sessionmaker() as session:
        assert (await service.get_job(session, queued.id)).status == "cancelled"
        assert (await service.get_job(session, key.job_id)).cancel_requested
