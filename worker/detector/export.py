"""Export a trained detector to ONNX (decoding inside the graph) and write its sidecar."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from app.detectors.contract import OUTPUT_NAMES, DetectorSidecar, validate_detector
from worker.detector.model import CenterNet, ExportableDetector

OPSET = 17


def export_onnx(network: CenterNet, input_size: int, top_k: int, path: Path) -> Path:
    """Write ``network`` + top-K decoding as ONNX with a dynamic batch axis; returns ``path``."""
    wrapper = ExportableDetector(network, top_k).eval()
    example = torch.zeros(1, 3, input_size, input_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode(), warnings.catch_warnings():
        # the TorchScript exporter and its helpers are deprecated (they warn), but it still writes one
        # self-contained file quickly; the dynamo exporter also works (opset 18) but is slow and noisy
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            wrapper,
            (example,),
            str(path),
            input_names=["images"],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={"images": {0: "batch"}, **{name: {0: "batch"} for name in OUTPUT_NAMES}},
            opset_version=OPSET,
            dynamo=False,
        )
    return path


def build_sidecar(
    name: str,
    task_kind: str,
    class_names: Sequence[str],
    input_size: int,
    tile_overlap: int,
    mean: Sequence[float],
    std: Sequence[float],
    score_threshold: float,
    nms_iou: float,
) -> DetectorSidecar:
    """The sidecar of one of Concord's own detectors: classes map one to one onto the task's labels."""
    return DetectorSidecar(
        name=name,
        task_kind=task_kind,
        class_names=tuple(class_names),
        label_map={label: label for label in class_names},
        input_size=input_size,
        channel_order="RGB",
        mean=(mean[0], mean[1], mean[2]),
        std=(std[0], std[1], std[2]),
        score_threshold=score_threshold,
        tile_size=input_size,
        tile_overlap=tile_overlap,
        nms_iou=nms_iou,
    )


def write_sidecar(sidecar: DetectorSidecar, path: Path) -> Path:
    """Write the sidecar as indented JSON and check the ONNX file beside it against the contract."""
    payload: dict[str, Any] = sidecar.model_dump(mode="json")
    path.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    validate_detector(path.with_suffix(".onnx").read_bytes(), payload)
    return path
