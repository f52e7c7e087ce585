"""Seeded microscopy-like phantom images with exact ground truth, and a pyramidal TIFF writer."""

from app.phantoms.classify import classify_patch
from app.phantoms.detect import detect_region
from app.phantoms.grade import grade_patch
from app.phantoms.model import (
    CLASSIFY_LABELS,
    DETECT_LABELS,
    GRADE_LABELS,
    LOOKALIKE_LABEL,
    Phantom,
    PhantomObject,
)
from app.phantoms.tiff import write_pyramidal_tiff

__all__ = [
    "CLASSIFY_LABELS",
    "DETECT_LABELS",
    "GRADE_LABELS",
    "LOOKALIKE_LABEL",
    "Phantom",
    "PhantomObject",
    "classify_patch",
    "detect_region",
    "grade_patch",
    "write_pyramidal_tiff",
]
