"""Phantom generators: determinism, exact ground truth, visible class differences, TIFF round trip."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile

from app.phantoms import (
    CLASSIFY_LABELS,
    DETECT_LABELS,
    GRADE_LABELS,
    LOOKALIKE_LABEL,
    Phantom,
    PhantomObject,
    classify_patch,
    detect_region,
    grade_patch,
    write_pyramidal_tiff,
)
from app.phantoms.tiff import pyramid_shapes

SEEDS = range(10)


@pytest.fixture(scope="module")
def classify_set() -> list[Phantom]:
    return [classify_patch(seed) for seed in SEEDS]


@pytest.fixture(scope="module")
def grade_set() -> list[Phantom]:
    return [grade_patch(seed) for seed in range(20)]


@pytest.fixture(scope="module")
def region() -> Phantom:
    return detect_region(7, width=1500, height=1200)


def box_pixels(phantom: Phantom, obj: PhantomObject) -> np.ndarray:
    return phantom.image[obj.y1 : obj.y2, obj.x1 : obj.x2].reshape(-1, 3).astype(np.float64)


def assert_boxes_valid(phantom: Phantom, objects: tuple[PhantomObject, ...]) -> None:
    height, width = phantom.image.shape[:2]
    for obj in objects:
        assert 0 <= obj.x1 < obj.x2 <= width
        assert 0 <= obj.y1 < obj.y2 <= height
        assert 0.0 <= obj.difficulty <= 1.0


@pytest.mark.parametrize(
    "make",
    [
        lambda s: classify_patch(s),
        lambda s: grade_patch(s),
        lambda s: detect_region(s, width=600, height=500),
    ],
    ids=["classify", "grade", "detect"],
)
def test_same_seed_gives_identical_phantom_and_other_seed_differs(make: Callable[[int], Phantom]) -> None:
    first, again, other = make(3), make(3), make(4)
    assert first.image.tobytes() == again.image.tobytes()
    assert first.objects == again.objects
    assert first.distractors == again.distractors
    assert first.image.tobytes() != other.image.tobytes()
    assert first.image.dtype == np.uint8
    assert first.image.ndim == 3
    assert first.image.shape[2] == 3


def test_classify_boxes_are_tight_cells_inside_the_patch(classify_set: list[Phantom]) -> None:
    for phantom in classify_set:
        assert phantom.image.shape == (512, 512, 3)
        assert 5 <= len(phantom.objects) <= 25
        assert_boxes_valid(phantom, phantom.objects)
        for obj in phantom.objects:
            assert obj.label in CLASSIFY_LABELS
            assert max(obj.x2 - obj.x1, obj.y2 - obj.y1) <= 100
            if obj.difficulty < 0.1:  # fully in view: the box is the whole cell
                assert min(obj.x2 - obj.x1, obj.y2 - obj.y1) >= 20


def test_every_classify_label_occurs_over_ten_seeds(classify_set: list[Phantom]) -> None:
    seen = {obj.label for phantom in classify_set for obj in phantom.objects}
    assert seen == set(CLASSIFY_LABELS)


def test_cells_are_darker_than_the_glass_around_them(classify_set: list[Phantom]) -> None:
    for phantom in classify_set:
        inside = np.mean([box_pixels(phantom, obj).mean() for obj in phantom.objects])
        assert inside < np.median(phantom.image) - 15


def mean_colour(phantoms: list[Phantom], label: str) -> np.ndarray:
    """Mean RGB of the darker half of each box's pixels (the cell, not the glass in the corners)."""
    colours = []
    for phantom in phantoms:
        for obj in phantom.objects:
            if obj.label == label:
                pixels = box_pixels(phantom, obj)
                darker = pixels[pixels.sum(axis=1) <= np.median(pixels.sum(axis=1))]
                colours.append(darker.mean(axis=0))
    return np.asarray(np.mean(colours, axis=0))


def test_classify_classes_differ_in_colour(classify_set: list[Phantom]) -> None:
    colours = {label: mean_colour(classify_set, label) for label in CLASSIFY_LABELS}
    red_minus_blue = {label: float(c[0] - c[2]) for label, c in colours.items()}
    # Eosinophil granules are orange-red; lymphocytes are a dark nucleus in a blue rim.
    assert red_minus_blue["eosinophil"] > red_minus_blue["lymphocyte"] + 40
    # Macrophage cytoplasm is pale grey-blue; mast cells are packed with dark purple granules.
    assert colours["mast_cell"].sum() < colours["macrophage"].sum() - 100
    assert red_minus_blue["macrophage"] < red_minus_blue["neutrophil"]


