"""Tiny hand-built ONNX graphs that follow (or break) the detector contract, for tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

CLASS_NAMES = ("cell", "other")


def sidecar(**changes: Any) -> dict[str, Any]:
    """A valid sidecar for the graphs below (input 64 × 64), with ``changes`` applied."""
    base: dict[str, Any] = {
        "name": "fixed-boxes",
        "task_kind": "classify",
        "class_names": list(CLASS_NAMES),
        "label_map": {"cell": "neutrophil", "other": "lymphocyte"},
        "input_size": 64,
        "score_threshold": 0.5,
        "tile_size": 64,
        "tile_overlap": 16,
        "nms_iou": 0.5,
    }
    return {**base, **changes}


def serialise(graph: onnx.GraphProto) -> bytes:
    """Wrap a graph in a checked opset-17 model and return its bytes."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def images_input(
    dtype: int = TensorProto.FLOAT, shape: tuple[Any, ...] = ("batch", 3, 64, 64)
) -> onnx.ValueInfoProto:
    """The model input declaration."""
    return helper.make_tensor_value_info("images", dtype, list(shape))


def dark_pixel_detector() -> bytes:
    """A contract-conforming "detector" that reports one fixed 8 × 8 box per 8 × 8 cell of the tile.

    Scores are 1 where the cell's mean (over channels and pixels) is below 0.5 in normalised units,
    else 0; so with mean 0 and std 1, a cell of black pixels is detected, a white one is not. Boxes are
    the cell itself, labels all 0. K = 64 per tile.
    """
    cells = np.array(
        [[x, y, x + 8, y + 8] for y in range(0, 64, 8) for x in range(0, 64, 8)], dtype=np.float32
    )
    nodes = [
        helper.make_node("AveragePool", ["images"], ["pooled"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("ReduceMean", ["pooled"], ["grey"], axes=[1], keepdims=0),
        helper.make_node("Reshape", ["grey", "flat_shape"], ["grey_flat"]),
        helper.make_node("Less", ["grey_flat", "half"], ["dark"]),
        helper.make_node("Cast", ["dark"], ["scores"], to=TensorProto.FLOAT),
        helper.make_node("Shape", ["images"], ["input_shape"], start=0, end=1),
        helper.make_node("Concat", ["input_shape", "box_tail"], ["box_shape"], axis=0),
        helper.make_node("Expand", ["cells", "box_shape"], ["boxes"]),
        helper.make_node("Cast", ["scores"], ["score_ints"], to=TensorProto.INT64),
        helper.make_node("Mul", ["score_ints", "zero"], ["labels"]),
    ]
    initialisers = [
        numpy_helper.from_array(np.array([-1, 64], dtype=np.int64), "flat_shape"),
        numpy_helper.from_array(np.array(0.5, dtype=np.float32), "half"),
        numpy_helper.from_array(np.array([64, 4], dtype=np.int64), "box_tail"),
        numpy_helper.from_array(cells[None], "cells"),
        numpy_helper.from_array(np.array(0, dtype=np.int64), "zero"),
    ]
    outputs = [
        helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", 64, 4]),
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 64]),
        helper.make_tensor_value_info("labels", TensorProto.INT64, ["batch", 64]),
    ]
    graph = helper.make_graph(nodes, "dark_pixel_detector", [images_input()], outputs, initialisers)
    return serialise(graph)


def identity_model(
    dtype: int = TensorProto.FLOAT, shape: tuple[Any, ...] = ("batch", 3, 64, 64), output: str = "boxes"
) -> bytes:
    """A model that passes its input through as a single output: breaks the contract in several ways."""
    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], [output])],
        "identity",
        [images_input(dtype, shape)],
        [helper.make_tensor_value_info(output, dtype, list(shape))],
    )
    return serialise(graph)


def wrong_label_dtype_model() -> bytes:
    """Right names and shapes, but ``labels`` comes out as float32."""
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["reduced"], axes=[2, 3], keepdims=0),
        helper.make_node("Slice", ["reduced", "start", "end", "axis"], ["scores"]),
        helper.make_node("Concat", ["scores", "scores", "scores", "scores"], ["box_rows"], axis=1),
        helper.make_node("Unsqueeze", ["box_rows", "axis"], ["boxes"]),
        helper.make_node("Identity", ["scores"], ["labels"]),
    ]
    initialisers = [
        numpy_helper.from_array(np.array([0], dtype=np.int64), "start"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "end"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis"),
    ]
    outputs = [
        helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", 1, 4]),
        helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 1]),
        helper.make_tensor_value_info("labels", TensorProto.FLOAT, ["batch", 1]),
    ]
    graph = helper.make_graph(nodes, "wrong_label_dtype", [images_input()], outputs, initialisers)
    return serialise(graph)
