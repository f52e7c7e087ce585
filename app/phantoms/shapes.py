"""Cell-scale geometry: irregular outlines, granules, chromatin texture and stamping into a canvas.

Everything is drawn on a small local grid centred on the object (pixels, y down, x right) and then
added into the image's stain-amount canvas.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

FloatArray = np.ndarray


@dataclass(frozen=True)
class Outline:
    """Closed outline r(θ) = radius · (1 + Σ_k a_k cos(kθ − φ_k)), stretched to `aspect` along `angle`.

    Units: radius and centre offsets in pixels, angles in radians. The stretch keeps the area.
    """

    radius: float
    aspect: float
    angle: float
    harmonics: tuple[int, ...]
    amplitudes: tuple[float, ...]
    phases: tuple[float, ...]
    dy: float = 0.0
    dx: float = 0.0


def random_outline(
    rng: np.random.Generator,
    radius: float,
    aspect: float = 1.0,
    wobble: float = 0.06,
    spikes: float = 0.0,
    offset: tuple[float, float] = (0.0, 0.0),
) -> Outline:
    """An outline with low-frequency `wobble` (harmonics 2–5) and high-frequency `spikes` (harmonics 9–16)."""
    low = (2, 3, 4, 5)
    high = (9, 11, 13, 16) if spikes > 0 else ()
    harmonics = low + high
    amplitudes = [wobble * rng.normal(0.0, 1.0) / k**0.5 for k in low]
    amplitudes += [spikes * abs(rng.normal(0.6, 0.4)) for _ in high]
    phases = rng.uniform(0.0, 2 * np.pi, size=len(harmonics))
    return Outline(
        radius=radius,
        aspect=aspect,
        angle=float(rng.uniform(0.0, np.pi)),
        harmonics=harmonics,
        amplitudes=tuple(float(a) for a in amplitudes),
        phases=tuple(float(p) for p in phases),
        dy=offset[0],
        dx=offset[1],
    )


def local_grid(half: int) -> tuple[FloatArray, FloatArray]:
    """Pixel-centre coordinates (2·half+1)² around the centre pixel, as float32 (yy, xx)."""
    axis = np.arange(-half, half + 1, dtype=np.float32)
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    return yy, xx


def fill(outline: Outline, yy: FloatArray, xx: FloatArray, edge: float = 1.0) -> FloatArray:
    """Soft inside-mask in [0, 1] with a linear anti-aliasing ramp `edge` px wide."""
    cos_a, sin_a = np.cos(outline.angle), np.sin(outline.angle)
    y, x = yy - outline.dy, xx - outline.dx
    u = (x * cos_a + y * sin_a) / np.sqrt(outline.aspect)
    v = (-x * sin_a + y * cos_a) * np.sqrt(outline.aspect)
    rho = np.hypot(u, v)
    theta = np.arctan2(v, u)
    factor = np.ones_like(rho)
    for k, a, phase in zip(outline.harmonics, outline.amplitudes, outline.phases, strict=True):
        factor += a * np.cos(k * theta - phase)
    inside: FloatArray = np.clip((outline.radius * factor - rho) / edge + 0.5, 0.0, 1.0)
    return inside


def segment_mask(
    yy: FloatArray,
    xx: FloatArray,
    p: tuple[float, float],
    q: tuple[float, float],
    width: float,
) -> FloatArray:
    """Soft mask of a stroke `width` px wide from point p to q, both (y, x)."""
    py, px = p
    dy, dx = q[0] - py, q[1] - px
    length_sq = max(dy * dy + dx * dx, 1e-6)
    t = np.clip(((yy - py) * dy + (xx - px) * dx) / length_sq, 0.0, 1.0)
    distance = np.hypot(yy - (py + t * dy), xx - (px + t * dx))
    return np.clip(width / 2 - distance + 0.5, 0.0, 1.0)


def texture(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> FloatArray:
    """Zero-mean, unit-std blotchy texture with grain size `sigma` px (chromatin, cytoplasm)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    std = float(field.std())
    normalised: FloatArray = field / (std if std > 0 else 1.0)
    return normalised


def granules(rng: np.random.Generator, region: FloatArray, count: int, sigma: float) -> FloatArray:
    """`count` Gaussian granules (radius ≈ 2·`sigma` px) placed inside `region`; a lone granule peaks at 1."""
    weights = region.ravel().astype(np.float64)
    total = weights.sum()
    field = np.zeros(region.size, dtype=np.float32)
    if total <= 0 or count <= 0:
        return field.reshape(region.shape)
    picks = rng.choice(region.size, size=count, p=weights / total)
    np.add.at(field, picks, 1.0)
    blurred = ndimage.gaussian_filter(field.reshape(region.shape), sigma) * np.float32(
        2 * np.pi * sigma * sigma
    )
    capped: FloatArray = np.minimum(blurred, 1.6) * region
    return capped


def stamp(canvas: FloatArray, patch: FloatArray, top: int, left: int) -> None:
    """Add `patch` (…, h, w) into `canvas` (…, H, W) with its top-left corner at (top, left), clipped."""
    height, width = canvas.shape[-2:]
    ph, pw = patch.shape[-2:]
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + ph, height), min(left + pw, width)
    if y0 >= y1 or x0 >= x1:
        return
    canvas[..., y0:y1, x0:x1] += patch[..., y0 - top : y1 - top, x0 - left : x1 - left]


def mask_box(
    mask: FloatArray, top: int, left: int, height: int, width: int
) -> tuple[int, int, int, int] | None:
    """Tight half-open box (x1, y1, x2, y2) of mask > 0.5 placed at (top, left), clipped to the image."""
    rows = np.flatnonzero((mask > 0.5).any(axis=1))
    cols = np.flatnonzero((mask > 0.5).any(axis=0))
    if rows.size == 0:
        return None
    y1, y2 = max(top + int(rows[0]), 0), min(top + int(rows[-1]) + 1, height)
    x1, x2 = max(left + int(cols[0]), 0), min(left + int(cols[-1]) + 1, width)
    if x2 <= x1 or y2 <= y1:
        return None
    return x1, y1, x2, y2
