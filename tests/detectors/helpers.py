"""Shared helpers of the detector tests: the shipped models, bad models, phantom tasks with ground truth."""

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper
from PIL import Image as PILImage

from app import geometry
from app.detectors.service import BUILTIN_DIR


def shipped(kind: str) -> tuple[bytes, dict[str, Any]]:
    model = (BUILTIN_DIR / f"{kind}.onnx").read_bytes()
    sidecar = json.loads((BUILTIN_DIR / f"{kind}.json").read_text(encoding="utf-8"))
    return model, sidecar


def wrong_outputs_model(input_size: int) -> bytes:
    """A valid ONNX graph whose outputs are named and shaped unlike the contract (one 'logits' tensor)."""
    image = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, input_size, input_size])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])
    pool = helper.make_node("GlobalAveragePool", ["images"], ["pooled"])
    flat = helper.make_node("Flatten", ["pooled"], ["logits"], axis=1)
    graph = helper.make_graph([pool, flat], "wrong", [image], [logits])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    serialized: bytes = model.SerializeToString()
    return serialized


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def stored_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*")) if folder.exists() else []


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """IoU of two detector boxes (continuous convention)."""
    return geometry.box_iou(a, b, geometry.CONTINUOUS)
