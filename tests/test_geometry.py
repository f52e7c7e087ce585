"""The two pixel conventions of app.geometry pinned on the same boxes, and its matching and NMS."""

from __future__ import annotations

import numpy as np
import pytest

from app.geometry import (
    CONTINUOUS,
    INCLUSIVE,
    box_areas,
    box_iou,
    classwise_nms,
    greedy_in_order,
    greedy_one_to_one,
    iou_matrix,
    nms,
)

A = [0.0, 0.0, 9.0, 9.0]
SHIFTED = [5.0, 0.0, 14.0, 9.0]
TOUCHING = [9.0, 0.0, 18.0, 9.0]


def test_the_same_boxes_give_the_known_iou_under_each_convention() -> None:
    assert box_iou(A, SHIFTED, INCLUSIVE) == pytest.approx(50 / 150)  # 10 × 10 px boxes sharing 5 × 10 px
    assert box_iou(A, SHIFTED, CONTINUOUS) == pytest.approx(36 / 126)  # 9 × 9 boxes sharing 4 × 9
    assert box_iou(A, TOUCHING, INCLUSIVE) == pytest.approx(10 / 190)  # touching boxes share a pixel column
    assert box_iou(A, TOUCHING, CONTINUOUS) == 0.0
    np.testing.assert_array_equal(box_areas(np.array([A]), INCLUSIVE), [100.0])
    np.testing.assert_array_equal(box_areas(np.array([A]), CONTINUOUS), [81.0])


def test_float32_boxes_stay_float32() -> None:
    boxes = np.array([A, SHIFTED], dtype=np.float32)
    assert iou_matrix(boxes, boxes, CONTINUOUS).dtype == np.float32


def test_greedy_one_to_one_takes_the_highest_iou_first() -> None:
    iou = np.array([[0.6, 0.9], [0.0, 0.8]])
    assert greedy_one_to_one(iou, 0.5) == [(0, 1)]
    assert greedy_one_to_one(np.array([[0.6, 0.6], [0.6, 0.0]]), 0.5) == [(0, 0)]


def test_greedy_in_order_lets_each_row_take_its_best_free_column() -> None:
    iou = np.array([[0.6, 0.9], [0.0, 0.8]])
    assert greedy_in_order(iou, [1, 0], 0.5) == [(1, 1), (0, 0)]
    assert greedy_in_order(iou, [0, 1], 0.5) == [(0, 1)]


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.7], dtype=np.float32)
    np.testing.assert_array_equal(nms(boxes, scores, 0.5), [0, 2])
    np.testing.assert_array_equal(classwise_nms(boxes, scores, np.array([0, 1, 0]), 0.5), [0, 1, 2])
