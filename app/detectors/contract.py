"""The contract every ONNX detector must meet, and its check at upload time.

A detector is one ONNX file plus a JSON sidecar (:class:`DetectorSidecar`).

Model input: one tensor (N, 3, H, W) float32 with H = W = ``input_size`` (the batch axis may be
dynamic). Pixels are read as uint8 RGB, reordered to ``channel_order``, scaled to [0, 1] by /255 and
normalised per channel: x = (pixel / 255 − mean) / std.

Model outputs, by name:
- ``boxes``  (N, K, 4) float32: x1, y1, x2, y2 in input pixels (exclusive x2, y2);
- ``scores`` (N, K) float32 in [0, 1]; rows below the sidecar's ``score_threshold`` are ignored;
- ``labels`` (N, K) int64: index into ``class_names``.
K (the top-K per image) is the model's choice; decoding (peak extraction, top-K) lives in the graph.

Images are cut into ``tile_size`` tiles overlapping by ``tile_overlap`` pixels (the overlap should
exceed the largest object), each tile padded with ``pad_value`` up to ``input_size``; detections are
merged by class-wise NMS at ``nms_iou`` and mapped to the task's labels by ``label_map``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from app.models import TaskKind

OUTPUT_NAMES = ("boxes", "scores", "labels")


class DetectorRejected(ValueError):
    """The uploaded model or its sidecar breaks the detector contract; ``reason`` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DetectorSidecar(BaseModel):
    """The JSON sidecar that travels with a detector's ONNX file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: Literal[1] = 1
    name: str = Field(min_length=1, max_length=200)
    task_kind: TaskKind
    class_names: tuple[str, ...] = Field(min_length=1)
    label_map: dict[str, str]
    input_size: int = Field(gt=0, le=8192)
    channel_order: Literal["RGB", "BGR"] = "RGB"
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    score_threshold: float = Field(ge=0.0, lt=1.0)
    tile_size: int = Field(gt=0)
    tile_overlap: int = Field(ge=0)
    nms_iou: float = Field(gt=0.0, le=1.0)
    pad_value: int = Field(default=255, ge=0, le=255)

    @model_validator(mode="after")
    def check_consistency(self) -> DetectorSidecar:
        """Cross-field rules: unique classes, a complete mapping, a tiling that advances."""
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError("class_names must be unique")
        unmapped = [name for name in self.class_names if name not in self.label_map]
        if unmapped:
            raise ValueError(f"label_map has no task label for classes {unmapped}")
        unknown = sorted(set(self.label_map) - set(self.class_names))
        if unknown:
            raise ValueError(f"label_map names classes the model does not have: {unknown}")
        if self.tile_size > self.input_size:
            raise ValueError(f"tile_size {self.tile_size} exceeds input_size {self.input_size}")
        if self.tile_overlap >= self.tile_size:
            raise ValueError(
                f"tile_overlap {self.tile_overlap} must be smaller than tile_size {self.tile_size}"
            )
        if any(value <= 0 for value in self.std):
            raise ValueError("std values must be positive")
        return self

    def task_label(self, class_index: int) -> str:
        """The task label that the model's class ``class_index`` stands for."""
        return self.label_map[self.class_names[class_index]]


@dataclass(frozen=True)
class ValidatedDetector:
    """A detector that passed :func:`validate_detector`."""

    sha256: str
    sidecar: DetectorSidecar
    input_name: str
    input_shape: tuple[int | str | None, ...]
    top_k: int


def parse_sidecar(sidecar: dict[str, Any], task_labels: Sequence[str] | None = None) -> DetectorSidecar:
    """Validate a sidecar dict; with ``task_labels`` also require every mapped label to be one of them."""
    try:
        parsed = DetectorSidecar.model_validate(sidecar)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in issue['loc']) or 'sidecar'}: {issue['msg']}"
            for issue in error.errors()
        )
        raise DetectorRejected(f"bad sidecar: {problems}") from error
    if task_labels is not None:
        foreign = sorted(set(parsed.label_map.values()) - set(task_labels))
        if foreign:
            raise DetectorRejected(f"bad sidecar: label_map maps to labels the task does not have: {foreign}")
    return parsed


