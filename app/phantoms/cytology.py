"""Shared machinery for cytology smears (classify, grade): glass background, cell placement, composition."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from app.phantoms import fields, optics, shapes
from app.phantoms.model import Phantom, PhantomObject

FloatArray = np.ndarray


@dataclass(frozen=True)
class CellStamp:
    """A rendered cell: stain amounts (S, h, w) in OD units and its body mask (h, w) in [0, 1], h = w odd."""

    amounts: FloatArray
    mask: FloatArray

    @property
    def half(self) -> int:
        """Pixels from the centre pixel to the patch border."""
        return int(self.mask.shape[0] // 2)


@dataclass(frozen=True)
class CellPlan:
    """A cell to draw: its label, body radius (px), hemosiderin value and how to render it."""

    label: str
    radius: float
    render: Callable[[np.random.Generator], CellStamp]
    value: float = 0.0


@dataclass(frozen=True)
class SmearStyle:
    """Per-task look: stain OD vectors (S, 3), glass background amounts (S,), blur (px) and noise (levels)."""

    vectors: FloatArray
    background: tuple[float, ...]
    blur_sigma: float
    noise_sigma: float
    jpeg_quality: int


def place_centres(
    rng: np.random.Generator,
    radii: Sequence[float],
    size: int,
    max_overlap: float = 0.22,
    keep_inside: float = 0.35,
) -> list[tuple[float, float] | None]:
    """Rejection-sample (y, x) centres so neighbours overlap by at most `max_overlap` of their radii sum.

    A centre lies at least `keep_inside`·r from the border, so cells may be cut by the edge but stay
    mostly visible. Cells that find no room get None.
    """
    placed: list[tuple[float, float, float]] = []
    centres: list[tuple[float, float] | None] = []
    for radius in radii:
        margin = keep_inside * radius
        centre = None
        for _ in range(60):
            y, x = rng.uniform(margin, size - margin, size=2)
            if all(np.hypot(y - py, x - px) >= (1 - max_overlap) * (radius + pr) for py, px, pr in placed):
                centre = (float(y), float(x))
                placed.append((centre[0], centre[1], radius))
                break
        centres.append(centre)
    return centres


def glass(rng: np.random.Generator, size: int, background: tuple[float, ...]) -> FloatArray:
    """Stain amounts (S, size, size) of the slide background: faint, smooth proteinaceous film."""
    low = size // 16 + 2
    layers = []
    for level in background:
        field = fields.smooth_noise(rng, (low, low), sigma=1.5)
        layers.append(level * (1.0 + 0.35 * fields.upsample_window(field, 16, 0, 0, size, size)))
    return np.clip(np.stack(layers), 0.0, None).astype(np.float32)


def red_blood_cell(rng: np.random.Generator, eosin_channel: int, n_stains: int, amount: float) -> CellStamp:
    """An erythrocyte: pale biconcave disc (r ≈ 9 px) with central pallor, unlabelled."""
    radius = float(rng.uniform(10.0, 12.5))
    yy, xx = shapes.local_grid(int(radius) + 3)
    body = shapes.fill(
        shapes.random_outline(rng, radius, aspect=float(rng.uniform(1.0, 1.15)), wobble=0.03),
        yy,
        xx,
    )
    pallor = shapes.fill(shapes.random_outline(rng, radius * 0.45, wobble=0.05), yy, xx, edge=3.0)
    amounts = np.zeros((n_stains, *body.shape), dtype=np.float32)
    amounts[eosin_channel] = amount * (body - 0.55 * pallor)
    return CellStamp(amounts, body)


def compose(
    rng: np.random.Generator,
    size: int,
    style: SmearStyle,
    plans: Sequence[CellPlan],
    extras: Sequence[CellStamp],
    difficulty: Callable[[CellPlan, float], float],
) -> Phantom:
    """Place and draw the planned cells and unlabelled extras on glass; boxes are tight around each body mask.

    `difficulty(plan, visible_fraction)` gives each object's difficulty from how much of it is in view.
    """
    amounts = glass(rng, size, style.background)
    objects: list[PhantomObject] = []
    centres = place_centres(rng, [plan.radius for plan in plans], size)
    for plan, centre in zip(plans, centres, strict=True):
        if centre is None:
            continue
        cell = plan.render(rng)
        top, left = round(centre[0]) - cell.half, round(centre[1]) - cell.half
        box = shapes.mask_box(cell.mask, top, left, size, size)
        if box is None:
            continue
        shapes.stamp(amounts, cell.amounts, top, left)
        visible = _visible_fraction(cell.mask, top, left, size)
        objects.append(
            PhantomObject(
                *box,
                label=plan.label,
                difficulty=difficulty(plan, visible),
                value=plan.value,
            )
        )
    for extra in extras:
        top, left = (int(v) - extra.half for v in rng.uniform(0, size, size=2))
        shapes.stamp(amounts, extra.amounts, top, left)
    vectors = optics.jitter_stains(rng, style.vectors, hue=0.06, strength=(0.85, 1.15))
    rgb = optics.transmit(amounts, vectors, optics.random_light(rng))
    image = optics.camera(rgb, rng, style.blur_sigma, style.noise_sigma)
    return Phantom(image=optics.jpeg_roundtrip(image, style.jpeg_quality), objects=tuple(objects))


def _visible_fraction(mask: FloatArray, top: int, left: int, size: int) -> float:
    """Share of the cell body's area that falls inside the image."""
    h, w = mask.shape
    inside = mask[max(0, -top) : min(h, size - top), max(0, -left) : min(w, size - left)]
    return float(inside.sum() / max(float(mask.sum()), 1e-6))
