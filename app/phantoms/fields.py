"""Smooth random fields: textures made at low resolution and interpolated exactly across tiles."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

FloatArray = np.ndarray


def smooth_noise(
    rng: np.random.Generator, shape: tuple[int, int], sigma: float | tuple[float, float]
) -> FloatArray:
    """Gaussian-filtered white noise, correlation length `sigma` (cells), zero mean, unit std, float32."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma=sigma, mode="wrap")
    std = float(field.std())
    normalised: FloatArray = (field - field.mean()) / (std if std > 0 else 1.0)
    return normalised


def smoothstep(x: FloatArray, low: float, high: float) -> FloatArray:
    """0 below `low`, 1 above `high`, cubic Hermite in between."""
    t = np.clip((x - low) / (high - low), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _axis_weights(start: int, count: int, factor: int, low_size: int) -> tuple[np.ndarray, FloatArray]:
    """Lower low-resolution index and weight of the upper neighbour for pixels start…start+count−1.

    Pixel i samples low-resolution coordinate (i + 0.5) / factor − 0.5, clamped at the borders, so
    neighbouring tiles compute identical values on their shared boundary and no seams appear.
    """
    coords = np.clip((np.arange(start, start + count) + 0.5) / factor - 0.5, 0.0, low_size - 1.0)
    lower = np.clip(np.floor(coords).astype(np.int64), 0, max(low_size - 2, 0))
    upper = np.minimum(lower + 1, low_size - 1)
    frac = (coords - lower).astype(np.float32)
    return np.stack([lower, upper]), frac


def upsample_window(
    field: FloatArray, factor: int, top: int, left: int, height: int, width: int
) -> FloatArray:
    """Bilinear upsampling of a low-resolution `field` (…, h, w) by `factor`, on one full-resolution window.

    Separable: interpolate rows first (…, height, w), then columns (…, height, width), float32.
    """
    (row_lo, row_hi), row_frac = _axis_weights(top, height, factor, field.shape[-2])
    (col_lo, col_hi), col_frac = _axis_weights(left, width, factor, field.shape[-1])
    first, last = int(col_lo[0]), int(col_hi[-1]) + 1
    col_lo, col_hi = col_lo - first, col_hi - first
    low = field[..., first:last].astype(np.float32, copy=False)
    rows = np.take(low, row_lo, axis=-2) * (1 - row_frac)[:, None]
    rows += np.take(low, row_hi, axis=-2) * row_frac[:, None]
    result: FloatArray = np.take(rows, col_lo, axis=-1) * (1 - col_frac)
    result += np.take(rows, col_hi, axis=-1) * col_frac
    return result


def sample_points(field: FloatArray, factor: int, ys: FloatArray, xs: FloatArray) -> FloatArray:
    """Bilinear value of the upsampled `field` at full-resolution pixel centres (ys, xs)."""
    coords = np.stack([(np.asarray(ys) + 0.5) / factor - 0.5, (np.asarray(xs) + 0.5) / factor - 0.5])
    result: FloatArray = ndimage.map_coordinates(field, coords, order=1, mode="nearest")
    return result
