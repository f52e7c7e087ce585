"""A real `concord serve` under simulated experts, SIGKILLed and restarted twice, and a worker killed mid job.

The short version of `bench/load.py`'s soak: every edit the client was answered 2xx for is in the database
exactly once (same idempotency key, object and kind), no answer was a 5xx, no edit was refused, and the job
whose worker died was finished by the next worker.
"""

from pathlib import Path

import pytest

from app.config import Settings
from bench.load import (
    ExpertPlan,
    free_port,
    seed_study,
    server_process,
    soak,
    wait_healthy,
    worker_process,
)

# commits: real server and worker processes
pytestmark = [pytest.mark.slow, pytest.mark.commits]

EXPERTS = [f"fault{index}" for index in range(4)]
# Kills come after a third and two thirds of the edits, however slow the machine; the time is only a bound.
PLAN = ExpertPlan(max_edits=15, seconds=300.0)


async def test_acknowledged_edits_survive_server_and_worker_kills(
    app: object, settings: Settings, tmp_path: Path
) -> None:
    url = settings.resolved_database_url
    seeded = await seed_study(url, settings.data_dir, EXPERTS, images=3)
    base_url = f"http://127.0.0.1:{free_port()}"
    port = int(base_url.rsplit(":", 1)[1])
    with open(tmp_path / "server.log", "w") as server_log, open(tmp_path / "worker.log", "w") as worker_log:
        server = server_process(port, settings.data_dir, url, server_log)
        worker = worker_process(settings.data_dir, url, worker_log)
        server.start()
        try:
            await wait_healthy(base_url, server)
            result = await soak(
                base_url, server, worker, seeded, url, EXPERTS, PLAN, kills=2, job_seconds=4.0
            )
        finally:
            server.stop()
            worker.stop()

    verdict = result.verdict
    assert result.server_kills == 2
    assert verdict.lost == 0, verdict.examples
    assert verdict.duplicated == 0, verdict.examples
    assert result.phase.count("errors_5xx") == 0
    assert result.phase.refused() == {}, "calls answered 4xx or given up after retries"
    assert verdict.acked == len(EXPERTS) * PLAN.max_edits
    assert result.job.killed_worker_while.startswith("running"), result.job
    assert result.job.status == "succeeded", result.job
    assert result.job.attempts >= 2, "the killed worker's attempt and the one that finished"
