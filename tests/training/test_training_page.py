"""The task's training page over httpx: the Train form queues one job per loss, rows poll, runs show curves."""

from typing import Any

from sqlalchemy import select

from app.models import Job, TrainingRun
from tests.factories import make_study, make_user
from tests.pages.test_pages import browser_client

POLLING = 'hx-trigger="every 1s"'
HISTORY = [
    {"epoch": 1, "stage": "frozen", "train_loss": 0.7, "val_loss": 0.69, "val_accuracy": 0.5},
    {"epoch": 2, "stage": "unfrozen", "train_loss": 0.4, "val_loss": 0.5, "val_accuracy": 0.75},
]


async def test_train_form_queues_both_losses_and_the_page_lists_jobs_and_runs(
    app: object, sessionmaker: Any
) -> None:
    setup = await make_study(app, experts=("alice",), kind="detect", labels=("mitotic_figure",))
    client, csrf = await browser_client(app, "admin")
    async with client:
        page = await client.get(f"/admin/tasks/{setup.task.id}/training")
        assert page.status_code == 200
        assert 'name="experts"' in page.text
        assert "No train jobs" in page.text
        form = {
            "csrf_token": csrf,
            "experts": "first:1",
            "loss": "both",
            "mode": "aided",
            "epochs": "2",
            "repeats": "3",
        }
        sent = await client.post(f"/admin/tasks/{setup.task.id}/training", data=form)
        assert sent.status_code == 303
        async with sessionmaker() as session:
            jobs = (await session.scalars(select(Job).order_by(Job.id))).all()
        assert [(job.kind, job.params["loss"]) for job in jobs] == [("train", "bce"), ("train", "votes")]
        assert {
            (job.params["experts"], job.params["mode"], job.params["epochs_unfrozen"], job.params["repeats"])
            for job in jobs
        } == {("first:1", "aided", 2, 3)}
        bad = await client.post(f"/admin/tasks/{setup.task.id}/training", data={**form, "repeats": "0"})
        assert bad.status_code == 422
        assert "repeats" in bad.text
        async with sessionmaker() as session, session.begin():
            session.add(_run(setup.study.id, setup.task.id))
        listed = await client.get(f"/admin/tasks/{setup.task.id}/training")
        assert listed.text.count(POLLING) == 2
        assert "0.750" in listed.text
        run_id = int(listed.text.split('id="run-')[1].split('"')[0])
        curves = await client.get(f"/admin/training-runs/{run_id}/curves.svg")
        assert curves.status_code == 200
        assert curves.headers["content-type"].startswith("image/svg+xml")
    async with sessionmaker() as session:
        assert len((await session.scalars(select(Job))).all()) == 2  # the refused form queued nothing


async def test_experts_get_403_on_the_training_page(app: object) -> None:
    setup = await make_study(app, experts=("alice",), kind="detect", labels=("mitotic_figure",))
    await make_user(app, "alice")
    client, csrf = await browser_client(app, "alice")
    async with client:
        assert (await client.get(f"/admin/tasks/{setup.task.id}/training")).status_code == 403
        sent = await client.post(f"/admin/tasks/{setup.task.id}/training", data={"csrf_token": csrf})
        assert sent.status_code == 403


def _run(study_id: int, task_id: int) -> TrainingRun:
    return TrainingRun(
        study_id=study_id, task_id=task_id, job_id=None, mode="aided", loss="votes", weighting="paper",
        experts=["alice"], set_name="first:1", repeat=0, params={}, history=HISTORY, best_val_accuracy=0.75,
        best_epoch=2, device="cpu", device_reason="cpu was requested", weights_init="random (seed 0)",
        seconds=1.0, samples_per_s=10.0, train_samples=10, val_samples=4, checkpoint_path=None,
        onnx_path=None, onnx_sha256=None, status="succeeded",
    )  # fmt: skip
