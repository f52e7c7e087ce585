"""Stain physics: Beer–Lambert optical density turned into RGB, plus the camera's blur and noise.

Concentrations are in optical-density units along a stain vector: a pixel with concentrations c_s
transmits I = I0 · exp(−Σ_s c_s · v_s) per RGB channel, where v_s is the stain's OD per unit amount.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

FloatArray = np.ndarray


def od_from_rgb(rgb: tuple[float, float, float]) -> FloatArray:
    """OD vector (3,) of a stain that shows colour `rgb` (0–255) at unit amount on white light."""
    return -np.log(np.clip(np.asarray(rgb, dtype=np.float64), 1.0, 255.0) / 255.0)


def unit(vector: tuple[float, float, float]) -> FloatArray:
    """The vector scaled to unit Euclidean length."""
    v = np.asarray(vector, dtype=np.float64)
    return v / np.linalg.norm(v)


def jitter_stains(
    rng: np.random.Generator,
    vectors: FloatArray,
    hue: float,
    strength: tuple[float, float],
) -> FloatArray:
    """Per-image stain variation: ±`hue` relative per-channel noise and a strength factor per OD vector."""
    hue_noise = 1.0 + rng.uniform(-hue, hue, size=vectors.shape)
    scale = rng.uniform(strength[0], strength[1], size=(vectors.shape[0], 1))
    return vectors * hue_noise * scale


def random_light(rng: np.random.Generator) -> FloatArray:
    """Background illumination I0 (3,), slightly off-white like a real brightfield lamp."""
    return rng.uniform(236.0, 252.0, size=3)


def transmit(amounts: FloatArray, vectors: FloatArray, light: FloatArray) -> FloatArray:
    """Beer–Lambert: (S, H, W) stain amounts and (S, 3) OD vectors -> (3, H, W) float32 intensities 0–255."""
    vectors32 = vectors.astype(np.float32)
    out = np.empty((3, *amounts.shape[1:]), dtype=np.float32)
    for channel in range(3):
        od = out[channel]
        np.multiply(amounts[0], -vectors32[0, channel], out=od)
        for stain in range(1, amounts.shape[0]):
            od -= amounts[stain] * vectors32[stain, channel]
        np.exp(od, out=od)
        od *= np.float32(light[channel])
    return out


def triangular_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> FloatArray:
    """Zero-mean float32 noise of standard deviation `sigma`: the difference of two random bytes (fast)."""
    size = int(np.prod(shape))
    raw = np.frombuffer(rng.bytes(2 * size), dtype=np.uint8).reshape(2, *shape)
    difference: FloatArray = raw[0].astype(np.float32) - raw[1]
    difference *= np.float32(sigma / np.sqrt(2 * (256**2 - 1) / 12))
    return difference


def camera(rgb: FloatArray, rng: np.random.Generator, blur_sigma: float, noise_sigma: float) -> np.ndarray:
    """(3, H, W) intensities -> (H, W, 3) uint8 after optical blur (px), noise (levels) and rounding."""
    if blur_sigma > 0:
        rgb = ndimage.gaussian_filter(rgb, sigma=(0, blur_sigma, blur_sigma))
    out = np.empty((*rgb.shape[1:], 3), dtype=np.uint8)
    for channel in range(3):
        level = rgb[channel] + triangular_noise(rng, rgb.shape[1:], noise_sigma)
        level += np.float32(0.5)  # so that the truncating cast below rounds
        np.clip(level, 0, 255, out=level)
        out[..., channel] = level
    return out


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode in memory, leaving the 8×8 block artefacts that scanned slides carry."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality, subsampling=0)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.uint8).copy()
