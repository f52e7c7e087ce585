"""The kept results' keys (`service.task_digests`) follow every input of a task's metrics: a change to any
of them gives another task key, and another mode key for that mode alone when it is a mode's work."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import pytest

from app.evaluation import service
from app.evaluation.service import Boxes, MetricsParams, TaskData
from app.models import TaskKind
from tests.evaluation.test_modes_together import _task


def _base() -> TaskData:
    return _task(3, TaskKind.detect, {"unaided": 3, "aided": 2})


def _first(task: TaskData, mode: str = "unaided") -> service.ExpertWork:
    return next(iter(task.work[mode].values()))


def _shifted(boxes: Boxes) -> None:
    boxes.boxes[-1, 2] += 0.5


def _shifted_suggestions(task: TaskData) -> None:
    assert task.suggestions is not None
    _shifted(task.suggestions)


def _moved(boxes: Boxes) -> None:
    boxes.images[0] = boxes.images[0] % 6 + 1  # another of the images 1 … 6


def _relabelled(boxes: Boxes) -> None:
    boxes.labels[0] = 23 - boxes.labels[0]  # 11 ↔ 12


SHARED: dict[str, Callable[[TaskData], object]] = {
    "name": lambda task: setattr(task, "name", "other"),
    "kind": lambda task: setattr(task, "kind", TaskKind.grade),
    "label name": lambda task: task.labels.update({11: "renamed"}),
    "span": lambda task: setattr(task, "span", task.span + 1),
    "suggestion set": lambda task: setattr(task, "suggestion_set_id", 8),
    "reference box": lambda task: _shifted(task.reference),
    "reference label": lambda task: _relabelled(task.reference),
    "reference image": lambda task: _moved(task.reference),
    "suggestion box": lambda task: _shifted_suggestions(task),
    "no suggestions": lambda task: setattr(task, "suggestions", None),
    "register entry": lambda task: _shifted(task.register["removed"][0][1]),
    "register group": lambda task: task.register["removed"].__setitem__(
        0, (9, task.register["removed"][0][1])
    ),
    "register kind": lambda task: task.register.update(extra=task.register.pop("duplicate")),
    "task images": lambda task: setattr(task, "images", task.images[:-1]),
}
WORK: dict[str, Callable[[TaskData], object]] = {
    "object box": lambda task: _shifted(_first(task).objects),
    "object label": lambda task: _relabelled(_first(task).objects),
    "object image": lambda task: _moved(_first(task).objects),
    "edit time": lambda task: _first(task).edited_seconds.__setitem__(0, 1.5),
    "images seen": lambda task: _first(task).images_seen.reverse(),
    "visit": lambda task: _first(task).visit_seconds.update({2: 3.0}),
    "expert name": lambda task: task.work["unaided"].update(
        renamed=task.work["unaided"].pop("Participant_0")
    ),
    "expert gone": lambda task: task.work["unaided"].pop("Participant_0"),
    "object gone": lambda task: setattr(_first(task), "objects", _first(task).objects.take(slice(1, None))),
    "same bytes, other shape": lambda task: setattr(
        _first(task), "edited_seconds", _first(task).edited_seconds.reshape(1, -1)
    ),
}


Keys = tuple[str, dict[str, str]]


def _keys_before_and_after(change: Callable[[TaskData], object]) -> tuple[Keys, Keys]:
    task = _base()
    edited = copy.deepcopy(task)
    change(edited)
    return service.task_digests(task, MetricsParams()), service.task_digests(edited, MetricsParams())


@pytest.mark.parametrize("change", list(SHARED))
def test_a_shared_input_changes_every_key(change: str) -> None:
    (key, modes), (edited_key, edited_modes) = _keys_before_and_after(SHARED[change])
    assert edited_key != key
    assert all(edited_modes[mode] != modes[mode] for mode in modes)


@pytest.mark.parametrize("change", list(WORK))
def test_a_mode_input_changes_that_mode_key_alone(change: str) -> None:
    (key, modes), (edited_key, edited_modes) = _keys_before_and_after(WORK[change])
    assert edited_key != key
    assert edited_modes["unaided"] != modes["unaided"]
    assert edited_modes["aided"] == modes["aided"]


@pytest.mark.parametrize(
    "params",
    [
        MetricsParams(iou=0.5),
        MetricsParams(error_iou=0.1),
        MetricsParams(consensus_radius=20.0),
        MetricsParams(consensus_nms=0.5),
        MetricsParams(min_votes=2),
        MetricsParams(count_threshold=3.0),
    ],
)
def test_every_parameter_changes_every_key(params: MetricsParams) -> None:
    task = _base()
    key, modes = service.task_digests(task, MetricsParams())
    other_key, other_modes = service.task_digests(task, params)
    assert other_key != key
    assert all(other_modes[mode] != modes[mode] for mode in modes)


def test_equal_content_gives_equal_keys() -> None:
    task, again = _base(), _base()
    assert service.task_digests(task, MetricsParams()) == service.task_digests(again, MetricsParams())
    again.reference = Boxes(
        np.array(again.reference.boxes, order="F"),
        again.reference.labels.copy(),
        again.reference.images.copy(),
    )
    assert service.task_digests(task, MetricsParams()) == service.task_digests(again, MetricsParams())
