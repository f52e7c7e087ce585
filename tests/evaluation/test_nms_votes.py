"""The vote counter of VotesLoss: NMS over all experts' boxes, votes = distinct experts per cell."""

import numpy as np
import pytest

from app.evaluation.metrics import iou_matrix, nms_votes


def box(x: float, y: float, size: float = 50.0) -> list[float]:
    return [x, y, x + size - 1, y + size - 1]


def test_docstring_example_two_experts_on_one_cell_one_alone():
    boxes = np.array([box(100, 100), box(105, 100), box(300, 100)], dtype=np.float64)
    assert iou_matrix(boxes[:1], boxes[1:2])[0, 0] == pytest.approx(45 * 50 / (2 * 2500 - 45 * 50))
    cells = nms_votes(boxes, np.array([0, 1, 2]), np.array([7, 7, 7]))
    assert cells.votes.tolist() == [2, 1]
    assert cells.cell_of.tolist() == [0, 0, 1]
    assert cells.boxes.tolist() == [box(100, 100), box(300, 100)]
    assert cells.images.tolist() == [7, 7]


def test_an_experts_two_boxes_on_one_cell_count_once():
    boxes = np.array([box(0, 0), box(2, 2), box(1, 1)], dtype=np.float64)
    cells = nms_votes(boxes, np.array([0, 0, 1]), np.zeros(3, np.int64))
    assert cells.votes.tolist() == [2]


def test_boxes_on_different_images_never_share_a_cell():
    boxes = np.array([box(0, 0), box(0, 0)], dtype=np.float64)
    cells = nms_votes(boxes, np.array([0, 1]), np.array([1, 2]))
    assert cells.votes.tolist() == [1, 1]
    assert cells.images.tolist() == [1, 2]


def test_iou_threshold_is_configurable():
    boxes = np.array([box(0, 0), box(20, 0)], dtype=np.float64)  # IoU 30·50 / (5000 − 1500) ≈ 0.43
    experts = np.array([0, 1])
    images = np.zeros(2, np.int64)
    assert nms_votes(boxes, experts, images).votes.tolist() == [1, 1]
    assert nms_votes(boxes, experts, images, iou=0.4).votes.tolist() == [2]


def test_keeper_takes_only_boxes_overlapping_itself_not_chains():
    # b overlaps a (IoU 0.67) and c overlaps b, but c does not overlap a enough: c starts its own cell
    boxes = np.array([box(0, 0), box(10, 0), box(30, 0)], dtype=np.float64)
    cells = nms_votes(boxes, np.array([0, 1, 2]), np.zeros(3, np.int64))
    assert cells.cell_of.tolist() == [0, 0, 1]
    assert cells.votes.tolist() == [2, 1]


def test_no_boxes():
    cells = nms_votes(np.zeros((0, 4)), np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert len(cells.votes) == 0
    assert cells.boxes.shape == (0, 4)
