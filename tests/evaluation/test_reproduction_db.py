"""The README calibration table, reproduced through the importer, the database and GET /metrics."""

from __future__ import annotations

from typing import Any

import pytest

from app.evaluation import metrics as m
from app.evaluation.importer import import_exact
from reference.published import REGISTER_FILES, ROUNDS, import_plan
from tests.conftest import ClientFactory
from tests.evaluation.test_reproduction_pure import (
    ASTHMA,
    CALIBRATION,
    REGISTER_TOTALS,
    Study,
    concordance_of,
    export_path,
    reference,
)
from tests.factories import make_user

STUDY, TASK = "Asthma study", "asthma"
POOLED_RATES = {
    "class_changed": {"unaided": 0.860, "aided": 0.787},
    "removed": {"unaided": 0.840, "aided": 0.780},
    "duplicate": {"unaided": 0.5625, "aided": 0.675},
}

pytestmark = pytest.mark.skipif(not ASTHMA.is_dir(), reason=f"study data not present at {ASTHMA}")


async def import_asthma(app: Any, study: str = STUDY, task: str = TASK) -> None:
    """The published layout: FirstRound GT as reference and register, SecondRound unchanged set as suggestions."""
    maker = app.state.sessionmaker
    jobs = import_plan(ASTHMA, study, task, tuple(CALIBRATION))
    for request, files in jobs:
        async with maker() as session, session.begin():
            await import_exact(session, request, files)


async def _metrics(app: Any, client_for: ClientFactory, first: bool = True) -> dict[str, Any]:
    if first:
        await make_user(app, "admin", "admin")
    admin = await client_for("admin")
    studies = (await admin.get("/api/v1/studies")).json()
    study_id = next(study["id"] for study in studies if study["name"] == STUDY)
    response = await admin.get(f"/api/v1/studies/{study_id}/metrics", params={"iou": 0.25})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def test_every_number_of_the_calibration_table(app: Any, client_for: ClientFactory) -> None:
    await import_asthma(app)
    metrics = await _metrics(app, client_for)
    task = metrics["tasks"][TASK]

    assert (metrics["iou"], metrics["error_iou"]) == (0.25, 0.25)
    for participant, modes in CALIBRATION.items():
        for mode, expected in modes.items():
            row = task["modes"][mode]["experts"][f"Participant_{participant}"]
            assert row["objects"] == expected.objects, (participant, mode)
            assert row["concordance"] == pytest.approx(expected.concordance, abs=1e-4), (participant, mode)
            assert row["seconds_per_image"] == pytest.approx(expected.seconds, abs=0.01), (participant, mode)
            for name, kind in REGISTER_FILES.items():
                count = task["injected_errors"][kind]["all"][mode]["experts"][f"Participant_{participant}"]
                published = {"total": count["total"], "matched": count["matched"]}
                assert published == {"total": REGISTER_TOTALS[name], "matched": expected.registers[name]}
                assert count["caught"] + count["missed"] == count["total"]
                if kind != "duplicate":  # removed and relabelled cells: caught = found with the right label
                    assert count["caught"] >= count["matched"]
    # The first request rebuilt the task's stored object columns; the second reads them: same numbers.
    assert (await _metrics(app, client_for, first=False))["tasks"] == metrics["tasks"]


async def test_pooled_figures_suggestions_and_statistics(app: Any, client_for: ClientFactory) -> None:
    await import_asthma(app)
    task = (await _metrics(app, client_for))["tasks"][TASK]

    unaided = task["modes"]["unaided"]["summary"]["concordance"]
    aided = task["modes"]["aided"]["summary"]["concordance"]
    assert [unaided[key] for key in ("mean", "min", "max", "sd")] == pytest.approx(
        [0.734, 0.564, 0.823, 0.081], abs=5e-4
    )
    assert [aided[key] for key in ("mean", "min", "max", "sd")] == pytest.approx(
        [0.841, 0.817, 0.858, 0.013], abs=5e-4
    )
    assert task["suggestions"]["concordance"] == pytest.approx(0.826, abs=5e-4)
    for kind, rates in POOLED_RATES.items():
        for mode, rate in rates.items():
            pooled = task["injected_errors"][kind]["all"][mode]["pooled"]
            assert pooled["rate"] == pytest.approx(rate, abs=5e-4), (kind, mode)
            assert pooled["total"] == 10 * REGISTER_TOTALS[_file_of(kind)]
    tests = task["statistics"]["concordance"]
    assert tests["anova_df"] == [1, 18] and tests["paired_df"] == 9
    assert tests["anova_p"] < 0.01 and tests["paired_p"] < 0.01


def _file_of(kind: str) -> str:
    return next(name for name, value in REGISTER_FILES.items() if value == kind)


async def test_database_and_pure_computation_agree(app: Any, client_for: ClientFactory) -> None:
    await import_asthma(app)
    task = (await _metrics(app, client_for))["tasks"][TASK]
    pure = Study()

    for participant in CALIBRATION:
        for mode in ROUNDS:
            expert = pure.counted_arrays(pure.read(export_path(participant, mode)))
            truth = reference(pure, mode, "ground truth")
            row = task["modes"][mode]["experts"][f"Participant_{participant}"]
            assert row["concordance"] == pytest.approx(concordance_of(expert, truth), abs=1e-6)
            seconds = m.seconds_per_image_300s_rule(
                pure.images_seen(pure.read(export_path(participant, mode))),
                expert.images,
                expert.last_edited_seconds,
            )
            assert row["seconds_per_image"] == pytest.approx(seconds, abs=1e-9)
