"""The admin-only job API."""

import subprocess
import sys

from httpx import AsyncClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.jobs import service
from tests.conftest import ClientFactory
from tests.factories import make_user
from tests.worker.helpers import REPO_ROOT

Maker = async_sessionmaker[AsyncSession]


async def _admin(app: object, client_for: ClientFactory) -> AsyncClient:
    await make_user(app, "root", "admin")
    return await client_for("root")


async def test_roles_anonymous_401_expert_403(
    app: object, anonymous: AsyncClient, client_for: ClientFactory
) -> None:
    await make_user(app, "eve", "expert")
    expert = await client_for("eve")
    for client, status in ((anonymous, 401), (expert, 403)):
        assert (await client.get("/api/v1/jobs")).status_code == status
        assert (await client.get("/api/v1/jobs/1")).status_code == status
        assert (await client.post("/api/v1/jobs", json={"kind": "sleep"})).status_code == status
        assert (await client.post("/api/v1/jobs/1/cancel")).status_code == status


async def test_admin_creates_reads_and_lists_jobs(app: object, client_for: ClientFactory) -> None:
    admin = await _admin(app, client_for)
    created = await admin.post(
        "/api/v1/jobs", json={"kind": "sleep", "params": {"seconds": 2}, "timeout_s": 30, "max_attempts": 2}
    )
    assert created.status_code == 201
    body = created.json()
    assert (body["kind"], body["params"], body["status"], body["attempts"]) == (
        "sleep",
        {"seconds": 2},
        "queued",
        0,
    )
    assert (body["timeout_s"], body["max_attempts"], body["progress"], body["result"]) == (30.0, 2, 0.0, None)
    other = (await admin.post("/api/v1/jobs", json={"kind": "sleep"})).json()
    assert (other["timeout_s"], other["max_attempts"], other["params"]) == (600.0, 3, {})

    fetched = await admin.get(f"/api/v1/jobs/{body['id']}")
    assert fetched.status_code == 200
    assert fetched.json()["id"] == body["id"]
    listed = await admin.get("/api/v1/jobs", params={"status": "queued", "kind": "sleep"})
    assert [job["id"] for job in listed.json()] == [other["id"], body["id"]]
    assert (await admin.get("/api/v1/jobs", params={"status": "running"})).json() == []
    assert (await admin.get("/api/v1/jobs", params={"kind": "detect"})).json() == []
    assert (await admin.get("/api/v1/jobs", params={"status": "bogus"})).status_code == 422
    assert (await admin.get("/api/v1/jobs/999999")).status_code == 404
    kinds = (await admin.get("/api/v1/jobs/kinds")).json()
    assert "sleep" in [kind["name"] for kind in kinds]


async def test_unknown_kind_and_bad_payloads_are_422(app: object, client_for: ClientFactory) -> None:
    admin = await _admin(app, client_for)
    unknown = await admin.post("/api/v1/jobs", json={"kind": "nope"})
    assert unknown.status_code == 422
    assert "unknown job kind 'nope'" in unknown.json()["detail"]
    for payload in (
        {"kind": "sleep", "timeout_s": 0},
        {"kind": "sleep", "max_attempts": 0},
        {"kind": "sleep", "x": 1},
    ):
        assert (await admin.post("/api/v1/jobs", json=payload)).status_code == 422


async def test_cancel_queued_at_once_running_by_request_finished_409(
    app: object, client_for: ClientFactory, sessionmaker: Maker
) -> None:
    admin = await _admin(app, client_for)
    queued = (await admin.post("/api/v1/jobs", json={"kind": "sleep"})).json()
    cancelled = await admin.post(f"/api/v1/jobs/{queued['id']}/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    assert (await admin.post(f"/api/v1/jobs/{queued['id']}/cancel")).status_code == 409

    running = (await admin.post("/api/v1/jobs", json={"kind": "sleep"})).json()
    async with sessionmaker() as session, session.begin():
        claimed = await service.claim_next(session, "w", 30.0)
        assert claimed is not None
        assert claimed.id == running["id"]
    asked = await admin.post(f"/api/v1/jobs/{running['id']}/cancel")
    assert (asked.json()["status"], asked.json()["cancel_requested"]) == ("running", True)
    assert (await admin.post("/api/v1/jobs/999999/cancel")).status_code == 404


def test_the_job_api_and_the_worker_loop_never_import_torch() -> None:
    code = (
        "import sys, app.jobs.api, worker.runner, worker.child, worker.cli, worker.tasks.demo_sleep\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)
