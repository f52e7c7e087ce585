"""The detector contract accepts a conforming model and rejects broken models and sidecars clearly."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import pytest
from onnx import TensorProto

from app.detectors.contract import DetectorRejected, DetectorSidecar, validate_detector

from .detector_graphs import dark_pixel_detector, identity_model, sidecar, wrong_label_dtype_model


def test_a_conforming_detector_is_accepted_with_its_hash_and_input_name() -> None:
    model_bytes = dark_pixel_detector()

    validated = validate_detector(model_bytes, sidecar(), task_labels=["neutrophil", "lymphocyte"])

    assert validated.sha256 == hashlib.sha256(model_bytes).hexdigest()
    assert validated.input_name == "images"
    assert validated.top_k == 64
    assert validated.sidecar.task_label(1) == "lymphocyte"


def rejection(model_bytes: bytes, sidecar_fields: dict[str, Any], **kwargs: Any) -> str:
    with pytest.raises(DetectorRejected) as caught:
        validate_detector(model_bytes, sidecar_fields, **kwargs)
    return caught.value.reason


def test_random_bytes_are_not_an_onnx_model() -> None:
    assert "not a loadable ONNX model" in rejection(os.urandom(512), sidecar())


@pytest.mark.parametrize(
    ("model_bytes", "expected"),
    [
        (identity_model(shape=("batch", 3, 64)), "rank 4"),
        (identity_model(dtype=TensorProto.DOUBLE), "float32"),
        (identity_model(shape=("batch", 1, 64, 64)), "3 channels"),
        (identity_model(shape=("batch", 3, 32, 32)), "input_size 64"),
        (identity_model(output="heatmap"), "lacks outputs ['boxes', 'scores', 'labels']"),
        (identity_model(), "lacks outputs ['scores', 'labels']"),
        (wrong_label_dtype_model(), "'labels' must be int64"),
    ],
    ids=[
        "rank-3 input",
        "float64 input",
        "one channel",
        "wrong size",
        "no outputs",
        "only boxes",
        "float labels",
    ],
)
def test_models_breaking_the_input_or_output_contract_are_rejected(model_bytes: bytes, expected: str) -> None:
    assert expected in rejection(model_bytes, sidecar())


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"colour_order": "RGB"}, "colour_order: Extra inputs are not permitted"),
        ({"label_map": {"cell": "neutrophil"}}, "no task label for classes ['other']"),
        (
            {"label_map": {"cell": "a", "other": "b", "ghost": "c"}},
            "classes the model does not have: ['ghost']",
        ),
        ({"tile_overlap": 64}, "tile_overlap 64 must be smaller than tile_size 64"),
        ({"tile_size": 128}, "tile_size 128 exceeds input_size 64"),
        ({"class_names": ["cell", "cell"], "label_map": {"cell": "a"}}, "class_names must be unique"),
        ({"std": [1.0, 0.0, 1.0]}, "std values must be positive"),
        ({"score_threshold": 1.5}, "score_threshold"),
        ({"channel_order": "RBG"}, "channel_order"),
    ],
    ids=[
        "unknown field",
        "incomplete mapping",
        "extra mapping",
        "overlap too big",
        "tile too big",
        "duplicate class",
        "zero std",
        "threshold",
        "channel order",
    ],
)
def test_bad_sidecars_are_rejected_before_the_model_is_loaded(changes: dict[str, Any], expected: str) -> None:
    reason = rejection(b"never looked at", sidecar(**changes))

    assert reason.startswith("bad sidecar")
    assert expected in reason


def test_mapping_onto_labels_the_task_lacks_is_rejected() -> None:
    reason = rejection(dark_pixel_detector(), sidecar(), task_labels=["neutrophil", "eosinophil"])

    assert "labels the task does not have: ['lymphocyte']" in reason


def test_sidecar_round_trips_through_json() -> None:
    parsed = DetectorSidecar.model_validate(sidecar())

    assert DetectorSidecar.model_validate_json(parsed.model_dump_json()) == parsed
