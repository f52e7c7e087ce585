"""Device check: the detect path runs on CUDA and finds the same boxes as on CPU; throughput of both.

Runs the shipped detectors (app/detector_models) through ``app.detectors.service.detect_all`` — the
loop of the `detect` job — on phantom images: classify and grade patches (PNG) and a region of a tiled
pyramidal TIFF (detect). Boxes on CUDA and CPU must pair up one to one: same label, IoU ≥ --iou, score
within --score-tolerance. Exits 1 on a mismatch, 2 when CUDA was asked for but did not run.

    .venv/bin/python scripts/gpu_check.py             # on a GPU machine
    .venv/bin/python scripts/gpu_check.py --cpu-only  # CPU against CPU: checks the script itself

Last line: one JSON object with per-kind images per second for both providers and the verdict.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from PIL import Image as PILImage  # noqa: E402

from app.detectors.contract import DetectorSidecar  # noqa: E402
from app.detectors.service import BUILTIN_DIR, DetectionRun, ImageTarget, detect_all  # noqa: E402
from app.images.tiles import Window  # noqa: E402
from app.phantoms import classify_patch, detect_region, grade_patch, write_pyramidal_tiff  # noqa: E402
from app.suggestions.schemas import SuggestionIn  # noqa: E402

CUDA = "CUDAExecutionProvider"


def write_png(path: Path, pixels: np.ndarray) -> Path:
    buffer = io.BytesIO()
    PILImage.fromarray(pixels).save(buffer, format="PNG", compress_level=3)
    path.write_bytes(buffer.getvalue())
    return path


def phantom_targets(folder: Path, patches: int, region: tuple[int, int]) -> dict[str, list[ImageTarget]]:
    """Images per task kind, written to ``folder`` the way Concord stores them."""
    targets: dict[str, list[ImageTarget]] = {"classify": [], "grade": []}
    for seed in range(patches):
        for kind, make, size in (("classify", classify_patch, 512), ("grade", grade_patch, 256)):
            path = write_png(folder / f"{kind}-{seed}.png", make(seed, size).image)
            targets[kind].append(ImageTarget(path.name, path, None, size, size))
    width, height = region
    tiff = folder / "region.tif"
    write_pyramidal_tiff(tiff, detect_region(3, width + 64, height + 64).image, mpp=0.25)
    targets["detect"] = [ImageTarget("region", tiff, Window(32, 32, width, height), width, height)]
    return targets


def iou(a: SuggestionIn, b: SuggestionIn) -> float:
    inter_w = max(0.0, min(a.x2, b.x2) - max(a.x1, b.x1))
    inter_h = max(0.0, min(a.y2, b.y2) - max(a.y1, b.y1))
    inter = inter_w * inter_h
    union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter
    return inter / union if union > 0 else 0.0


def unmatched(first: list[SuggestionIn], second: list[SuggestionIn], min_iou: float, tolerance: float) -> int:
    """Boxes of ``first`` without a partner in ``second`` (same image and label, IoU, score tolerance)."""
    taken: set[int] = set()
    missing = 0
    for box in first:
        partner = next(
            (
                index
                for index, other in enumerate(second)
                if index not in taken
                and other.image == box.image
                and other.label == box.label
                and abs(other.score - box.score) <= tolerance
                and iou(box, other) >= min_iou
            ),
            None,
        )
        if partner is None:
            missing += 1
        else:
            taken.add(partner)
    return missing


def run_kind(kind: str, targets: list[ImageTarget], args: argparse.Namespace) -> dict[str, Any]:
    model = BUILTIN_DIR / f"{kind}.onnx"
    sidecar = DetectorSidecar.model_validate_json((BUILTIN_DIR / f"{kind}.json").read_text())
    runs: dict[str, DetectionRun] = {}
    for name, prefer_cuda in (("device", not args.cpu_only), ("cpu", False)):
        detect_all(model, sidecar, targets, args.batch_size, None, prefer_cuda)  # warm-up
        runs[name] = detect_all(model, sidecar, targets, args.batch_size, None, prefer_cuda)
    device, cpu = runs["device"], runs["cpu"]
    missing = unmatched(device.items, cpu.items, args.iou, args.score_tolerance)
    extra = unmatched(cpu.items, device.items, args.iou, args.score_tolerance)
    report = {
        "kind": kind,
        "images": len(targets),
        "tiles": device.tiles,
        "device_provider": device.provider,
        "device_images_per_second": round(device.images_per_second, 3),
        "cpu_images_per_second": round(cpu.images_per_second, 3),
        "device_boxes": len(device.items),
        "cpu_boxes": len(cpu.items),
        "unmatched_device": missing,
        "unmatched_cpu": extra,
        "same": missing == 0 and extra == 0,
    }
    print(json.dumps(report), flush=True)
    return report


def parse_arguments(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cpu-only", action="store_true", help="compare CPU with CPU (no GPU needed)")
    parser.add_argument("--patches", type=int, default=8)
    parser.add_argument("--region", type=int, nargs=2, default=(3500, 2500), metavar=("W", "H"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--iou", type=float, default=0.9)
    parser.add_argument("--score-tolerance", type=float, default=0.02)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    with tempfile.TemporaryDirectory(prefix="concord-gpu-check-") as folder:
        targets = phantom_targets(Path(folder), args.patches, tuple(args.region))
        reports = [run_kind(kind, items, args) for kind, items in targets.items()]
    on_cuda = all(report["device_provider"] == CUDA for report in reports)
    same = all(report["same"] for report in reports)
    verdict = "ok" if same and (on_cuda or args.cpu_only) else ("mismatch" if not same else "no-cuda")
    print(json.dumps({"check": "gpu", "cpu_only": args.cpu_only, "cuda": on_cuda, "verdict": verdict}))
    if not same:
        return 1
    return 0 if on_cuda or args.cpu_only else 2


if __name__ == "__main__":
    sys.exit(main())