def test_grade_label_is_floor_of_value_and_difficulty_follows_thresholds(grade_set: list[Phantom]) -> None:
    for phantom in grade_set:
        assert phantom.image.shape == (256, 256, 3)
        assert 1 <= len(phantom.objects) <= 12
        assert_boxes_valid(phantom, phantom.objects)
        for obj in phantom.objects:
            assert 0.0 <= obj.value < 5.0
            assert obj.label == GRADE_LABELS[math.floor(obj.value)]
            distance = min(abs(obj.value - t) for t in (1, 2, 3, 4))
            assert obj.difficulty == pytest.approx(min(1.0, max(0.0, 1 - 2 * distance)))
    assert {obj.label for phantom in grade_set for obj in phantom.objects} == set(GRADE_LABELS)


def blueness(phantom: Phantom, obj: PhantomObject) -> float:
    pixels = box_pixels(phantom, obj)
    return float((pixels[:, 2] - pixels[:, 0]).mean())


def test_more_hemosiderin_looks_bluer(grade_set: list[Phantom]) -> None:
    cells = [(obj.value, blueness(phantom, obj)) for phantom in grade_set for obj in phantom.objects]
    values, blue = np.array(cells).T
    assert blue[values >= 4].mean() > blue[values < 1].mean() + 60
    ranks = np.argsort(np.argsort(values)), np.argsort(np.argsort(blue))
    assert np.corrcoef(*ranks)[0, 1] > 0.8  # Spearman: bluer with every step of value, not only at the ends


def test_detect_region_has_figures_lookalikes_and_fixed_boxes(region: Phantom) -> None:
    assert region.image.shape == (1200, 1500, 3)
    assert len(region.objects) >= 3
    assert len(region.distractors) >= 3
    assert_boxes_valid(region, region.objects + region.distractors)
    assert {obj.label for obj in region.objects} == set(DETECT_LABELS)
    assert {obj.label for obj in region.distractors} == {LOOKALIKE_LABEL}
    for obj in region.objects + region.distractors:
        clipped = obj.x1 == 0 or obj.y1 == 0 or obj.x2 == 1500 or obj.y2 == 1200
        assert clipped or (obj.x2 - obj.x1, obj.y2 - obj.y1) == (50, 50)
    centres = np.array([((o.x1 + o.x2) / 2, (o.y1 + o.y2) / 2) for o in region.objects + region.distractors])
    gaps = np.hypot(*(centres[:, None, :] - centres[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(gaps, np.inf)
    assert gaps.min() >= 30


def test_difficulties_spread_over_the_unit_interval(region: Phantom) -> None:
    difficulties = [obj.difficulty for obj in region.objects + region.distractors]
    assert min(difficulties) < 0.3
    assert max(difficulties) > 0.5


def core_darkness(phantom: Phantom, obj: PhantomObject) -> float:
    """Mean of the 30 darkest pixels' grey level in the box: the chromatin of a figure or look-alike."""
    grey = box_pixels(phantom, obj).mean(axis=1)
    return float(np.sort(grey)[:30].mean())


def test_figures_and_lookalikes_are_darker_than_ordinary_nuclei(region: Phantom) -> None:
    rng = np.random.default_rng(0)
    random_boxes = [
        PhantomObject(int(x), int(y), int(x) + 50, int(y) + 50, "background", 0.0)
        for x, y in zip(rng.integers(0, 1450, 40), rng.integers(0, 1150, 40), strict=True)
    ]
    ordinary = np.median([core_darkness(region, box) for box in random_boxes])
    for obj in region.objects + region.distractors:
        assert core_darkness(region, obj) < ordinary - 25


def test_pyramid_shapes_halve_until_below_1024() -> None:
    assert pyramid_shapes(5000, 7000) == [(5000, 7000), (2500, 3500), (1250, 1750), (625, 875)]
    assert pyramid_shapes(512, 512) == [(512, 512)]


@pytest.mark.parametrize("compression", ["jpeg", "deflate"])
def test_pyramidal_tiff_round_trip(tmp_path: Path, compression: str) -> None:
    image = detect_region(2, width=2100, height=1100).image
    path = tmp_path / "region.tif"
    write_pyramidal_tiff(path, image, mpp=0.25, compression=compression)  # type: ignore[arg-type]
    with tifffile.TiffFile(path) as tif:
        levels = tif.series[0].levels
        assert [level.shape for level in levels] == [(1100, 2100, 3), (550, 1050, 3), (275, 525, 3)]
        page = tif.pages.first
        assert page.photometric == tifffile.PHOTOMETRIC.RGB
        assert (page.tilewidth, page.tilelength) == (256, 256)
        assert page.tags["XResolution"].value == (40000, 1)  # px per cm at 0.25 µm/px
        assert page.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
        level0 = levels[0].asarray()
        level1 = levels[1].asarray()
    difference = np.abs(level0.astype(np.int16) - image)
    if compression == "deflate":
        assert np.array_equal(level0, image)
    else:
        assert difference.mean() < 3.0
        assert np.percentile(difference, 99) < 12
    expected_level1 = image.reshape(550, 2, 1050, 2, 3).mean(axis=(1, 3))
    assert np.abs(level1 - expected_level1).mean() < 3.0