def validate_detector(
    model_bytes: bytes,
    sidecar: dict[str, Any],
    task_labels: Sequence[str] | None = None,
) -> ValidatedDetector:
    """Load the model in ONNX Runtime (CPU), run one tile of zeros and check it against the contract.

    Raises :class:`DetectorRejected` naming the first broken rule.
    """
    parsed = parse_sidecar(sidecar, task_labels)
    session = load_cpu_session(model_bytes)
    input_name, input_shape = check_input(session, parsed.input_size)
    check_output_names(session)
    zeros = np.zeros((1, 3, parsed.input_size, parsed.input_size), dtype=np.float32)
    try:
        outputs = session.run(list(OUTPUT_NAMES), {input_name: zeros})
    except Exception as error:
        raise DetectorRejected(f"the model failed on a tile of zeros: {error}") from error
    top_k = check_outputs(outputs, len(parsed.class_names))
    return ValidatedDetector(
        sha256=hashlib.sha256(model_bytes).hexdigest(),
        sidecar=parsed,
        input_name=input_name,
        input_shape=input_shape,
        top_k=top_k,
    )


def load_cpu_session(model_bytes: bytes) -> Any:
    """An ONNX Runtime CPU session over the bytes, or :class:`DetectorRejected` if they are no model."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    try:
        return onnxruntime.InferenceSession(
            model_bytes, sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as error:
        raise DetectorRejected(f"not a loadable ONNX model: {error}") from error


def check_input(session: Any, input_size: int) -> tuple[str, tuple[int | str | None, ...]]:
    """The single input must be rank-4 float32 NCHW with 3 channels and room for ``input_size``."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise DetectorRejected(f"the model must have exactly one input, it has {len(inputs)}")
    model_input = inputs[0]
    shape = tuple(model_input.shape)
    if model_input.type != "tensor(float)":
        raise DetectorRejected(f"input {model_input.name!r} must be float32, it is {model_input.type}")
    if len(shape) != 4:
        raise DetectorRejected(
            f"input {model_input.name!r} must be rank 4 (N, 3, H, W), it has shape {shape}"
        )
    if isinstance(shape[1], int) and shape[1] != 3:
        raise DetectorRejected(f"input {model_input.name!r} must have 3 channels in axis 1, shape is {shape}")
    for axis in (2, 3):
        if isinstance(shape[axis], int) and shape[axis] != input_size:
            raise DetectorRejected(
                f"input {model_input.name!r} shape {shape} does not fit input_size {input_size}"
            )
    return model_input.name, shape


def check_output_names(session: Any) -> None:
    """All three contract outputs must exist by name."""
    names = {output.name for output in session.get_outputs()}
    missing = [name for name in OUTPUT_NAMES if name not in names]
    if missing:
        raise DetectorRejected(f"the model lacks outputs {missing}; it has {sorted(names)}")


def check_outputs(outputs: Sequence[Any], num_classes: int) -> int:
    """Shapes (1, K, 4), (1, K), (1, K); dtypes float32, float32, int64; labels in range. Returns K."""
    boxes, scores, labels = (np.asarray(output) for output in outputs)
    if boxes.ndim != 3 or boxes.shape[0] != 1 or boxes.shape[2] != 4:
        raise DetectorRejected(f"'boxes' must have shape (N, K, 4), got {boxes.shape}")
    top_k = int(boxes.shape[1])
    if scores.shape != (1, top_k):
        raise DetectorRejected(f"'scores' must have shape (N, K) = (1, {top_k}), got {scores.shape}")
    if labels.shape != (1, top_k):
        raise DetectorRejected(f"'labels' must have shape (N, K) = (1, {top_k}), got {labels.shape}")
    for name, array, dtype in (
        ("boxes", boxes, np.float32),
        ("scores", scores, np.float32),
        ("labels", labels, np.int64),
    ):
        if array.dtype != dtype:
            raise DetectorRejected(f"{name!r} must be {np.dtype(dtype).name}, got {array.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DetectorRejected(
            f"'labels' must index class_names (0..{num_classes - 1}), got {labels.min()}..{labels.max()}"
        )
    return top_k
