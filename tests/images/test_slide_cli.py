"""`concord slide add|list|regions` on a fresh data dir: one stored file, regions as images of a task."""

import asyncio
import json
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select

from app.config import Settings
from app.db import make_engine, make_sessionmaker, unit_of_work
from app.migrate import upgrade
from app.models import Image, SlideRegion
from app.studies import service as studies
from app.studies.schemas import LabelIn, StudyCreate, TaskCreate
from tests.images.slidefiles import write_svs
from tests.images.test_slide_formats import tissue


def _concord(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"CONCORD_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "app.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)


async def _study_and_task(settings: Settings) -> None:
    engine = make_engine(settings.resolved_database_url)
    async with unit_of_work(make_sessionmaker(engine)) as session:
        study = await studies.create_study(session, StudyCreate(name="mitoses"))
        labels = [LabelIn(name="mitosis")]
        await studies.create_task(session, study, TaskCreate(name="count", kind="detect", labels=labels))
    await engine.dispose()


async def _regions(settings: Settings) -> list[tuple[str, int, int, int, int, int]]:
    engine = make_engine(settings.resolved_database_url)
    async with make_sessionmaker(engine)() as session:
        query = select(Image, SlideRegion.slide_id).join(SlideRegion, SlideRegion.image_id == Image.id)
        rows = [
            (image.name, slide_id, image.offset_x, image.offset_y, image.width, image.height)
            for image, slide_id in (await session.execute(query.order_by(Image.id))).all()
        ]
    await engine.dispose()
    return rows


def test_slide_commands_store_once_and_make_regions(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    settings.data_dir.mkdir()
    upgrade(settings.resolved_database_url)
    asyncio.run(_study_and_task(settings))
    slide_file = write_svs(tmp_path / "scan.svs", tissue(3000, 2000), mpp=0.5)

    added = _concord(tmp_path, "slide", "add", "1", str(slide_file), "--name", "scan-A")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["file_format"] == "svs"
    listed = json.loads(_concord(tmp_path, "slide", "list", "1").stdout)
    assert [(item["name"], item["microns_per_pixel"]) for item in listed] == [("scan-A", 0.5)]
    assert json.loads(_concord(tmp_path, "slide", "list", "mitoses").stdout) == listed  # by name too
    unknown = _concord(tmp_path, "slide", "list", "no such study")
    assert unknown.returncode != 0
    assert "no study 'no such study'" in unknown.stderr

    made = _concord(
        tmp_path, "slide", "regions", "1", "1", "--rect", "roi:10,20,300,200", "--hpf", "hpf:1500,1000,1"
    )
    assert made.returncode == 0, made.stderr
    # One HPF (0.237 mm²) at 0.5 µm/px: 948 000 px², 4:3 → 1124 × 843, centred on (1500, 1000).
    assert asyncio.run(_regions(settings)) == [("roi", 1, 10, 20, 300, 200), ("hpf", 1, 938, 578, 1124, 843)]
    assert len([path for path in settings.image_dir.rglob("*") if path.is_file()]) == 1

    refused = _concord(tmp_path, "slide", "regions", "1", "1", "--rect", "out:2900,0,200,10")
    assert refused.returncode == 2
    assert "outside the 3000×2000 slide" in refused.stderr
