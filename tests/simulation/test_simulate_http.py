"""Simulated experts through the real HTTP API (in process): a whole study, deterministic for a seed."""

import asyncio
from pathlib import Path

import pytest

from app.config import Settings
from app.demo import DEMO_STUDY
from app.migrate import upgrade
from app.simulation.cli import run_in_process
from tests.simulation.helpers import small_study, study_content, visit_seconds

pytestmark = pytest.mark.slow


async def _sqlite_settings(folder: Path) -> Settings:
    settings = Settings(
        data_dir=folder,
        database_url=f"sqlite+aiosqlite:///{folder / 'concord.db'}",
        argon2_time_cost=1,
        argon2_memory_kib=64,
    )
    folder.mkdir(parents=True)
    await asyncio.to_thread(upgrade, settings.resolved_database_url)
    return settings


async def test_two_runs_with_one_seed_give_the_same_study(tmp_path: Path) -> None:
    contents = []
    for run in ("first", "second"):
        settings = await _sqlite_settings(tmp_path / run)
        await small_study(settings)
        report = await run_in_process(settings, DEMO_STUDY, "admin", experts=2, speedup=2000, seed=5)
        assert report.edits > 0
        assert report.requests > report.edits
        contents.append(await study_content(settings))
    first, second = contents
    simulated, simulation = first["study"]
    assert simulated
    assert {key: simulation[key] for key in ("experts", "preset", "seed", "speedup")} == {
        "experts": 2,
        "preset": "paper",
        "seed": 5,
        "speedup": 2000.0,
    }
    assert first["annotations"]
    assert first["events_per_expert"]
    assert {row[2:4] for row in first["assignments"]} == {("unaided", "finished"), ("aided", "finished")}
    assert all(row[4] for row in first["assignments"] if row[2] == "aided"), "washout override recorded"
    assert len(first["done"]) == 2 * 2 * 5
    assert first == second


async def test_recorded_seconds_are_the_models_not_the_wall_clocks(tmp_path: Path) -> None:
    settings = await _sqlite_settings(tmp_path / "timed")
    await small_study(settings)
    report = await run_in_process(settings, DEMO_STUDY, "admin", experts=1, speedup=40, seed=0)
    recorded = await visit_seconds(settings)
    assert report.wall_s < sum(report.model_seconds.values()) / 5  # far faster than real time
    for mode, seconds in report.model_seconds.items():
        # each image's clock runs seconds / speedup of wall time; a round trip × 40 remains per image
        assert recorded[mode] == pytest.approx(seconds, rel=0.15), mode
