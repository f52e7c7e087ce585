"""EXACT import: every line variant, all-or-nothing on a malformed line, roles, views in first-seen order."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from app.errors import Conflict, Invalid
from app.evaluation.importer import ImportFile, ImportRequest, import_exact
from app.models import Annotation, GroundTruthObject, Image, ImageView, InjectedError, Study, Suggestion
from tests.conftest import ClientFactory
from tests.factories import make_user

V = '{{"x1": "{}","y1": "{}","x2": "{}","y2": "{}",}}'
T1, T2 = "2020-01-23 18:16:32.746330", "2020-01-23 18:16:50.100000"


def line(image: str, label: str, box: tuple[int, int, int, int], deleted: bool = False, at: str = T2) -> str:
    return f"{image}|{label}|{V.format(*box)}|alice|{T1}|alice|{at}|u-{box[0]}|{deleted}|200|150"


EXPERT_FILE = "\n".join(
    [
        "[b.png|alice|2020-01-23 18:10:00.000000|1]",
        "image name|annotation type|not in image",
        "",
        line("a.png", "Neutrophile", (10, 10, 40, 40)),
        line("a.png", "Eosinophile", (50, 50, 80, 80), deleted=True),
        "c.png|Neutrophile|not in image",
        "[b.png|alice|2020-01-23 18:11:00|2]",
    ]
)
GT_FILE = "\n".join(
    [line("a.png", "Neutrophile", (10, 10, 40, 40)), line("b.png", "Eosinophile", (20, 20, 60, 60))]
)


async def _import(app: Any, request: ImportRequest, text: str, name: str = "f.txt") -> Any:
    async with app.state.sessionmaker() as session, session.begin():
        return await import_exact(session, request, [ImportFile(name, text)])


async def _count(app: Any, model: Any) -> int:
    async with app.state.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_expert_file_reads_every_line_variant(app: Any) -> None:
    await _import(app, ImportRequest("S", "T", "classify", "ground-truth"), GT_FILE)
    report = await _import(app, ImportRequest("S", "T", "classify", "expert", mode="unaided"), EXPERT_FILE)

    item = report.files[0]
    assert (item.expert, item.objects, item.deleted, item.visits, item.empty_images) == ("alice", 2, 1, 2, 1)
    assert [(line.line, line.reason) for line in item.skipped] == [(2, "template header"), (3, "blank line")]
    async with app.state.sessionmaker() as session:
        views = await session.execute(
            select(Image.name)
            .join(ImageView, ImageView.image_id == Image.id)
            .order_by(ImageView.first_seen_at)
        )
        assert list(views.scalars()) == ["b.png", "a.png", "c.png"]
        annotation = (await session.scalars(select(Annotation).order_by(Annotation.position))).first()
        assert annotation is not None
        assert annotation.origin == "imported"
        assert annotation.updated_at.replace(tzinfo=None).isoformat(sep=" ") == T2
        image_c = await session.scalar(select(Image).where(Image.name == "c.png"))
        assert image_c is not None
        assert (image_c.width, image_c.file_format) == (0, "missing")


async def test_malformed_line_changes_nothing(app: Any) -> None:
    bad = GT_FILE + "\nd.png|Neutrophile|{not a vector}|a|" + T1 + "|a|" + T1 + "|u|False|200|150"

    with pytest.raises(Invalid, match=r"gt\.txt:3: vector is not readable"):
        await _import(app, ImportRequest("S", "T", "classify", "ground-truth"), bad, "gt.txt")
    assert await _count(app, Study) == 0
    assert await _count(app, GroundTruthObject) == 0


async def test_roles_write_their_tables_and_twice_is_a_conflict(app: Any) -> None:
    await _import(app, ImportRequest("S", "T", "classify", "ground-truth"), GT_FILE)
    await _import(app, ImportRequest("S", "T", "classify", "suggestions"), GT_FILE)
    await _import(
        app, ImportRequest("S", "T", "classify", "injected", error_kind="removed", group=2), GT_FILE
    )

    assert (await _count(app, GroundTruthObject), await _count(app, Suggestion)) == (2, 2)
    assert await _count(app, InjectedError) == 2
    with pytest.raises(Conflict):
        await _import(app, ImportRequest("S", "T", "classify", "ground-truth"), GT_FILE)


async def test_api_import_is_admin_only_and_reports(app: Any, client_for: ClientFactory) -> None:
    await make_user(app, "admin", "admin")
    await make_user(app, "eve")
    data = {"study": "S", "task": "T", "kind": "classify", "role": "ground-truth"}
    files = [("files", ("gt.txt", GT_FILE.encode(), "text/plain"))]

    expert = await client_for("eve")
    assert (await expert.post("/api/v1/import/exact", data=data, files=files)).status_code == 403
    admin = await client_for("admin")
    response = await admin.post("/api/v1/import/exact", data=data, files=files)
    assert response.status_code == 201, response.text
    assert response.json()["files"][0]["stored"] == 2
    image_id = (await admin.get(f"/api/v1/tasks/{response.json()['task_id']}/images")).json()[0]["id"]
    assert (await admin.get(f"/api/v1/images/{image_id}/thumbnail")).status_code == 404


def sized(image: str, box: tuple[int, int, int, int], size: tuple[int, int]) -> str:
    return line(image, "Neutrophile", box).replace("|200|150", f"|{size[0]}|{size[1]}")


async def test_a_placeholder_image_size_is_imported_and_the_task_keeps_its_size(app: Any) -> None:
    await _import(app, ImportRequest("S", "T", "classify", "ground-truth"), GT_FILE)  # a.png, b.png: 200×150
    placeholder = "\n".join(
        [
            sized("a.png", (10, 10, 40, 40), (10000, 10000)),
            sized("a.png", (180, 100, 260, 140), (10000, 10000)),  # beyond the real 200 px width
            sized("b.png", (20, 20, 60, 60), (10000, 10000)),
        ]
    )

    report = await _import(
        app, ImportRequest("S", "T", "classify", "expert", mode="unaided", expert="bob"), placeholder
    )

    item = report.files[0]
    assert (item.stored, item.size_disagreements, item.outside_image) == (3, 3, 1)
    async with app.state.sessionmaker() as session:
        sizes = (
            await session.execute(select(Image.name, Image.width, Image.height).order_by(Image.name))
        ).all()
    assert [tuple(row) for row in sizes] == [("a.png", 200, 150), ("b.png", 200, 150)]


async def test_a_file_that_gives_one_image_two_sizes_is_refused(app: Any) -> None:
    contradicting = "\n".join(
        [sized("a.png", (10, 10, 40, 40), (200, 150)), sized("a.png", (50, 50, 70, 70), (300, 150))]
    )

    with pytest.raises(Invalid, match="earlier in the same file; nothing was imported"):
        await _import(app, ImportRequest("S", "T", "classify", "ground-truth"), contradicting)
    assert await _count(app, Image) == 0
