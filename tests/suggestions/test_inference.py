"""Tiled inference: tiles cover the image, objects on tile borders are found once, NMS is right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from app.detectors.contract import DetectorSidecar
from app.detectors.inference import (
    Detection,
    ImageInput,
    detect_image,
    detect_images,
    make_session,
    merge_detections,
    model_threads,
    plan_tiles,
    preprocess,
    reader_threads,
    run_batch,
    tile_detections,
    tile_starts,
)
from app.geometry import nms

from .detector_graphs import dark_pixel_detector, sidecar

SQUARE = 8


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("detector") / "dark.onnx"
    path.write_bytes(dark_pixel_detector())
    return path


def white_image_with_squares(width: int, height: int, corners: list[tuple[int, int]]) -> np.ndarray:
    image = np.full((height, width, 3), 255, dtype=np.uint8)
    for x, y in corners:
        image[y : y + SQUARE, x : x + SQUARE] = 0
    return image


def detect(model_path: Path, image: np.ndarray, batch_size: int = 8, **changes: object) -> list[Detection]:
    session, _ = make_session(model_path, prefer_cuda=False)
    height, width = image.shape[:2]

    def read_region(x: int, y: int, w: int, h: int) -> np.ndarray:
        assert x >= 0 and y >= 0 and x + w <= width and y + h <= height, "read outside the image"
        return image[y : y + h, x : x + w]

    return detect_image(
        session, DetectorSidecar.model_validate(sidecar(**changes)), read_region, width, height, batch_size
    )


def corners_of(detections: list[Detection]) -> list[tuple[int, int]]:
    return sorted((round(item.x1), round(item.y1)) for item in detections)


def test_tile_starts_cover_the_axis_with_the_last_tile_shifted_inward() -> None:
    assert tile_starts(1000, 512, 64) == [0, 448, 488]
    assert tile_starts(512, 512, 64) == [0]
    assert tile_starts(300, 512, 64) == [0]


def test_tile_cores_partition_the_image() -> None:
    tiles = plan_tiles(200, 150, 64, 16)
    owners = np.zeros((150, 200), dtype=int)
    for tile in tiles:
        assert tile.x + tile.width <= 200 and tile.y + tile.height <= 150
        owners[
            int(np.ceil(tile.core_y1)) : int(np.ceil(tile.core_y2)),
            int(np.ceil(tile.core_x1)) : int(np.ceil(tile.core_x2)),
        ] += 1

    assert (owners == 1).all()


def test_objects_in_tile_overlaps_and_on_core_borders_are_found_exactly_once(model_path: Path) -> None:
    # tiles of 64 overlapping by 16 start at 0, 48, 96, 136 on x (cores split at 56, 104, 148) and at
    # 0, 48, 88 on y (split at 56, 100); every square below lies in two or four tiles
    corners = [(48, 48), (56, 8), (96, 96), (136, 56), (0, 0), (192, 144), (144, 80), (96, 48)]
    image = white_image_with_squares(200, 152, corners)

    found = detect(model_path, image)

    assert corners_of(found) == sorted(corners)
    assert {item.label for item in found} == {"neutrophil"}
    assert all(item.x2 - item.x1 == SQUARE and item.score == 1.0 for item in found)


def test_batch_size_does_not_change_the_result(model_path: Path) -> None:
    image = white_image_with_squares(200, 150, [(48, 48), (136, 96)])

    assert detect(model_path, image, batch_size=1) == detect(model_path, image, batch_size=5)


def test_padding_of_a_small_image_produces_no_objects_outside_it(model_path: Path) -> None:
    image = white_image_with_squares(40, 30, [(8, 16)])

    assert corners_of(detect(model_path, image, pad_value=0)) == [(8, 16)]


def test_normalisation_follows_the_sidecar(model_path: Path) -> None:
    image = white_image_with_squares(64, 64, [])

    # (1 - 0.6) / 1 < 0.5: with this mean every white cell looks dark to the model
    assert len(detect(model_path, image, mean=[0.6, 0.6, 0.6])) == 64
    assert detect(model_path, image, score_threshold=0.5) == []


def test_channel_order_reaches_the_model(model_path: Path) -> None:
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    image[:, :, 2] = 255  # pure blue: a per-channel mean hits only the channel that ends up first
    found_rgb = detect(model_path, image, mean=[0.0, 0.0, 0.9], std=[1.0, 1.0, 1.0])
    found_bgr = detect(model_path, image, mean=[0.9, 0.0, 0.0], std=[1.0, 1.0, 1.0], channel_order="BGR")

    assert len(found_rgb) == len(found_bgr) == 64


def test_nms_keeps_the_best_of_overlapping_boxes_only() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]], dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95], dtype=np.float32)

    assert nms(boxes, scores, 0.5).tolist() == [3, 2]
    assert nms(boxes, scores, 1.0).tolist() == [3, 0, 1, 2]


def test_make_session_reports_the_provider_that_runs(model_path: Path) -> None:
    _, cpu_provider = make_session(model_path, prefer_cuda=False)
    _, preferred_provider = make_session(model_path, prefer_cuda=True)

    assert cpu_provider == "CPUExecutionProvider"
    assert preferred_provider in onnxruntime.get_available_providers()


def test_the_cut_part_of_an_object_seen_whole_by_the_next_tile_is_dropped() -> None:
    settings = DetectorSidecar.model_validate(sidecar(tile_overlap=32, nms_iou=0.5))
    left, right = plan_tiles(96, 64, 64, 32)  # x = 0 and x = 32, cores split at x = 48
    # an object at x 56..72: the left tile sees only 56..64, the right one sees it whole (24..40 there)
    cut = tile_detections(
        np.array([[56, 10, 64, 26]], np.float32), np.array([0.9], np.float32), np.array([0]), left, 0.5
    )
    whole = tile_detections(
        np.array([[24, 10, 40, 26]], np.float32), np.array([0.8], np.float32), np.array([0]), right, 0.5
    )

    found = merge_detections([cut, whole], settings, 96, 64)

    assert [(item.x1, item.x2) for item in found] == [(56.0, 72.0)]
    assert found[0].score == pytest.approx(0.8)


def reader_of(image: np.ndarray, lines: list[int] | None = None) -> ImageInput:
    """The image as a pipeline input; ``lines`` collects the number of lines each read asks for."""
    height, width = image.shape[:2]

    def read_region(x: int, y: int, w: int, h: int) -> np.ndarray:
        assert x >= 0 and y >= 0 and x + w <= width and y + h <= height, "read outside the image"
        if lines is not None:
            lines.append(h)
        return image[y : y + h, x : x + w]

    return ImageInput(width, height, read_region)


def tile_by_tile(model_path: Path, image: np.ndarray, settings: DetectorSidecar) -> list[Detection]:
    """The detection steps written out plainly: one tile at a time, the contract's preprocessing."""
    session, _ = make_session(model_path, prefer_cuda=False)
    height, width = image.shape[:2]
    found = []
    for tile in plan_tiles(width, height, settings.tile_size, settings.tile_overlap):
        pixels = preprocess(image[tile.y : tile.y + tile.height, tile.x : tile.x + tile.width], settings)
        boxes, scores, labels = run_batch(session, pixels[None])
        found.append(tile_detections(boxes[0], scores[0], labels[0], tile, settings.score_threshold))
    return merge_detections(found, settings, width, height)


