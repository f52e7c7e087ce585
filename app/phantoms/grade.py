"""Equine pulmonary haemorrhage (EIPH) cytology: macrophages in Prussian blue with nuclear fast red.

Each macrophage carries a continuous hemosiderin amount `value` ∈ [0, 5); its grade is floor(value)
(thresholds 1, 2, 3, 4). Blue coverage and intensity rise monotonically with `value`, so cells near a
threshold look alike on both sides of it.
"""

from __future__ import annotations

import numpy as np

from app.phantoms import optics, shapes
from app.phantoms.cytology import CellPlan, CellStamp, SmearStyle, compose, red_blood_cell
from app.phantoms.model import GRADE_LABELS, Phantom

FloatArray = np.ndarray

FAST_RED, PRUSSIAN_BLUE = 0, 1
GRADE_VECTORS = np.stack([optics.od_from_rgb((225, 105, 140)), optics.od_from_rgb((35, 75, 165))])
STYLE = SmearStyle(
    vectors=GRADE_VECTORS, background=(0.025, 0.004), blur_sigma=0.6, noise_sigma=1.8, jpeg_quality=90
)
THRESHOLDS = np.array([1.0, 2.0, 3.0, 4.0])
MAX_VALUE = float(np.nextafter(5.0, 0.0))
RADIUS_PX = (21.0, 31.0)


def grade_of(value: float) -> str:
    """Grade label floor(value) for a hemosiderin amount in [0, 5)."""
    return GRADE_LABELS[int(np.clip(np.floor(value), 0, 4))]


def threshold_difficulty(value: float) -> float:
    """1 − 2·(distance to the nearest grade threshold), clipped to [0, 1]: 1 on a threshold."""
    distance = float(np.min(np.abs(THRESHOLDS - value)))
    return float(np.clip(1.0 - 2.0 * distance, 0.0, 1.0))


def grade_patch(seed: int, size: int = 256) -> Phantom:
    """An EIPH patch `size`×`size` px, about 4–12 macrophages per 256² px; `value` = hemosiderin amount."""
    rng = np.random.default_rng([seed, 2])
    scale = (size / 256) ** 2
    count = max(1, round(rng.uniform(4, 12) * scale))
    values = _values(rng, count)
    plans = [_plan(rng, float(v)) for v in values]
    erythrocytes = [red_blood_cell(rng, FAST_RED, 2, 0.16) for _ in range(rng.poisson(2 * scale))]
    return compose(rng, size, STYLE, plans, erythrocytes, lambda plan, _: threshold_difficulty(plan.value))


def _values(rng: np.random.Generator, count: int) -> FloatArray:
    """Cells of one image cluster around an image-level grade, as in real EIPH samples; some are uniform."""
    centre = rng.uniform(0.0, 5.0)
    clustered = rng.normal(centre, 1.1, size=count)
    uniform = rng.uniform(0.0, 5.0, size=count)
    return np.clip(np.where(rng.random(count) < 0.3, uniform, clustered), 0.0, MAX_VALUE)


def _plan(rng: np.random.Generator, value: float) -> CellPlan:
    radius = float(rng.uniform(*RADIUS_PX))
    return CellPlan(
        label=grade_of(value), radius=radius, render=lambda r: siderophage(r, radius, value), value=value
    )


def siderophage(rng: np.random.Generator, radius: float, value: float) -> CellStamp:
    """Macrophage with pale pink cytoplasm, red nucleus and blue hemosiderin growing with `value` ∈ [0, 5)."""
    yy, xx = shapes.local_grid(int(np.ceil(radius * 1.3)) + 3)
    amounts = np.zeros((2, *yy.shape), dtype=np.float32)
    body = shapes.fill(shapes.random_outline(rng, radius, float(rng.uniform(1.0, 1.3)), 0.09), yy, xx)
    angle = rng.uniform(0, 2 * np.pi)
    shift = radius * rng.uniform(0.2, 0.4)
    offset = (float(shift * np.sin(angle)), float(shift * np.cos(angle)))
    nucleus_outline = shapes.random_outline(
        rng, radius * 0.36, float(rng.uniform(1.1, 1.5)), 0.07, offset=offset
    )
    nucleus = shapes.fill(nucleus_outline, yy, xx) * body
    chromatin = np.clip(1.0 + 0.2 * shapes.texture(rng, body.shape, 1.5), 0.4, 1.8)
    foam = np.clip(1.0 + 0.3 * shapes.texture(rng, body.shape, 1.2), 0.4, 1.8)
    amounts[FAST_RED] = body * 0.12 * foam + nucleus * 0.75 * chromatin
    amounts[PRUSSIAN_BLUE] = hemosiderin(rng, body, value)
    return CellStamp(amounts, body)


def hemosiderin(rng: np.random.Generator, body: FloatArray, value: float) -> FloatArray:
    """Prussian-blue amount (OD units) inside `body`: a share f = value/5 of the cell covered by granular
    deposits of intensity 0.15 + 1.3·f^1.2, over a diffuse blue tint 0.3·f. Monotonic in `value`."""
    fraction = value / 5.0
    inside = body > 0.5
    if not inside.any() or fraction <= 0:
        return np.zeros_like(body)
    clumps = shapes.texture(rng, body.shape, 1.3) + 0.5 * shapes.texture(rng, body.shape, 0.7)
    # Cover exactly the `coverage` share of the body: threshold the clump field at that quantile.
    coverage = min(1.0, 1.15 * fraction)
    cut = float(np.quantile(clumps[inside], 1.0 - coverage))
    deposits = np.clip((clumps - cut) / 0.5 + 0.3, 0.0, 1.0)
    grain = np.clip(1.0 + 0.35 * shapes.texture(rng, body.shape, 0.8), 0.3, 1.7)
    intensity = 0.15 + 1.3 * fraction**1.2
    blue: FloatArray = body * (0.3 * fraction + intensity * deposits * grain)
    return blue
