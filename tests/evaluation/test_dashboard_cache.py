"""The dashboard, its plot downloads and its CSV tables share one cached evaluation per study content and
settings; an edit of the study computes afresh. Bootstrap intervals load after the main figures."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from sqlalchemy import func, select, update

from app.evaluation import cache, review, service
from app.evaluation.importer import ImportRequest
from app.models import Annotation
from tests.conftest import ClientFactory
from tests.evaluation.test_exports import MORE
from tests.evaluation.test_import import GT_FILE, _import
from tests.factories import make_user

HTMX = {"HX-Request": "true"}


class Calls:
    """Counts the calls of a function of a module while passing them through."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> None:
        self.count = 0
        original = getattr(module, name)

        def counted(*args: Any) -> Any:
            self.count += 1
            return original(*args)

        monkeypatch.setattr(module, name, counted)


async def _study(app: Any) -> int:
    await make_user(app, "admin", "admin")
    report = await _import(app, ImportRequest("S", "T", "classify", "ground-truth"), GT_FILE)
    await _import(app, ImportRequest("S", "T", "classify", "expert", mode="unaided", expert="P1"), MORE)
    await _import(app, ImportRequest("S", "T", "classify", "expert", mode="unaided", expert="P2"), GT_FILE)
    return int(report.study_id)


async def test_downloads_use_the_dashboard_evaluation_until_the_study_changes(
    app: Any, client_for: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache.clear()
    study_id = await _study(app)
    admin = await client_for("admin")
    page = f"/studies/{study_id}/evaluation"
    computed = Calls(monkeypatch, service, "all_task_metrics")

    block = await admin.get(page, params={"bootstrap": 0}, headers=HTMX)
    assert block.status_code == 200
    assert computed.count == 1
    links = re.findall(r'href="(/[^"]+\.(?:svg|png|csv)\?[^"]+)"', block.text)
    assert len([link for link in links if "/plots/" in link]) == 6
    assert any(".csv?" in link for link in links)
    for link in links * 2:  # every download of the page, twice
        response = await admin.get(link.replace("&amp;", "&"))
        assert response.status_code == 200, link
    assert computed.count == 1
    again = await admin.get(page, params={"bootstrap": 0}, headers=HTMX)
    assert computed.count == 1
    assert "kept from then" in again.text

    async with app.state.sessionmaker() as session, session.begin():
        first = await session.scalar(select(func.min(Annotation.id)))
        edited = await session.execute(
            update(Annotation).where(Annotation.id == first).values(x2=Annotation.x2 + 5)
        )
        assert edited.rowcount == 1
    svg = await admin.get(f"{page}/plots/T/concordance.svg", params={"bootstrap": 0})
    assert svg.status_code == 200
    assert computed.count == 2
    await admin.get(f"{page}/plots/T/concordance.png", params={"bootstrap": 0})
    assert computed.count == 2
    await admin.get(f"{page}/plots/T/concordance.svg", params={"bootstrap": 0, "iou": 0.5})
    assert computed.count == 3  # other settings, another evaluation


async def test_intervals_load_after_the_main_figures_and_are_computed_once(
    app: Any, client_for: ClientFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache.clear()
    review._CACHE.clear()
    study_id = await _study(app)
    admin = await client_for("admin")
    page = f"/studies/{study_id}/evaluation"
    computed = Calls(monkeypatch, service, "all_task_metrics")
    bootstrapped = Calls(monkeypatch, review, "uncertainty_of_task")
    settings = {"bootstrap": 200, "seed": 3}

    block = await admin.get(page, params=settings, headers=HTMX)
    assert bootstrapped.count == 0
    assert "Computing 95 % bootstrap intervals (200 replicates)" in block.text
    assert not any("ci-" in svg for svg in _svgs(block.text))  # drawn without error bars meanwhile
    loader = re.search(r'hx-get="(/studies/\d+/evaluation/intervals/T\?[^"]+)"', block.text)
    assert loader is not None

    intervals = await admin.get(loader.group(1).replace("&amp;", "&"), headers=HTMX)
    assert intervals.status_code == 200
    assert bootstrapped.count == 1
    assert 'class="task-plots"' in intervals.text
    assert "hx-get" not in intervals.text
    seconds, concordance, injected = _svgs(intervals.text)
    assert 'id="ci-seconds-unaided-mean"' in seconds
    assert 'id="ci-concordance-unaided-mean"' in concordance
    assert "no data" in injected  # a study without injected errors
    assert "concordance" in intervals.text
    assert "seconds_per_image" in intervals.text
    svg = await admin.get(f"{page}/plots/T/concordance.svg", params=settings)
    assert 'id="ci-concordance-unaided-mean"' in svg.text
    assert bootstrapped.count == 1
    drawn = await admin.get(page, params=settings, headers=HTMX)
    assert "Computing 95 %" not in drawn.text
    assert bootstrapped.count == 1
    assert computed.count == 1
    assert (await admin.get(f"{page}/intervals/nope", params=settings)).status_code == 404


def _svgs(html: str) -> list[str]:
    return [
        base64.b64decode(data).decode() for data in re.findall(r"data:image/svg\+xml;base64,([^\"]+)", html)
    ]


def test_the_rows_digest_follows_values_not_the_objects_that_hold_them() -> None:
    from app.evaluation.repository import StudyRows

    def rows(views: list[tuple[Any, ...]]) -> StudyRows:
        return StudyRows([(1, "T")], [], [], [], {}, views, [], {}, [])

    mode = "unaided"
    shared = [(1, mode, 2, 3), (1, mode, 2, 4)]  # one string object in both rows
    apart = [(1, "".join(["un", "aided"]), 2, 3), (1, "".join(["un", "aided"]), 2, 4)]
    assert cache.rows_digest(rows(shared)) == cache.rows_digest(rows(apart))
    assert cache.rows_digest(rows(shared)) != cache.rows_digest(rows([(1, mode, 2, 3), (1, mode, 2, 5)]))
    assert cache.rows_digest(rows([(1, 0.1)])) != cache.rows_digest(rows([(1, 0.1 + 1e-17 * 2)]))
