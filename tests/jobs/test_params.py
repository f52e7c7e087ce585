"""Each job kind's parameters are checked when the job is queued: a bad one is 422 and nothing is queued."""

from typing import Any

import pytest
from httpx import AsyncClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.errors import Invalid
from app.jobs import service
from app.jobs.params import JobParams
from app.jobs.registry import job_kinds
from app.models import Job
from tests.conftest import ClientFactory
from tests.factories import make_user

Maker = async_sessionmaker[AsyncSession]

REFUSED: list[tuple[str, dict[str, Any], str]] = [
    ("sleep", {"seconds": -1}, "seconds"),
    ("sleep", {"seconds": 10**12}, "seconds"),
    ("sleep", {"steps": 0}, "steps"),
    ("sleep", {"steps": "ten"}, "steps"),
    ("sleep", {"exit_code": 256}, "exit_code"),
    ("sleep", {"marker": "../../etc/x"}, "marker"),
    ("sleep", {"record_dir": "../../tmp"}, "record_dir"),
    ("sleep", {"record_dir": "/tmp/../etc"}, "record_dir"),
    ("sleep", {"n": 1}, "n"),
    ("detect", {"task_id": "../../", "detector_id": 1}, "task_id"),
    ("detect", {"task_id": 1}, "detector_id"),
    ("detect", {"task_id": 0, "detector_id": 1}, "task_id"),
    ("detect", {"task_id": 2**31, "detector_id": 1}, "task_id"),
    ("detect", {"task_id": True, "detector_id": 1}, "task_id"),
    ("detect", {"task_id": 1, "detector_id": 1, "batch_size": 0}, "batch_size"),
    ("detect", {"task_id": 1, "detector_id": 1, "name": ""}, "name"),
    ("detect", {"task_id": 1, "detector_id": 1, "path": "/etc"}, "path"),
    ("detector_train", {"kind": "../../"}, "kind"),
    ("detector_train", {"seed": -1}, "seed"),
    ("detector_train", {"seed": 1.5}, "seed"),
]

ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("sleep", {}),
    ("sleep", {"seconds": 0.5, "steps": 3, "marker": "m-1", "record_dir": "/tmp/records"}),
    ("detect", {"task_id": 3, "detector_id": 4, "batch_size": 8, "name": "run"}),
    ("detector_train", {"kind": "grade", "seed": 7}),
]


async def _job_count(maker: Maker) -> int:
    async with maker() as session:
        return int(await session.scalar(select(func.count()).select_from(Job)) or 0)


@pytest.mark.parametrize(("kind", "params", "field"), REFUSED)
async def test_the_api_refuses_bad_params_with_the_reason_and_queues_nothing(
    app: object, client_for: ClientFactory, sessionmaker: Maker, kind: str, params: dict[str, Any], field: str
) -> None:
    await make_user(app, "root", "admin")
    admin: AsyncClient = await client_for("root")
    response = await admin.post("/api/v1/jobs", json={"kind": kind, "params": params})
    assert response.status_code == 422
    assert f"invalid params for job kind {kind!r}" in response.json()["detail"]
    assert field in response.json()["detail"]
    assert await _job_count(sessionmaker) == 0


@pytest.mark.parametrize(("kind", "params", "field"), REFUSED)
async def test_the_internal_submit_helper_refuses_bad_params(
    sessionmaker: Maker, kind: str, params: dict[str, Any], field: str
) -> None:
    async with sessionmaker() as session, session.begin():
        with pytest.raises(Invalid, match=field):
            await service.enqueue(session, kind, params, None)
    assert await _job_count(sessionmaker) == 0


@pytest.mark.parametrize(("kind", "params"), ACCEPTED)
async def test_good_params_are_queued_as_given(
    app: object, client_for: ClientFactory, kind: str, params: dict[str, Any]
) -> None:
    await make_user(app, "root", "admin")
    admin = await client_for("root")
    response = await admin.post("/api/v1/jobs", json={"kind": kind, "params": params})
    assert response.status_code == 201
    assert response.json()["params"] == params


def test_every_registered_kind_has_a_params_model_that_refuses_unknown_fields() -> None:
    kinds = job_kinds()
    assert {"sleep", "detect", "detector_train"} <= {kind.name for kind in kinds}
    for kind in kinds:
        assert issubclass(kind.params, JobParams)
        assert kind.params.model_config.get("extra") == "forbid"


async def test_the_kinds_route_publishes_each_params_schema(app: object, client_for: ClientFactory) -> None:
    await make_user(app, "root", "admin")
    admin = await client_for("root")
    kinds = {kind["name"]: kind for kind in (await admin.get("/api/v1/jobs/kinds")).json()}
    assert set(kinds["detect"]["params_schema"]["required"]) == {"task_id", "detector_id"}
    assert kinds["sleep"]["params_schema"]["properties"]["seconds"]["minimum"] == 0
