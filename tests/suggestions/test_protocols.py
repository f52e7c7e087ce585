"""Error-injection protocols on plain data: preset counts, groups, determinism, refusals."""

from __future__ import annotations

import json

import pytest

from app.suggestions.protocols import (
    Box,
    ErrorKind,
    ImageInfo,
    InjectionResult,
    Protocol,
    ProtocolError,
    RegisterEntry,
    TaskInput,
    TaskObject,
    apply_protocol,
    group_of,
    iou,
    resolve_protocol,
)

LABEL_BASE = 100


def grid_boxes(count: int, size: float = 30.0) -> list[Box]:
    return [
        Box(20 + (i % 5) * 70, 20 + (i // 5) * 70, 20 + (i % 5) * 70 + size, 20 + (i // 5) * 70 + size)
        for i in range(count)
    ]


def synthetic_task(
    kind: str,
    images: int,
    per_image: int,
    labels: int,
    candidates_per_image: int = 0,
) -> TaskInput:
    """Grid cells on 400×300 images; the source set is the ground truth with spread scores plus candidates."""
    infos = tuple(ImageInfo(id=i + 1, name=f"img{i}.png", width=400, height=300) for i in range(images))
    label_ids = tuple(LABEL_BASE + i for i in range(labels))
    truth: list[TaskObject] = []
    suggestions: list[TaskObject] = []
    for image in infos:
        for index, box in enumerate(grid_boxes(per_image)):
            label = label_ids[(image.id + index) % labels]
            truth.append(TaskObject(image.id, label, box))
            score = ((image.id * 7 + index * 13) % 100) / 100
            suggestions.append(TaskObject(image.id, label, box, score))
        for index in range(candidates_per_image):
            box = Box(20 + index * 45, 240, 50 + index * 45, 270)
            score = ((image.id * 11 + index * 17) % 97) / 97
            suggestions.append(TaskObject(image.id, label_ids[0], box, score))
    return TaskInput(kind, infos, label_ids, tuple(truth), tuple(suggestions))


def by_kind(result: InjectionResult, kind: ErrorKind) -> list[RegisterEntry]:
    return [entry for entry in result.register if entry.kind == kind]


def images_of(result: InjectionResult, kind: ErrorKind) -> set[int]:
    return {entry.image_id for entry in result.register if entry.kind == kind}


def canonical_bytes(result: InjectionResult) -> bytes:
    return json.dumps(result.canonical(), sort_keys=True, separators=(",", ":")).encode()


def test_paper_classify_changes_15_classes_on_5_images_and_removes_one_cell_on_5_others() -> None:
    task = synthetic_task("classify", images=20, per_image=6, labels=5)

    result = apply_protocol(task, resolve_protocol("paper-classify", None, None))

    changed = [entry for entry in result.register if entry.kind == ErrorKind.class_changed]
    removed = [entry for entry in result.register if entry.kind == ErrorKind.removed]
    assert len(changed) == 15
    assert len(images_of(result, ErrorKind.class_changed)) == 5
    assert len(removed) == 5
    assert len(images_of(result, ErrorKind.removed)) == 5
    assert images_of(result, ErrorKind.class_changed).isdisjoint(images_of(result, ErrorKind.removed))
    assert len(by_kind(result, ErrorKind.duplicate)) + len(by_kind(result, ErrorKind.false_positive)) == 8
    assert all(entry.ref_label_id != entry.shown_label_id for entry in changed)
    assert all(entry.ref_box == entry.shown_box for entry in changed)
    assert len(result.shown) == len(task.ground_truth) - 5 + 8


def test_every_shown_index_points_at_the_shown_box_and_label() -> None:
    task = synthetic_task("classify", images=20, per_image=6, labels=5)
    result = apply_protocol(task, resolve_protocol("paper-classify", None, {"seed": 3}))

    for entry in result.register:
        if entry.kind == ErrorKind.removed:
            assert entry.shown_index is None
            assert entry.ref_box is not None
            assert all(item.box != entry.ref_box for item in result.shown if item.image_id == entry.image_id)
            continue
        assert entry.shown_index is not None
        shown = result.shown[entry.shown_index]
        assert (shown.image_id, shown.label_id, shown.box) == (
            entry.image_id,
            entry.shown_label_id,
            entry.shown_box,
        )


def test_artefacts_are_duplicates_over_shown_cells_and_fakes_where_no_cell_is() -> None:
    task = synthetic_task("classify", images=20, per_image=6, labels=5)
    result = apply_protocol(task, resolve_protocol("paper-classify", None, None))
    truth_on = {
        image.id: [t.box for t in task.ground_truth if t.image_id == image.id] for image in task.images
    }

    for entry in by_kind(result, ErrorKind.duplicate):
        assert entry.shown_box is not None
        assert max(iou(entry.shown_box, box) for box in truth_on[entry.image_id]) >= 0.4
    for entry in by_kind(result, ErrorKind.false_positive):
        assert entry.shown_box is not None
        assert entry.ref_box == entry.shown_box
        assert all(iou(entry.shown_box, box) == 0.0 for box in truth_on[entry.image_id])
        assert entry.shown_box.x1 > 2
        assert entry.shown_box.y1 > 2
        assert entry.shown_box.x2 < 398
        assert entry.shown_box.y2 < 298


def test_paper_grade_raises_every_cell_on_5_images_and_grade_4_stays_4() -> None:
    task = synthetic_task("grade", images=15, per_image=6, labels=5)

    result = apply_protocol(task, resolve_protocol("paper-grade", None, None))

    shifted = by_kind(result, ErrorKind.grade_shifted)
    shifted_images = images_of(result, ErrorKind.grade_shifted)
    assert len(shifted_images) == 5
    top = task.label_ids[-1]
    expected = [t for t in task.ground_truth if t.image_id in shifted_images and t.label_id != top]
    assert len(shifted) == len(expected)
    for entry in shifted:
        assert task.label_ids.index(entry.shown_label_id) == task.label_ids.index(entry.ref_label_id) + 1
    top_cells = [t for t in task.ground_truth if t.image_id in shifted_images and t.label_id == top]
    assert top_cells, "the synthetic task must hold grade-4 cells on the shifted images"
    for cell in top_cells:
        assert any(
            s.box == cell.box and s.label_id == top for s in result.shown if s.image_id == cell.image_id
        )
    removed_images = images_of(result, ErrorKind.removed)
    artefact_images = images_of(result, ErrorKind.duplicate) | images_of(result, ErrorKind.false_positive)
    assert len(by_kind(result, ErrorKind.removed)) == 5
    assert len(removed_images) == 5
    assert len(by_kind(result, ErrorKind.duplicate)) + len(by_kind(result, ErrorKind.false_positive)) == 10
    assert len(artefact_images) == 5
    assert len(removed_images | shifted_images | artefact_images) == 15


def test_paper_detect_removes_a_fifth_adds_as_many_fakes_and_groups_follow_the_thresholds() -> None:
    task = synthetic_task("detect", images=4, per_image=12, labels=1, candidates_per_image=6)
    true_count = len(task.ground_truth)

    result = apply_protocol(task, resolve_protocol("paper-detect", None, None))

    removed = by_kind(result, ErrorKind.removed)
    fakes = by_kind(result, ErrorKind.false_positive)
    assert len(removed) == round(0.2 * true_count) == len(fakes)
    for entry in removed:
        assert entry.score is not None
        assert entry.group == group_of(entry.score, [0.33, 0.66])
    for entry in fakes:
        assert entry.score is not None
        assert entry.group == group_of(entry.score, [0.2, 0.4])
        fake = entry.shown_box
        assert fake is not None
        assert all(iou(fake, t.box) < 0.5 for t in task.ground_truth if t.image_id == entry.image_id)
    assert len(result.shown) == true_count


def test_balanced_groups_differ_by_at_most_one_when_every_group_has_enough() -> None:
    task = synthetic_task("detect", images=4, per_image=15, labels=1, candidates_per_image=6)
    result = apply_protocol(task, resolve_protocol("paper-detect", None, None))

    for kind in (ErrorKind.removed, ErrorKind.false_positive):
        counts = result.counts()[kind.value]
        assert max(counts.values()) - min(counts.values()) <= 1, counts


def test_group_of_uses_closed_upper_bounds() -> None:
    assert [group_of(p, [0.2, 0.4]) for p in (0.0, 0.2, 0.2001, 0.4, 0.41, 1.0)] == [0, 0, 1, 1, 2, 2]
    assert [group_of(p, [0.33, 0.66]) for p in (0.33, 0.34, 0.66, 0.67)] == [0, 1, 1, 2]


@pytest.mark.parametrize("preset", ["paper-classify", "paper-grade", "paper-detect"])
def test_same_seed_same_input_gives_byte_identical_output(preset: str) -> None:
    kind = preset.removeprefix("paper-")
    task = synthetic_task(
        kind,
        images=20,
        per_image=12 if kind == "detect" else 6,
        labels=1 if kind == "detect" else 5,
        candidates_per_image=6,
    )
    protocol = resolve_protocol(preset, None, {"seed": 11})

    first = canonical_bytes(apply_protocol(task, protocol))
    second = canonical_bytes(apply_protocol(task, resolve_protocol(preset, None, {"seed": 11})))
    other_seed = canonical_bytes(apply_protocol(task, resolve_protocol(preset, None, {"seed": 12})))

    assert first == second
    assert first != other_seed


def test_step_overrides_change_one_field_of_one_step() -> None:
    protocol = resolve_protocol("paper-classify", None, {"seed": 5, "steps": {"0": {"count": 10}}})
    assert protocol.seed == 5
    assert protocol.steps[0].count == 10
    assert protocol.steps[0].images == 5
    result = apply_protocol(synthetic_task("classify", 20, 6, 5), protocol)
    assert len(by_kind(result, ErrorKind.class_changed)) == 10


def test_target_images_restrict_a_step() -> None:
    document = {"steps": [{"kind": "removed", "count": 3, "target_images": ["img2.png"]}]}
    result = apply_protocol(synthetic_task("classify", 4, 6, 3), resolve_protocol(None, document, None))
    assert images_of(result, ErrorKind.removed) == {3}


@pytest.mark.parametrize(
    ("preset", "document", "overrides", "message"),
    [
        ("paper-nope", None, None, "unknown preset 'paper-nope'"),
        (None, {"steps": [{"kind": "relabelled", "count": 1}]}, None, "steps.0.kind"),
        (None, {"steps": [{"kind": "removed", "fraction": 1.5}]}, None, "less than or equal to 1"),
        (None, {"steps": [{"kind": "removed", "fraction": -0.1}]}, None, "greater than or equal to 0"),
        (
            None,
            {"steps": [{"kind": "removed", "fraction": 0.2, "thresholds": [0.6, 0.3]}]},
            None,
            "increase strictly",
        ),
        (None, {"steps": [{"kind": "removed", "count": 1, "fraction": 0.2}]}, None, "exactly one of"),
        (
            None,
            {"steps": [{"kind": "false_positive", "same_count_as": "removed"}]},
            None,
            "names no earlier step",
        ),
        ("paper-detect", None, {"steps": {"7": {"count": 1}}}, "steps 0 to 1"),
        (None, {"steps": []}, None, "at least 1"),
    ],
)
def test_invalid_protocols_are_refused_with_a_clear_message(
    preset: str | None, document: dict[str, object] | None, overrides: dict[str, object] | None, message: str
) -> None:
    with pytest.raises(ProtocolError) as caught:
        resolve_protocol(preset, document, overrides)
    assert message in str(caught.value)


def _refusal(task: TaskInput, document: dict[str, object]) -> str:
    with pytest.raises(ProtocolError) as caught:
        apply_protocol(task, Protocol.model_validate(document))
    return str(caught.value)


def test_impossible_applications_are_refused() -> None:
    task = synthetic_task("classify", images=3, per_image=4, labels=3)

    assert "hold only 12" in _refusal(task, {"steps": [{"kind": "removed", "count": 13}]})
    assert "only 3 qualify" in _refusal(task, {"steps": [{"kind": "removed", "per_image": 1, "images": 5}]})
    assert "'nowhere.png'" in _refusal(
        task, {"steps": [{"kind": "removed", "count": 1, "target_images": ["nowhere.png"]}]}
    )
    assert "needs a grade task" in _refusal(task, {"steps": [{"kind": "grade_shifted", "all": True}]})
    no_truth = TaskInput("classify", task.images, task.label_ids, (), task.suggestions)
    assert "no ground truth" in _refusal(no_truth, {"steps": [{"kind": "removed", "count": 1}]})


def test_too_few_detector_candidates_are_refused_clearly() -> None:
    task = synthetic_task("detect", images=2, per_image=15, labels=1, candidates_per_image=2)
    with pytest.raises(ProtocolError) as caught:
        apply_protocol(task, resolve_protocol("paper-detect", None, None))
    assert "6 fakes needed" in str(caught.value)
    assert "only 4 detector candidates" in str(caught.value)


def test_base_source_keeps_detector_boxes_and_matches_them_to_ground_truth() -> None:
    task = synthetic_task("classify", images=6, per_image=4, labels=3, candidates_per_image=1)
    document = {"base": "source", "steps": [{"kind": "removed", "per_image": 1, "images": 2}]}
    result = apply_protocol(task, Protocol.model_validate(document))
    assert len(result.shown) == len(task.suggestions) - 2
    for entry in result.register:
        assert entry.ref_box in {t.box for t in task.ground_truth}
