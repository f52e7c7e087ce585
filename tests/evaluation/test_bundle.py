"""Study bundle: export through the route, import under another name, the same metrics; bad bundles refused
with nothing written."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import pytest
from sqlalchemy import func, select

from app.errors import AppError, Conflict, Invalid
from app.evaluation.bundle import import_study, read_bundle
from app.evaluation.importer import ImportRequest
from app.models import Annotation, Study, User
from tests.conftest import ClientFactory
from tests.evaluation.test_exports import MORE
from tests.evaluation.test_import import GT_FILE, _import
from tests.evaluation.test_reproduction_db import import_asthma
from tests.evaluation.test_reproduction_pure import ASTHMA
from tests.factories import make_user


async def _metrics(admin: Any, study_id: int) -> dict[str, Any]:
    response = await admin.get(f"/api/v1/studies/{study_id}/metrics", params={"bootstrap": 20})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    body.pop("timing")
    body.pop("study")
    for task in body["tasks"].values():  # a database id: new rows get new ids
        task["suggestions"].pop("suggestion_set_id")
    return body


async def _study_id(app: Any, name: str) -> int:
    async with app.state.sessionmaker() as session:
        return int((await session.scalar(select(Study.id).where(Study.name == name))) or 0)


async def _round_trip(app: Any, admin: Any, name: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    source = await _study_id(app, name)
    response = await admin.get(f"/api/v1/studies/{source}/export.zip")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    payload = response.content
    async with app.state.sessionmaker() as session, session.begin():
        imported = await import_study(session, payload, rename=f"{name} again")
    return await _metrics(admin, source), await _metrics(admin, imported.study_id), payload


async def test_a_hand_made_study_round_trips_with_identical_metrics(
    app: Any, client_for: ClientFactory
) -> None:
    await make_user(app, "admin", "admin")
    await _import(app, ImportRequest("S", "T", "detect", "ground-truth"), GT_FILE)
    await _import(app, ImportRequest("S", "T", "detect", "expert", mode="unaided"), MORE)
    await _import(app, ImportRequest("S", "T", "detect", "injected", error_kind="removed", group=1), GT_FILE)
    admin = await client_for("admin")

    before, after, payload = await _round_trip(app, admin, "S")

    assert _differences(before, after) == []
    names = set(zipfile.ZipFile(io.BytesIO(payload)).namelist())
    for path in (
        "README.md",
        "manifest.json",
        "design.json",
        "protocols.json",
        "data/injected_error.json",
        "data/annotation_event.json",
        "tasks/T/ground-truth.exact.txt",
        "tasks/T/ground-truth.coco.json",
        "tasks/T/experts/alice-unaided.exact.txt",
        "tasks/T/experts/alice-unaided.coco.json",
        "log/edits.csv",
        "log/visits.csv",
        "metrics/metrics.json",
        "metrics/experts.csv",
        "plots/T-concordance.svg",
    ):
        assert path in names, path
    users = json.loads(zipfile.ZipFile(io.BytesIO(payload)).read("data/user_account.json"))
    assert users["columns"] == ["id", "name", "role"]  # no password hashes leave


@pytest.mark.skipif(not ASTHMA.is_dir(), reason=f"study data not present at {ASTHMA}")
async def test_the_published_asthma_study_round_trips(app: Any, client_for: ClientFactory) -> None:
    await make_user(app, "admin", "admin")
    await import_asthma(app)
    admin = await client_for("admin")

    before, after, _ = await _round_trip(app, admin, "Asthma study")

    assert _differences(before, after) == []
    assert after["tasks"]["asthma"]["modes"]["aided"]["summary"]["concordance"]["mean"] == pytest.approx(
        0.841, abs=5e-4
    )


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = set(a) | set(b)
        return [
            line
            for key in sorted(keys, key=str)
            for line in _differences(a.get(key), b.get(key), f"{path}/{key}")
        ]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def _zip(files: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for path, content in files.items():
            archive.writestr(path, content if isinstance(content, str | bytes) else json.dumps(content))
    return buffer.getvalue()


async def test_bad_bundles_are_refused_and_nothing_is_written(app: Any, client_for: ClientFactory) -> None:
    await make_user(app, "admin", "admin")
    await _import(app, ImportRequest("S", "T", "detect", "ground-truth"), GT_FILE)
    await _import(app, ImportRequest("S", "T", "detect", "expert", mode="unaided"), MORE)
    admin = await client_for("admin")
    payload = (await admin.get(f"/api/v1/studies/{await _study_id(app, 'S')}/export.zip")).content
    original = zipfile.ZipFile(io.BytesIO(payload))
    files = {name: original.read(name) for name in original.namelist()}
    manifest = json.loads(files["manifest.json"])
    annotations = json.loads(files["data/annotation.json"])
    dangling = dict(annotations, rows=[[*row] for row in annotations["rows"]])
    dangling["rows"][-1][dangling["columns"].index("image_id")] = 999_999

    bad = {
        "not a zip": b"PK\x03\x04 nothing",
        "no manifest": _zip({"data/study.json": "{}"}),
        "wrong version": _zip({**files, "manifest.json": {**manifest, "format_version": 99}}),
        "broken json": _zip({**files, "data/label.json": "{"}),
        "unknown column": _zip(
            {**files, "data/label.json": {"columns": ["id", "colour_of_sky"], "rows": []}}
        ),
        "dangling key": _zip({**files, "data/annotation.json": dangling}),
        "missing table": _zip(
            {path: content for path, content in files.items() if path != "data/image.json"}
        ),
    }
    async with app.state.sessionmaker() as session:
        counts = (
            await session.scalar(select(func.count()).select_from(Study)),
            await session.scalar(select(func.count()).select_from(Annotation)),
            await session.scalar(select(func.count()).select_from(User)),
        )
    for reason, content in bad.items():
        with pytest.raises(Invalid):
            async with app.state.sessionmaker() as session, session.begin():
                await import_study(session, content, rename="S2")
        async with app.state.sessionmaker() as session:
            now = (
                await session.scalar(select(func.count()).select_from(Study)),
                await session.scalar(select(func.count()).select_from(Annotation)),
                await session.scalar(select(func.count()).select_from(User)),
            )
        assert now == counts, reason
    with pytest.raises(Conflict):
        async with app.state.sessionmaker() as session, session.begin():
            await import_study(session, payload)  # the name exists
    assert issubclass(Invalid, AppError)
    assert set(read_bundle(payload)) >= {"study", "annotation", "injected_error"}


def test_export_and_import_study_commands_round_trip_into_a_fresh_concord(tmp_path: Any) -> None:
    import subprocess
    import sys

    (tmp_path / "gt.txt").write_text(GT_FILE, encoding="utf-8")
    (tmp_path / "alice.txt").write_text(MORE, encoding="utf-8")
    bundle = tmp_path / "S.zip"

    def concord(data: str, *args: str) -> str:
        env = {"CONCORD_DATA_DIR": str(tmp_path / data), "PATH": "/usr/bin:/bin"}
        done = subprocess.run(
            [sys.executable, "-m", "app.cli", *args], env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    for data in ("first", "fresh"):
        concord(data, "migrate")
    concord(
        "first",
        "import-exact",
        str(tmp_path / "gt.txt"),
        "--study",
        "S",
        "--task",
        "T",
        "--kind",
        "detect",
        "--role",
        "ground-truth",
    )
    concord(
        "first",
        "import-exact",
        str(tmp_path / "alice.txt"),
        "--study",
        "S",
        "--task",
        "T",
        "--kind",
        "detect",
        "--role",
        "expert",
        "--mode",
        "unaided",
    )
    assert "wrote" in concord("first", "export-study", "--study", "S", "--out", str(bundle))
    assert "imported" in concord("fresh", "import-study", str(bundle))

    def metrics(data: str) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(concord(data, "evaluate", "--study", "S", "--json"))
        result.pop("timing")
        return result

    assert metrics("fresh") == metrics("first")
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"not a zip at all")
    env = {"CONCORD_DATA_DIR": str(tmp_path / "fresh"), "PATH": "/usr/bin:/bin"}
    refused = subprocess.run(
        [sys.executable, "-m", "app.cli", "import-study", str(broken)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode != 0
    assert "not a study bundle" in refused.stderr + refused.stdout
    assert "Traceback" not in refused.stderr