def test_the_pipeline_finds_what_a_plain_tile_by_tile_loop_finds(model_path: Path) -> None:
    settings = DetectorSidecar.model_validate(sidecar(pad_value=0))
    rng = np.random.default_rng(3)
    images = [
        white_image_with_squares(
            width, height, [(8, 16)] + [tuple(corner) for corner in rng.integers(0, 20, (6, 2)) * SQUARE]
        )
        for width, height in ((200, 150), (40, 30), (64, 64), (130, 200))
    ]
    done: list[tuple[int, int]] = []
    session, _ = make_session(model_path, prefer_cuda=False)

    found = detect_images(
        session,
        settings,
        [reader_of(image) for image in images],
        batch_size=5,
        on_image=lambda index, detections: done.append((index, len(detections))),
        readers=3,
    )

    assert found == [tile_by_tile(model_path, image, settings) for image in images]
    assert done == [(index, len(detections)) for index, detections in enumerate(found)]
    assert all(found)


def test_rows_of_tiles_read_each_line_of_the_image_once(model_path: Path) -> None:
    image = white_image_with_squares(200, 152, [(48, 48), (136, 96)])
    lines: list[int] = []
    session, _ = make_session(model_path, prefer_cuda=False)
    settings = DetectorSidecar.model_validate(sidecar())

    found = detect_images(session, settings, [reader_of(image, lines)], batch_size=2, readers=1)

    assert corners_of(found[0]) == [(48, 48), (136, 96)]
    assert sum(lines) == 152  # rows start at 0, 48 and 88 and overlap by 16 lines


def test_a_failed_read_reaches_the_caller(model_path: Path) -> None:
    def broken(x: int, y: int, w: int, h: int) -> np.ndarray:
        raise OSError("disk gone")

    session, _ = make_session(model_path, prefer_cuda=False)
    images = [ImageInput(200, 150, broken)] * 3

    with pytest.raises(OSError, match="disk gone"):
        detect_images(session, DetectorSidecar.model_validate(sidecar()), images, batch_size=2, readers=2)


def test_the_model_gets_the_cores_the_readers_leave(model_path: Path) -> None:
    assert (reader_threads(2), model_threads(reader_threads(2), 2)) == (1, 1)
    assert (reader_threads(16), model_threads(reader_threads(16), 16)) == (2, 14)
    assert model_threads(4, cpus=2) == 1

    session, _ = make_session(model_path, prefer_cuda=False)

    assert session.get_session_options().intra_op_num_threads == model_threads(reader_threads())
