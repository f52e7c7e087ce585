"""A simulated study says so in every export (EXACT, COCO, JSON, CSV, consensus, metrics CSV, the bundle) and
on its pages; a study of people's work says it is not simulated, and its EXACT text stays plain EXACT."""

import io
import json
import zipfile
from typing import Any

from sqlalchemy import select

from app.evaluation.bundle import import_study
from app.evaluation.exact_format import SIMULATED_HEADER, parse_exact
from app.evaluation.importer import ImportRequest
from app.models import Study
from tests.conftest import ClientFactory
from tests.evaluation.test_exports import MORE
from tests.evaluation.test_import import GT_FILE, _import
from tests.factories import make_user
from tests.pages.test_pages import browser_client

SIMULATION = {"experts": 4, "preset": "paper", "seed": 3, "speedup": 50.0, "expert_ids": []}


async def _study(app: Any, client_for: ClientFactory, simulated: bool) -> tuple[Any, int, int]:
    await make_user(app, "admin", "admin")
    report = await _import(app, ImportRequest("S", "T", "classify", "ground-truth"), GT_FILE)
    await _import(app, ImportRequest("S", "T", "classify", "expert", mode="unaided"), MORE)
    if simulated:
        async with app.state.sessionmaker() as session, session.begin():
            study = await session.get(Study, report.study_id)
            assert study is not None
            study.simulation_time_scale, study.simulation = 50.0, SIMULATION
    return await client_for("admin"), report.study_id, report.task_id


async def _get(admin: Any, url: str, **params: Any) -> str:
    response = await admin.get(url, params=params)
    assert response.status_code == 200, response.text
    text: str = response.text
    return text


async def test_every_export_of_a_simulated_study_is_marked(app: Any, client_for: ClientFactory) -> None:
    admin, study_id, task_id = await _study(app, client_for, simulated=True)
    objects = f"/api/v1/tasks/{task_id}/annotations/export"
    exact = await _get(admin, objects, format="exact", expert="alice", mode="unaided")
    assert exact.splitlines()[0] == SIMULATED_HEADER
    parsed = parse_exact(exact)
    assert [skipped.reason for skipped in parsed.skipped] == ["Concord comment"] and len(parsed.objects) == 3
    truth = await _get(admin, f"/api/v1/tasks/{task_id}/ground-truth/export", format="exact")
    assert truth.splitlines()[0] == SIMULATED_HEADER
    coco = json.loads(await _get(admin, objects, format="coco"))
    assert coco["info"]["simulated"] is True and "simulated experts" in coco["info"]["description"]
    assert json.loads(await _get(admin, objects, format="json"))["simulated"] is True
    rows = (await _get(admin, objects, format="csv")).splitlines()
    assert (
        rows[0].endswith(",simulated") and all(row.endswith(",True") for row in rows[1:]) and len(rows) == 4
    )
    nothing = json.loads(await _get(admin, objects, format="coco", mode="aided"))  # alice has no aided work
    assert nothing["annotations"] == [] and nothing["info"]["simulated"] is True

    consensus = f"/api/v1/tasks/{task_id}/consensus/export"
    table = (await _get(admin, consensus, mode="unaided", format="csv")).splitlines()
    assert table[0].endswith(",simulated") and table[1].endswith(",True")
    assert (await _get(admin, consensus, mode="unaided", format="exact")).startswith(SIMULATED_HEADER + "\n")
    assert (
        json.loads(await _get(admin, consensus, mode="unaided", format="coco"))["info"]["simulated"] is True
    )
    assert json.loads(await _get(admin, consensus, mode="unaided", format="json"))["simulated"] is True
    experts = (await _get(admin, f"/api/v1/studies/{study_id}/metrics/experts.csv")).splitlines()
    assert experts[0].endswith(",simulated") and experts[1].endswith(",True")

    # re-imported, the marked EXACT text gives the same objects
    again = await _import(
        app, ImportRequest("S", "T2", "classify", "expert", mode="unaided", expert="alice"), exact
    )
    assert again.files[0].objects == 3


async def test_the_bundle_of_a_simulated_study_is_marked_and_imports_as_simulated(
    app: Any, client_for: ClientFactory
) -> None:
    admin, study_id, _ = await _study(app, client_for, simulated=True)
    payload = (await admin.get(f"/api/v1/studies/{study_id}/export.zip")).content
    archive = zipfile.ZipFile(io.BytesIO(payload))
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["simulated"] is True
    assert manifest["simulation"] == {
        "experts": 4,
        "preset": "paper",
        "seed": 3,
        "speedup": 50.0,
        "time_scale": 50.0,
    }
    assert json.loads(archive.read("design.json"))["simulated"] is True
    assert (
        archive.read("README.md").decode().startswith("> **Simulated study.** S was run by simulated experts")
    )
    assert archive.read("tasks/T/experts/alice-unaided.exact.txt").decode().startswith(SIMULATED_HEADER)
    assert archive.read("tasks/T/ground-truth.exact.txt").decode().startswith(SIMULATED_HEADER)
    assert json.loads(archive.read("tasks/T/ground-truth.coco.json"))["info"]["simulated"] is True
    assert archive.read("metrics/summary.csv").decode().splitlines()[0].endswith(",simulated")
    async with app.state.sessionmaker() as session, session.begin():
        imported = await import_study(session, payload, rename="S again")
    async with app.state.sessionmaker() as session:
        study = await session.scalar(select(Study).where(Study.id == imported.study_id))
        assert study is not None and study.simulated and study.simulation == SIMULATION


async def test_a_study_of_people_is_marked_not_simulated_and_its_exact_is_plain(
    app: Any, client_for: ClientFactory
) -> None:
    admin, study_id, task_id = await _study(app, client_for, simulated=False)
    objects = f"/api/v1/tasks/{task_id}/annotations/export"
    exact = await _get(admin, objects, format="exact", expert="alice", mode="unaided")
    assert "# concord" not in exact
    assert "Concord comment" not in [skipped.reason for skipped in parse_exact(exact).skipped]
    assert json.loads(await _get(admin, objects, format="coco"))["info"]["simulated"] is False
    rows = (await _get(admin, objects, format="csv")).splitlines()
    assert rows[0].endswith(",simulated") and all(row.endswith(",False") for row in rows[1:])
    payload = (await admin.get(f"/api/v1/studies/{study_id}/export.zip")).content
    archive = zipfile.ZipFile(io.BytesIO(payload))
    assert json.loads(archive.read("manifest.json"))["simulated"] is False
    assert archive.read("README.md").decode().startswith("# Study bundle: S")


async def test_pages_mark_a_simulated_study(app: Any, client_for: ClientFactory) -> None:
    _, study_id, _ = await _study(app, client_for, simulated=True)
    client, _ = await browser_client(app, "admin")
    async with client:
        for url in (f"/admin/studies/{study_id}", f"/studies/{study_id}/evaluation"):
            page = await client.get(url)
            assert page.status_code == 200 and 'class="simulated-badge"' in page.text, url
        for url in ("/admin", "/admin/studies", "/admin/evaluation"):
            page = await client.get(url)
            assert page.status_code == 200 and 'class="tag simulated-tag"' in page.text, url
