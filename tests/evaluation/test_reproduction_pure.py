"""Reproduces the calibration table of shared/data/exact-study/README.md from the real Asthma exports."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from app.evaluation import metrics as m
from app.evaluation.exact_format import ExactArrays, ExactFile, index_of, read_exact, to_arrays
from reference import published
from reference.published import ROUNDS

ASTHMA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "exact-study" / "Asthma"
REGISTER_KINDS = ("changed", "deleted", "nms")
LABELS = index_of(["Eosinophile", "Lymohozyten", "Makrophagen", "Mastzellen", "Neutrophile"])


@dataclass(frozen=True)
class Expected:
    objects: int
    seconds: float
    concordance: float
    registers: dict[str, int]


# README calibration table; seconds per image without the template header ("not an image").
CALIBRATION: dict[int, dict[str, Expected]] = {
    3: {
        "unaided": Expected(397, 56.20, 0.5641, {"changed": 13, "deleted": 5, "nms": 6}),
        "aided": Expected(419, 13.05, 0.8529, {"changed": 13, "deleted": 5, "nms": 7}),
    },
    4: {
        "unaided": Expected(413, 140.25, 0.7774, {"changed": 14, "deleted": 3, "nms": 4}),
        "aided": Expected(414, 12.55, 0.8427, {"changed": 15, "deleted": 5, "nms": 4}),
    },
    5: {
        "unaided": Expected(406, 96.60, 0.8227, {"changed": 12, "deleted": 5, "nms": 5}),
        "aided": Expected(404, 18.10, 0.8563, {"changed": 14, "deleted": 4, "nms": 4}),
    },
    6: {
        "unaided": Expected(402, 72.80, 0.7836, {"changed": 13, "deleted": 5, "nms": 4}),
        "aided": Expected(408, 12.50, 0.8479, {"changed": 12, "deleted": 4, "nms": 4}),
    },
    7: {
        "unaided": Expected(409, 95.80, 0.5932, {"changed": 11, "deleted": 4, "nms": 5}),
        "aided": Expected(418, 2.85, 0.8296, {"changed": 3, "deleted": 1, "nms": 8}),
    },
    8: {
        "unaided": Expected(410, 85.15, 0.7490, {"changed": 12, "deleted": 3, "nms": 5}),
        "aided": Expected(414, 20.80, 0.8312, {"changed": 15, "deleted": 4, "nms": 6}),
    },
    9: {
        "unaided": Expected(406, 126.50, 0.7679, {"changed": 13, "deleted": 5, "nms": 3}),
        "aided": Expected(412, 29.45, 0.8167, {"changed": 13, "deleted": 5, "nms": 5}),
    },
    11: {
        "unaided": Expected(408, 114.50, 0.7656, {"changed": 13, "deleted": 5, "nms": 4}),
        "aided": Expected(410, 17.95, 0.8380, {"changed": 12, "deleted": 4, "nms": 4}),
    },
    12: {
        "unaided": Expected(410, 173.00, 0.7422, {"changed": 13, "deleted": 4, "nms": 5}),
        "aided": Expected(419, 25.05, 0.8583, {"changed": 12, "deleted": 4, "nms": 6}),
    },
    13: {
        "unaided": Expected(402, 119.05, 0.7753, {"changed": 15, "deleted": 3, "nms": 4}),
        "aided": Expected(412, 3.50, 0.8366, {"changed": 9, "deleted": 3, "nms": 6}),
    },
}
REGISTER_TOTALS = {"changed": 15, "deleted": 5, "nms": 8}
CASES = [(participant, mode) for participant in CALIBRATION for mode in ROUNDS]


@dataclass
class Study:
    image_ids: dict[str, int] = field(default_factory=dict)
    parsed: dict[Path, ExactFile] = field(default_factory=dict)

    def read(self, path: Path) -> ExactFile:
        if path not in self.parsed:
            self.parsed[path] = read_exact(path)
        return self.parsed[path]

    def counted_arrays(self, parsed: ExactFile) -> ExactArrays:
        objects = parsed.detection_order()
        for image in parsed.image_order:
            self.image_ids.setdefault(image, len(self.image_ids))
        arrays = to_arrays(objects, self.image_ids, LABELS)
        return arrays.subset(m.counted_mask(arrays.boxes, arrays.widths, arrays.heights, arrays.deleted))

    def images_seen(self, parsed: ExactFile) -> m.IntArray:
        return np.array([self.image_ids[image] for image in parsed.image_order], dtype=np.int64)


@pytest.fixture(scope="module")
def study() -> Study:
    if not ASTHMA.is_dir():
        pytest.skip(f"study data not present at {ASTHMA}")
    return Study()


def export_path(participant: int, mode: str) -> Path:
    return published.export_path(ASTHMA, participant, mode)


def reference(study: Study, mode: str, name: str) -> ExactArrays:
    return study.counted_arrays(study.read(ASTHMA / ROUNDS[mode][0] / "GT" / f"{name}.txt"))


def concordance_of(expert: ExactArrays, truth: ExactArrays) -> float:
    result = m.paper_concordance(
        expert.boxes, expert.labels, expert.images, truth.boxes, truth.labels, truth.images, iou=m.PAPER_IOU
    )
    return result.mean


def test_reference_and_registers_after_the_border_rule(study: Study) -> None:
    truth = reference(study, "unaided", "ground truth")

    assert len(truth.labels) == 458
    assert len(np.unique(truth.images)) == 22
    for kind, total in REGISTER_TOTALS.items():
        for mode in ROUNDS:
            assert len(reference(study, mode, kind).labels) == total, (kind, mode)


def test_template_header_is_not_an_image(study: Study) -> None:
    parsed = read_exact(export_path(12, "unaided"))

    assert "image name" not in parsed.image_order
    assert [line.reason for line in parsed.skipped].count("template header") == 1
    assert len(parsed.image_order) == 20


@pytest.mark.parametrize(("participant", "mode"), CASES)
def test_calibration_row(study: Study, participant: int, mode: str) -> None:
    expected = CALIBRATION[participant][mode]
    parsed = study.read(export_path(participant, mode))
    expert = study.counted_arrays(parsed)
    truth = reference(study, mode, "ground truth")

    concordance = concordance_of(expert, truth)
    seconds = m.seconds_per_image_300s_rule(
        study.images_seen(parsed), expert.images, expert.last_edited_seconds
    )
    registers = {kind: _matched(study, mode, kind, expert) for kind in REGISTER_KINDS}
    print(f"Participant_{participant} {mode}: concordance {concordance!r} seconds {seconds!r}")

    assert len(expert.labels) == expected.objects
    assert concordance == pytest.approx(expected.concordance, abs=1e-4)
    assert seconds == pytest.approx(expected.seconds, abs=0.01)
    assert registers == expected.registers


def _matched(study: Study, mode: str, kind: str, expert: ExactArrays) -> int:
    entries = reference(study, mode, kind)
    found = m.matched_register_entries(
        entries.boxes,
        entries.labels,
        entries.images,
        expert.boxes,
        expert.labels,
        expert.images,
        iou=m.PAPER_IOU,
    )
    return int(found.sum())


def test_pooled_concordance_and_unchanged_suggestions(study: Study) -> None:
    truth = reference(study, "unaided", "ground truth")
    pooled = {
        mode: np.array(
            [
                concordance_of(study.counted_arrays(study.read(export_path(p, mode))), truth)
                for p in CALIBRATION
            ]
        )
        for mode in ROUNDS
    }
    suggestions = study.counted_arrays(
        study.read(ASTHMA / "SecondRound" / "GT" / "unchanged submission_19.txt")
    )

    assert pooled["unaided"].mean() == pytest.approx(0.734, abs=5e-4)
    assert pooled["unaided"].std() == pytest.approx(0.081, abs=5e-4)
    assert pooled["aided"].mean() == pytest.approx(0.841, abs=5e-4)
    assert (pooled["aided"].min(), pooled["aided"].max()) == pytest.approx((0.817, 0.858), abs=5e-4)
    assert pooled["aided"].std() == pytest.approx(0.013, abs=5e-4)
    assert concordance_of(suggestions, truth) == pytest.approx(0.826, abs=5e-4)
