"""ONNX export of a trained patch classifier, checked against torch on the validation patches."""

import hashlib
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

OPSET = 17
INPUT_NAME = "patches"
OUTPUT_NAME = "logits"
TOLERANCE = 1e-4


class ExportMismatch(RuntimeError):
    """The ONNX model's outputs differ from torch's by more than the tolerance."""


def export_onnx(model: nn.Module, patch_size: int, path: Path) -> Path:
    """Write the model (input float32 (B, 3, P, P) normalised patches → logits (B, 1)) with a dynamic batch."""
    model = model.eval().cpu()
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode(), warnings.catch_warnings():
        # the TorchScript exporter warns that it is deprecated; it still writes one self-contained file fast
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, patch_size, patch_size),),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return path


def max_difference(model: nn.Module, path: Path, images: torch.Tensor, batch_size: int = 256) -> float:
    """Largest |ONNX − torch| logit over `images` (N, 3, P, P), both on the CPU."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    model = model.eval().cpu()
    worst = 0.0
    with torch.inference_mode():
        for chunk in torch.split(images.cpu(), batch_size):
            expected = model(chunk).numpy()
            got = session.run(None, {name: chunk.numpy().astype(np.float32)})[0]
            worst = max(worst, float(np.abs(got - expected).max(initial=0.0)))
    return worst


def export_checked(model: nn.Module, patch_size: int, path: Path, images: torch.Tensor) -> tuple[str, float]:
    """Export, compare on `images`, return (sha256 of the file, max difference); ExportMismatch over 1e-4."""
    export_onnx(model, patch_size, path)
    difference = max_difference(model, path, images)
    if difference > TOLERANCE:
        raise ExportMismatch(f"ONNX logits differ from torch by {difference:.2e} (> {TOLERANCE:g})")
    return hashlib.sha256(path.read_bytes()).hexdigest(), difference
