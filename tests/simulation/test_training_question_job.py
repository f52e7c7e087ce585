"""The training question as a job: queued from "Plan a study", run by a worker, its result on the page."""

from typing import Any

import pytest
from sqlalchemy import select

from app.config import Settings
from app.jobs import service as jobs
from app.models import Job, JobStatus
from tests.factories import make_user
from tests.pages.test_pages import browser_client
from tests.simulation.test_training_question import TINY
from worker.runner import Worker, WorkerOptions

POLLING = 'hx-trigger="every 1s"'


async def test_the_page_queues_a_question_and_refuses_a_bad_one(app: object, sessionmaker: Any) -> None:
    await make_user(app, "admin", "admin")
    client, csrf = await browser_client(app, "admin")
    async with client:
        page = await client.get("/admin/plan")
        assert page.status_code == 200
        assert 'id="training-question"' in page.text
        assert 'action="/admin/plan/training-question"' in page.text
        assert 'id="question-table"' not in page.text
        form = {
            "csrf_token": csrf,
            "experts": "1, 3",
            "losses": "both",
            "repeats": "3",
            "epochs": "4",
            "seed": "7",
        }
        sent = await client.post("/admin/plan/training-question", data=form)
        assert sent.status_code == 303
        async with sessionmaker() as session:
            [job] = (await session.scalars(select(Job))).all()
        assert job.kind == "training_question"
        assert {
            key: job.params[key] for key in ("experts", "losses", "repeats", "epochs_unfrozen", "seed")
        } == {
            "experts": [1, 3],
            "losses": ["votes", "bce"],
            "repeats": 3,
            "epochs_unfrozen": 4,
            "seed": 7,
        }
        assert sent.headers["location"] == f"/admin/plan?question_job={job.id}#training-question"
        shown = await client.get(f"/admin/plan?question_job={job.id}")
        assert f'id="job-{job.id}"' in shown.text
        assert POLLING in shown.text
        bad = await client.post("/admin/plan/training-question", data={**form, "experts": "2,3"})
        assert bad.status_code == 422
        assert "experts must include 1" in bad.text
        words = await client.post("/admin/plan/training-question", data={**form, "experts": "one"})
        assert words.status_code == 422
        assert "whole numbers" in words.text
    async with sessionmaker() as session:
        assert len((await session.scalars(select(Job))).all()) == 1


@pytest.mark.commits  # a worker with its own engine
async def test_a_worker_answers_the_question_and_the_page_shows_the_result(
    app: object, sessionmaker: Any, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("torch")
    monkeypatch.setenv("CONCORD_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CONCORD_DATABASE_URL", settings.resolved_database_url)
    async with sessionmaker() as session, session.begin():
        job_id = (await jobs.enqueue(session, "training_question", {**TINY, "losses": ["votes"]}, None)).id
    options = WorkerOptions(name="question", once=True, poll_interval_s=0.05, kinds=("training_question",))
    assert await Worker(settings, options).run() == 0
    async with sessionmaker() as session:
        job = await session.get(Job, job_id)
        assert job is not None
        assert (job.status, job.progress, job.error) == (JobStatus.succeeded, 1.0, None)
        result = job.result
    assert result is not None
    assert len(result["rows"]) == 4
    assert result["answer"] == result["answers"]["votes"]["text"]

    await make_user(app, "admin", "admin")
    client, _ = await browser_client(app, "admin")
    async with client:
        page = await client.get("/admin/plan")  # the newest finished question is shown
        assert page.status_code == 200
        assert 'id="question-table"' in page.text
        assert result["answer"] in page.text.replace("&gt;", ">").replace("&lt;", "<")
        assert f"/admin/plan/training-question/{job_id}/figure.svg" in page.text
        assert page.text.count("<tr><td>votes</td>") == 4
        figure = await client.get(f"/admin/plan/training-question/{job_id}/figure.svg")
        assert figure.status_code == 200
        assert figure.headers["content-type"].startswith("image/svg+xml")
        block = await client.get(
            f"/admin/plan/training-question?question_job={job_id}", headers={"HX-Request": "true"}
        )
        assert block.status_code == 200
        assert block.text.lstrip().startswith('<section class="card" id="training-question"')
        assert 'id="question-answer"' in block.text
        assert "<html" not in block.text
        missing = await client.get("/admin/plan/training-question/999999/figure.svg")
        assert missing.status_code == 404
        jobs_page = await client.get("/admin/jobs")  # the job's row links to its answer
        assert f"/admin/plan?question_job={job_id}#training-question" in jobs_page.text
