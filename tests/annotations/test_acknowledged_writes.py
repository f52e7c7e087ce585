"""Defect 1 through a real server: what a client was told is saved can be read at once and survives a kill.

The commit is slowed down (a slow disk or a busy database) so that the window the old code left open, between
the response and its commit, is wide and the tests do not depend on luck: with the commit after the
response, the read right after a write missed it and a server killed right after a 201 lost the edit.
"""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy.ext.asyncio import AsyncSession

from tests.conftest import ClientFactory
from tests.factories import make_study, token_for

# real servers (one in a child process) on the test database
pytestmark = pytest.mark.commits

COMMIT_DELAY_S = 0.3


def slow_commit_patch(delay_s: float) -> Callable[[AsyncSession], Awaitable[None]]:
    commit = AsyncSession.commit

    async def slow_commit(self: AsyncSession) -> None:
        await asyncio.sleep(delay_s)
        await commit(self)

    return slow_commit


def _listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
async def served(app: Any, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    """The test's app behind a real uvicorn server on loopback, its commits slowed down."""
    monkeypatch.setattr(AsyncSession, "commit", slow_commit_patch(COMMIT_DELAY_S))
    sock = _listening_socket()
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    await task
    sock.close()


async def test_every_write_is_visible_to_the_next_request(
    app: Any, served: str, client_for: ClientFactory
) -> None:
    setup = await make_study(app)
    token = await token_for(app, "alice")
    image = setup.images[0].id
    objects_url = f"/api/v1/images/{image}/annotations?mode=unaided&include_deleted=true"
    limits = httpx.Limits(max_keepalive_connections=0)  # each request on its own connection
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=served, headers=headers, limits=limits) as alice:

        async def objects() -> dict[int, dict[str, Any]]:
            return {item["id"]: item for item in (await alice.get(objects_url)).json()}

        box = {"label": "tumor", "x1": 1, "y1": 1, "x2": 20, "y2": 20}
        created = await alice.post(f"/api/v1/images/{image}/annotations?mode=unaided", json=box)
        assert created.status_code == 201
        annotation = created.json()["id"]
        assert annotation in await objects()

        moved = await alice.patch(f"/api/v1/annotations/{annotation}", json={"version": 1, "label": "normal"})
        assert moved.status_code == 200
        assert (await objects())[annotation]["label"] == "normal"

        deleted = await alice.post(f"/api/v1/annotations/{annotation}/delete", json={"version": 2})
        assert deleted.status_code == 200
        assert (await objects())[annotation]["deleted"] is True

        items = [{"label": "tumor", "x1": 10 * i + 1, "y1": 30, "x2": 10 * i + 8, "y2": 40} for i in range(3)]
        bulk = await alice.post(f"/api/v1/images/{image}/annotations/bulk?mode=unaided", json=items)
        assert bulk.status_code == 201
        assert {item["id"] for item in bulk.json()} <= set(await objects())

        visit = await alice.post(f"/api/v1/images/{image}/visits?mode=unaided")
        assert visit.status_code == 201
        visits = (await alice.get(f"/api/v1/images/{image}/visits?mode=unaided")).json()
        assert visit.json()["id"] in [item["id"] for item in visits]


LAUNCHER = """
import asyncio, sys
import uvicorn
from sqlalchemy.ext.asyncio import AsyncSession
from app.main import create_app

commit = AsyncSession.commit
delay_s = float(sys.argv[2])

async def slow_commit(self):
    await asyncio.sleep(delay_s)
    await commit(self)

AsyncSession.commit = slow_commit
uvicorn.run(create_app(), host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""


def _start_server(database_url: str, data_dir: Path, port: int, delay_s: float) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CONCORD_DATABASE_URL": database_url, "CONCORD_DATA_DIR": str(data_dir)}
    command = [sys.executable, "-c", LAUNCHER, str(port), str(delay_s)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(240):
        assert process.poll() is None, "the server exited early"
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=5)
            return process
        except httpx.TransportError:
            time.sleep(0.25)
    process.kill()
    raise AssertionError("the server did not answer")


@pytest.mark.slow
async def test_edit_acknowledged_before_a_kill_survives_it(
    app: Any, client_for: ClientFactory, tmp_path: Path
) -> None:
    setup = await make_study(app)
    token = await token_for(app, "alice")
    with _listening_socket() as probe:
        port = probe.getsockname()[1]
    process = await asyncio.to_thread(
        _start_server, app.state.settings.resolved_database_url, tmp_path, port, 1.0
    )
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}, timeout=30
        ) as alice:
            response = await alice.post(
                f"/api/v1/images/{setup.images[0].id}/annotations?mode=unaided",
                json={"label": "tumor", "x1": 1, "y1": 1, "x2": 20, "y2": 20},
            )
            process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=30)
    assert response.status_code == 201
    reader = await client_for("alice")
    objects = (await reader.get(f"/api/v1/images/{setup.images[0].id}/annotations?mode=unaided")).json()
    assert [item["id"] for item in objects] == [response.json()["id"]]
