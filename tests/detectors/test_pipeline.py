"""The pipelined detection loop gives what inference.detect_image gives; the device script runs on CPU."""

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from app.detectors import service
from app.detectors.contract import DetectorSidecar
from app.detectors.inference import (
    detect_image,
    fill_input,
    make_session,
    normalisation_table,
    preprocess,
)
from app.images.tiles import ImageSource, RegionView, Window
from app.phantoms import classify_patch, detect_region, grade_patch, write_pyramidal_tiff
from app.suggestions.schemas import SuggestionIn

ROOT = Path(__file__).resolve().parents[2]


def sidecar_of(kind: str) -> DetectorSidecar:
    return DetectorSidecar.model_validate_json((service.BUILTIN_DIR / f"{kind}.json").read_text())


def test_fill_input_is_bitwise_the_contract_preprocessing() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (300, 700, 3), dtype=np.uint8)[:, 100:300]
    for order in ("RGB", "BGR"):
        sidecar = sidecar_of("classify").model_copy(update={"channel_order": order, "pad_value": 17})
        out = np.empty((3, 512, 512), dtype=np.float32)
        fill_input(out, pixels, normalisation_table(sidecar), sidecar)
        assert np.array_equal(out, preprocess(pixels, sidecar))


def test_detect_all_matches_detect_image(tmp_path: Path) -> None:
    targets = []
    for index, (make, size) in enumerate(((classify_patch, 700), (classify_patch, 512), (grade_patch, 256))):
        path = tmp_path / f"image-{index}.png"
        PILImage.fromarray(make(index, size).image).save(path)
        targets.append(service.ImageTarget(path.name, path, None, size, size))
    sidecar = sidecar_of("classify")
    model = service.BUILTIN_DIR / "classify.onnx"
    run = service.detect_all(model, sidecar, targets, batch_size=3, prefer_cuda=False)
    session, _ = make_session(model, prefer_cuda=False)
    expected: list[SuggestionIn] = []
    for target in targets:
        with ImageSource(target.path) as source:

            def read(x: int, y: int, w: int, h: int, source: ImageSource = source) -> np.ndarray:
                return source.read_region(0, x, y, w, h)

            found = detect_image(
                session,
                sidecar,
                read,
                target.width,
                target.height,
                batch_size=3,
            )
        expected.extend(item for item in (service._suggestion(target, one) for one in found) if item)
    assert run.tiles == 4 + 1 + 1
    assert [item.model_dump() for item in run.items] == [item.model_dump() for item in expected]
    assert run.items, "the phantoms have cells to find"


def test_detect_all_reads_a_tiff_window_as_detect_image_reads_its_pixels(tmp_path: Path) -> None:
    path = tmp_path / "region.tif"
    write_pyramidal_tiff(path, detect_region(5, 1100, 1000).image, mpp=0.25)
    window = Window(37, 21, 1000, 900)
    target = service.ImageTarget("region", path, window, window.width, window.height)
    sidecar = sidecar_of("detect").model_copy(update={"score_threshold": 0.05})
    model = service.BUILTIN_DIR / "detect.onnx"
    with ImageSource(path) as source:
        pixels = RegionView(source, window).read_region(0, 0, 0, window.width, window.height)
    session, _ = make_session(model, prefer_cuda=False)

    run = service.detect_all(model, sidecar, [target], batch_size=2, prefer_cuda=False)
    found = detect_image(
        session, sidecar, lambda x, y, w, h: pixels[y : y + h, x : x + w], window.width, window.height, 2
    )

    expected = [item for item in (service._suggestion(target, one) for one in found) if item]
    assert run.tiles == 3 * 2
    assert [item.model_dump() for item in run.items] == [item.model_dump() for item in expected]
    assert run.items


def test_gpu_check_runs_on_cpu() -> None:
    command = [
        sys.executable,
        "scripts/gpu_check.py",
        "--cpu-only",
        "--patches",
        "1",
        "--region",
        "900",
        "700",
    ]
    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert '"verdict": "ok"' in finished.stdout.splitlines()[-1]
