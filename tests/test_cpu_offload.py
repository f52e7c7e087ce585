"""Long CPU work (injection protocols, metrics, plots) runs off the event loop, with limits checked first.

A probe wraps the work: it records the thread it runs on and then waits until the test has had
`/health` answered. On the loop's thread the wait would block the loop, so `/health` could not be
answered meanwhile (the old code: the probe gave up waiting and saw no answer). On PostgreSQL the test
also counts sessions left idle in a transaction while the work runs: there must be none.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from httpx import AsyncClient, Response
from sqlalchemy import text

from app.config import Settings
from app.db import make_engine
from app.evaluation import plots
from app.evaluation import service as evaluation_service
from app.evaluation.importer import ImportRequest
from app.suggestions import protocols
from app.suggestions import service as suggestions_service
from tests.conftest import ClientFactory
from tests.evaluation.test_exports import MORE
from tests.evaluation.test_import import GT_FILE, _import
from tests.factories import make_user
from tests.suggestions.test_injection_api import CELLS, synthetic_task

# counts the transactions other connections leave open (PostgreSQL): each session needs its own connection
pytestmark = pytest.mark.commits

PROBE_GIVES_UP_S = 20.0


class Probe:
    """Stands in for a CPU-bound function: notes its thread, waits for the test's signal, then runs it."""

    def __init__(self, work: Callable[..., Any]) -> None:
        self.work = work
        self.started = threading.Event()
        self.proceed = threading.Event()
        self.threads: list[int] = []
        self.saw_signal: list[bool] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.threads.append(threading.get_ident())
        self.started.set()
        self.saw_signal.append(self.proceed.wait(timeout=PROBE_GIVES_UP_S))
        return self.work(*args, **kwargs)


async def _idle_transactions(settings: Settings) -> int | None:
    """Sessions idle inside a transaction (PostgreSQL); None on SQLite, whose reads hold none."""
    if settings.is_sqlite:
        return None
    engine = make_engine(settings.resolved_database_url)
    try:
        async with engine.connect() as connection:
            query = (
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
            )
            return int((await connection.execute(text(query))).scalar_one())
    finally:
        await engine.dispose()


async def _while_probed(
    probe: Probe, client: AsyncClient, settings: Settings, request: Coroutine[Any, Any, Response]
) -> tuple[Response, Response, int | None]:
    """Start the request, and while the probe holds its work: /health and the idle-transaction count."""
    pending = asyncio.ensure_future(request)
    while not probe.started.is_set() and not pending.done():
        await asyncio.sleep(0.01)
    health = await client.get("/api/v1/health")
    idle = await _idle_transactions(settings)
    probe.proceed.set()
    return await pending, health, idle


def _assert_ran_off_the_loop(probe: Probe, health: Response, idle: int | None) -> None:
    assert health.status_code == 200
    assert probe.threads, "the work ran on the event loop"
    assert threading.get_ident() not in probe.threads, "the work ran on the event loop"
    assert probe.saw_signal == [True] * len(probe.threads), "/health was not answered while the work ran"
    assert idle in (None, 0), f"{idle} transaction(s) stayed open while the work ran"


async def test_applying_a_protocol_runs_off_the_loop_with_no_transaction_open(
    app: object, client_for: ClientFactory, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    task = await synthetic_task(app, client_for, kind="classify", images=4, per_image=3, labels=CELLS[:3])
    probe = Probe(protocols.apply_protocol)
    monkeypatch.setattr(protocols, "apply_protocol", probe)
    body = {"protocol": {"steps": [{"kind": "removed", "count": 2}]}}
    url = f"/api/v1/suggestion-sets/{task.source_set_id}/inject"
    response, health, idle = await _while_probed(probe, task.admin, settings, task.admin.post(url, json=body))
    assert response.status_code == 201, response.text
    assert response.json()["total"] == 2
    _assert_ran_off_the_loop(probe, health, idle)


async def _imported_study(app: object, client_for: ClientFactory) -> tuple[int, AsyncClient]:
    await make_user(app, "admin", "admin")
    report = await _import(app, ImportRequest("S", "T", "classify", "ground-truth"), GT_FILE)
    await _import(app, ImportRequest("S", "T", "classify", "expert", mode="unaided"), MORE)
    return report.study_id, await client_for("admin")


async def test_metrics_are_computed_off_the_loop_with_no_transaction_open(
    app: object, client_for: ClientFactory, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    study_id, admin = await _imported_study(app, client_for)
    probe = Probe(evaluation_service.modes_parts)  # what a task's modes not kept are computed by
    monkeypatch.setattr(evaluation_service, "modes_parts", probe)
    request = admin.get(f"/api/v1/studies/{study_id}/metrics")
    response, health, idle = await _while_probed(probe, admin, settings, request)
    assert response.status_code == 200
    assert response.json()["tasks"]["T"]["modes"]["unaided"]["experts"]["alice"]["concordance"] == 1.0
    _assert_ran_off_the_loop(probe, health, idle)


async def test_plots_are_drawn_off_the_loop(
    app: object, client_for: ClientFactory, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    study_id, admin = await _imported_study(app, client_for)
    probe = Probe(plots.render)
    monkeypatch.setattr(plots, "render", probe)
    request = admin.get(f"/studies/{study_id}/evaluation/plots/T/concordance.png")
    response, health, idle = await _while_probed(probe, admin, settings, request)
    assert response.status_code == 200
    assert response.content[:4] == b"\x89PNG"
    _assert_ran_off_the_loop(probe, health, idle)


class _NoWork:
    """Stands in for the work that must not start; records calls and refuses to do anything."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        raise RuntimeError("the protocol's work started although the request could be refused first")


@pytest.mark.parametrize(
    ("step", "reason"),
    [
        ({"kind": "false_positive", "count": 10**9}, "less than or equal to 100000"),
        ({"kind": "false_positive", "per_image": 10**7, "images": 1}, "less than or equal to 100000"),
        ({"kind": "false_positive", "count": 90_000}, "can hold only 256"),
        ({"kind": "removed", "count": 50_000}, "can hold only 12"),
        ({"kind": "false_positive", "per_image": 100, "images": 4}, "asks for 400 errors"),
    ],
)
async def test_requests_beyond_the_limits_are_refused_before_any_work(
    app: object,
    client_for: ClientFactory,
    monkeypatch: pytest.MonkeyPatch,
    step: dict[str, Any],
    reason: str,
) -> None:
    # four 200×150 images with 20×20 px cells: a fake takes at least 21×21 px of the 195×145 usable
    # px, so an image holds at most 64 fakes; the task holds 12 true objects
    task = await synthetic_task(app, client_for, kind="classify", images=4, per_image=3, labels=CELLS[:3])
    no_work = _NoWork()
    monkeypatch.setattr(protocols, "_apply_step", no_work)
    monkeypatch.setattr(suggestions_service, "_apply", no_work, raising=False)
    for path in ("inject/preview", "inject"):
        url = f"/api/v1/suggestion-sets/{task.source_set_id}/{path}"
        response = await task.admin.post(url, json={"protocol": {"steps": [step]}})
        assert response.status_code == 422, response.text
        assert reason in response.text
    assert no_work.calls == 0
