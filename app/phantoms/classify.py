"""Bronchoalveolar lavage cytology in May-Grünwald-Giemsa: five cell types on a glass background."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from app.phantoms import optics, shapes
from app.phantoms.cytology import (
    CellPlan,
    CellStamp,
    SmearStyle,
    compose,
    red_blood_cell,
)
from app.phantoms.model import CLASSIFY_LABELS, Phantom

FloatArray = np.ndarray

NUCLEAR, BLUE, EOSIN = 0, 1, 2
# OD per unit amount, from the colour each dye shows at that amount: azure-eosinate (purple nuclei),
# methylene blue (basophilic cytoplasm), eosin (orange-red granules).
MGG_VECTORS = np.stack(
    [
        optics.od_from_rgb((95, 45, 140)),
        optics.od_from_rgb((120, 165, 220)),
        optics.od_from_rgb((235, 115, 80)),
    ]
)
STYLE = SmearStyle(
    vectors=MGG_VECTORS,
    background=(0.01, 0.02, 0.02),
    blur_sigma=0.7,
    noise_sigma=2.0,
    jpeg_quality=90,
)

# Body radius ranges in px (0.25 µm/px): lymphocytes smallest, macrophages largest.
RADIUS_PX: dict[str, tuple[float, float]] = {
    "neutrophil": (19.0, 24.0),
    "eosinophil": (20.0, 26.0),
    "mast_cell": (20.0, 27.0),
    "macrophage": (29.0, 40.0),
    "lymphocyte": (13.0, 17.0),
}
LABEL_SHARE = (0.22, 0.18, 0.16, 0.24, 0.20)


def classify_patch(seed: int, size: int = 512) -> Phantom:
    """A BAL cytology patch `size`×`size` px with about 8–25 labelled cells per 512² px.

    Boxes are tight around each cell body and clipped to the patch; difficulty is small and grows with
    the share of the cell cut off by the border.
    """
    rng = np.random.default_rng([seed, 1])
    scale = (size / 512) ** 2
    count = max(2, round(rng.uniform(8, 25) * scale))
    labels = rng.choice(len(CLASSIFY_LABELS), size=count, p=LABEL_SHARE)
    plans = [_plan(rng, CLASSIFY_LABELS[i]) for i in labels]
    erythrocytes = [red_blood_cell(rng, EOSIN, 3, 0.22) for _ in range(rng.poisson(3 * scale))]
    return compose(rng, size, STYLE, plans, erythrocytes, _difficulty)


def _plan(rng: np.random.Generator, label: str) -> CellPlan:
    radius = float(rng.uniform(*RADIUS_PX[label]))
    render = RENDERERS[label]
    return CellPlan(label=label, radius=radius, render=lambda r: render(r, radius))


def _difficulty(plan: CellPlan, visible: float) -> float:
    return float(np.clip(0.05 + 0.9 * (1.0 - visible), 0.0, 1.0))


def _canvas(radius: float) -> tuple[FloatArray, FloatArray, FloatArray]:
    yy, xx = shapes.local_grid(int(np.ceil(radius * 1.3)) + 3)
    return yy, xx, np.zeros((3, *yy.shape), dtype=np.float32)


def _chromatin(
    rng: np.random.Generator,
    mask: FloatArray,
    level: float,
    grain: float,
    contrast: float,
) -> FloatArray:
    """Nuclear stain amount: `level` modulated by blotchy chromatin of grain `grain` px."""
    return level * mask * np.clip(1.0 + contrast * shapes.texture(rng, mask.shape, grain), 0.35, 2.0)


def _lobes(rng: np.random.Generator, yy: FloatArray, xx: FloatArray, radius: float, count: int) -> FloatArray:
    """Segmented nucleus: `count` lobes on an arc, joined by thin chromatin strands."""
    arc_radius = radius * rng.uniform(0.38, 0.5)
    start = rng.uniform(0, 2 * np.pi)
    span = rng.uniform(2.4, 4.2) if count > 2 else rng.uniform(2.2, 2.9)
    angles = start + np.linspace(0.0, span, count)
    centres = [(arc_radius * np.sin(a), arc_radius * np.cos(a)) for a in angles]
    mask = np.zeros_like(yy)
    for centre in centres:
        lobe_radius = radius * rng.uniform(0.24, 0.32)
        outline = shapes.random_outline(rng, lobe_radius, float(rng.uniform(1.0, 1.4)), 0.08, offset=centre)
        mask = np.maximum(mask, shapes.fill(outline, yy, xx))
    for p, q in itertools.pairwise(centres):
        mask = np.maximum(mask, shapes.segment_mask(yy, xx, p, q, radius * 0.12))
    return mask


def neutrophil(rng: np.random.Generator, radius: float) -> CellStamp:
    """Pale lilac cytoplasm, nucleus of 3–5 lobes."""
    yy, xx, amounts = _canvas(radius)
    body = shapes.fill(shapes.random_outline(rng, radius, float(rng.uniform(1.0, 1.15)), 0.05), yy, xx)
    nucleus = _lobes(rng, yy, xx, radius, int(rng.integers(3, 6))) * body
    amounts[EOSIN] = body * 0.13 * (1 + 0.15 * shapes.texture(rng, body.shape, 1.0))
    amounts[BLUE] = body * 0.04
    amounts[NUCLEAR] = body * 0.03 + _chromatin(rng, nucleus, 0.95, 1.3, 0.22)
    return CellStamp(amounts, body)


def eosinophil(rng: np.random.Generator, radius: float) -> CellStamp:
    """Cytoplasm packed with orange-red granules, bilobed nucleus."""
    yy, xx, amounts = _canvas(radius)
    body = shapes.fill(shapes.random_outline(rng, radius, float(rng.uniform(1.0, 1.15)), 0.05), yy, xx)
    nucleus = _lobes(rng, yy, xx, radius * 1.05, 2) * body
    cytoplasm = np.clip(body - nucleus, 0.0, 1.0)
    grains = shapes.granules(rng, cytoplasm, int(body.sum() / 5.0), sigma=1.1)
    amounts[EOSIN] = body * 0.18 + 0.75 * grains
    amounts[BLUE] = body * 0.02
    amounts[NUCLEAR] = _chromatin(rng, nucleus, 0.8, 1.3, 0.22) + 0.1 * grains
    return CellStamp(amounts, body)


def mast_cell(rng: np.random.Generator, radius: float) -> CellStamp:
    """Round cell filled with dense dark-purple metachromatic granules that half hide a central nucleus."""
    yy, xx, amounts = _canvas(radius)
    body = shapes.fill(shapes.random_outline(rng, radius, float(rng.uniform(1.0, 1.1)), 0.035), yy, xx)
    offset = tuple(rng.normal(0.0, radius * 0.1, size=2))
    nucleus = shapes.fill(shapes.random_outline(rng, radius * 0.42, 1.1, 0.05, offset=offset), yy, xx)
    grains = shapes.granules(rng, body, int(body.sum() / 3.5), sigma=0.9)
    amounts[NUCLEAR] = body * 0.35 + 0.75 * grains + _chromatin(rng, nucleus, 0.35, 1.5, 0.2)
    amounts[BLUE] = body * 0.12 + 0.15 * grains
    return CellStamp(amounts, body)


def macrophage(rng: np.random.Generator, radius: float) -> CellStamp:
    """Large irregular cell: grey-blue foamy, vacuolated cytoplasm and an eccentric oval nucleus."""
    yy, xx, amounts = _canvas(radius)
    body = shapes.fill(shapes.random_outline(rng, radius, float(rng.uniform(1.0, 1.3)), 0.09), yy, xx)
    angle = rng.uniform(0, 2 * np.pi)
    shift = radius * rng.uniform(0.25, 0.4)
    offset = (float(shift * np.sin(angle)), float(shift * np.cos(angle)))
    nucleus = shapes.fill(
        shapes.random_outline(rng, radius * 0.38, float(rng.uniform(1.1, 1.5)), 0.07, offset=offset),
        yy,
        xx,
    )
    vacuoles = _vacuoles(rng, yy, xx, np.clip(body - nucleus, 0, 1), radius)
    foam = np.clip(1.0 + 0.25 * shapes.texture(rng, body.shape, 1.2), 0.5, 1.6) * (1.0 - 0.85 * vacuoles)
    amounts[BLUE] = body * 0.38 * foam
    amounts[NUCLEAR] = body * 0.07 * foam + _chromatin(rng, nucleus, 0.6, 1.8, 0.18)
    amounts[EOSIN] = body * 0.05 * foam
    return CellStamp(amounts, body)


def _vacuoles(
    rng: np.random.Generator,
    yy: FloatArray,
    xx: FloatArray,
    region: FloatArray,
    radius: float,
) -> FloatArray:
    """Clear round vacuoles (2–6 px radius) scattered through `region`."""
    mask = np.zeros_like(yy)
    inside = np.argwhere(region > 0.9)
    if inside.size == 0:
        return mask
    half = yy.shape[0] // 2
    for row, col in inside[rng.choice(len(inside), size=int(rng.integers(6, 16)))]:
        hole_radius = float(rng.uniform(2.0, 0.17 * radius))
        hole = shapes.random_outline(rng, hole_radius, 1.0, 0.05, offset=(row - half, col - half))
        reach = int(hole_radius * 1.3) + 2
        window = np.s_[max(0, row - reach) : row + reach + 1, max(0, col - reach) : col + reach + 1]
        mask[window] = np.maximum(mask[window], shapes.fill(hole, yy[window], xx[window]))
    holes: FloatArray = mask * region
    return holes


def lymphocyte(rng: np.random.Generator, radius: float) -> CellStamp:
    """Small round cell: dense dark round nucleus and a thin sky-blue rim of cytoplasm."""
    yy, xx, amounts = _canvas(radius)
    body = shapes.fill(shapes.random_outline(rng, radius, float(rng.uniform(1.0, 1.1)), 0.03), yy, xx)
    offset = tuple(rng.normal(0.0, radius * 0.06, size=2))
    nucleus = shapes.fill(shapes.random_outline(rng, radius * 0.8, 1.05, 0.03, offset=offset), yy, xx) * body
    amounts[BLUE] = body * 0.75
    amounts[NUCLEAR] = _chromatin(rng, nucleus, 1.2, 1.6, 0.2)
    return CellStamp(amounts, body)


RENDERERS: dict[str, Callable[[np.random.Generator, float], CellStamp]] = {
    "neutrophil": neutrophil,
    "eosinophil": eosinophil,
    "mast_cell": mast_cell,
    "macrophage": macrophage,
    "lymphocyte": lymphocyte,
}
