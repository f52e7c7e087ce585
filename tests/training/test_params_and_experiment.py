"""Train parameters are validated; the experiment plans the paper's sets and runs its children through workers."""

import asyncio
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from app.config import Settings
from app.errors import Invalid
from app.models import Job, TrainingRun
from app.training.schemas import TrainExperimentParams, TrainParams
from app.training.service import choose_experts, experiment_jobs, split_images
from tests.conftest import ClientFactory
from tests.training.helpers import training_study

BASE = {"study_id": 1, "task_id": 2, "mode": "unaided"}


@pytest.mark.parametrize(
    "change",
    [
        {"mode": "training"},
        {"experts": "first:0"},
        {"experts": "some"},
        {"experts": []},
        {"experts": ["a", "a"]},
        {"loss": "focal"},
        {"weighting": "eq1"},
        {"epochs_frozen": 0, "epochs_unfrozen": 0},
        {"batch_size": 0},
        {"patch_size": 8},
        {"device": "tpu"},
        {"unknown": 1},
    ],
)
def test_bad_train_params_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        TrainParams.model_validate({**BASE, **change})


def test_train_params_defaults_follow_the_published_notebooks() -> None:
    params = TrainParams.model_validate(BASE)
    assert (params.epochs_frozen, params.epochs_unfrozen, params.lr_frozen, params.lr_unfrozen) == (
        3,
        5,
        0.05,
        1e-3,
    )
    assert (params.batch_size, params.patch_size, params.repeats, params.weighting) == (64, 64, 5, "paper")
    assert params.experts == "all"
    assert params.device == "auto"
    assert params.weights is None


def test_experts_are_chosen_in_natural_name_order() -> None:
    available = ["P10", "P2", "P1"]
    assert choose_experts(available, "all") == ["P1", "P2", "P10"]
    assert choose_experts(available, "first:2") == ["P1", "P2"]
    assert choose_experts(available, ["P10"]) == ["P10"]
    with pytest.raises(Invalid):
        choose_experts(available, "first:4")
    with pytest.raises(Invalid):
        choose_experts(available, ["P3"])


def test_validation_holds_out_the_last_images_but_never_all() -> None:
    assert split_images(4, 0.25).tolist() == [False, False, False, True]
    assert split_images(2, 0.9).tolist() == [False, True]


def test_the_paper_experiment_is_nineteen_sets_per_mode_for_ten_experts() -> None:
    experts = [f"P{number}" for number in range(1, 11)]
    params = TrainExperimentParams(study_id=1, task_id=2, repeats=5)
    jobs = experiment_jobs(params, {"unaided": experts, "aided": experts})
    assert len(jobs) == 19 * 2 * 2 * 5
    sets = {str(job["experts"]) for job in jobs}
    assert len(sets) == 19
    assert "['P10']" in sets
    assert "first:10" in sets
    assert "first:1" not in sets
    assert {job["repeats"] for job in jobs} == {1}
    assert sorted({job["seed"] for job in jobs}) == [0, 1, 2, 3, 4]


@pytest.mark.commits  # a worker, and job functions with engines of their own
async def test_the_experiment_job_runs_its_children_through_a_worker(
    app: object,
    client_for: ClientFactory,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    sessionmaker: Any,
) -> None:
    monkeypatch.setenv("CONCORD_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CONCORD_DATABASE_URL", settings.resolved_database_url)
    built = await training_study(app, client_for)
    admin = await client_for("admin")
    params = {
        "study_id": built.study_id,
        "task_id": built.task_id,
        "modes": ["unaided"],
        "losses": ["votes"],
        "sets": "number",
        "repeats": 1,
        "epochs_frozen": 1,
        "epochs_unfrozen": 0,
        "patch_size": 32,
        "batch_size": 16,
        "background_per_image": 2,
        "device": "cpu",
    }
    parent = (await admin.post("/api/v1/jobs", json={"kind": "train_experiment", "params": params})).json()
    from worker.tasks import train_experiment

    fractions: list[float] = []
    result = await asyncio.to_thread(
        train_experiment.run, params, lambda fraction, message="": fractions.append(fraction)
    )
    assert len(result["children"]) == 2
    assert result["succeeded"] == 2
    assert fractions[0] == 0.0
    assert fractions[-1] == 1.0
    assert 0.5 in fractions
    async with sessionmaker() as session:
        children = (await session.scalars(select(Job).where(Job.id.in_(result["children"])))).all()
        runs = (await session.scalars(select(TrainingRun).order_by(TrainingRun.id))).all()
    assert {job.kind for job in children} == {"train"}
    assert parent["id"] not in result["children"]
    assert sorted(run.set_name for run in runs) == ["first:2", "first:3"]
    assert [len(run.history) for run in runs] == [1, 1]
