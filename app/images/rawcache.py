"""Raw level-0 pixels of stored image files, kept beside them so reads need no decoding.

The cache of the stored file ``<sha256>.<ext>`` is the object ``raw/<sha256[:2]>/<sha256>.npy`` of the store
(``app.storage``: ``<data_dir>/raw/...``, or a bucket with a local copy under ``<data_dir>/cache/raw/...``): its
level 0 as an uncompressed (height, width, 3) RGB uint8 ``.npy`` array, exactly the pixels
``ImageSource`` reads from the file. It is written once, band by band through the file's lazy reader
(a TIFF is never held in memory whole), into a temporary file that is renamed into place, and only
for files of at most ``Settings.raw_cache_max_pixels`` pixels (3 bytes each); larger files keep being
read lazily from the file. Readers memory-map it (``ImageSource(path, raw_path)``).
"""

import os
import tempfile
from pathlib import Path

import numpy as np

from app.config import Settings
from app.images import storage
from app.images.tiles import MAX_REGION_PIXELS, ImageSource
from app.images.validation import EXTENSIONS
from app.models import Image
from app.storage import store_of

RAW_BAND_ROWS = 1024
STORED_EXTENSIONS: dict[str, str] = {fmt: extension.lstrip(".") for fmt, extension in EXTENSIONS.items()}


def raw_key(sha256: str) -> str:
    return f"raw/{sha256[:2]}/{sha256}.npy"


def raw_path(settings: Settings, sha256: str) -> Path:
    """Where this machine keeps the raw cache of the file with this SHA-256 (whether or not it exists)."""
    return store_of(settings).local_path(raw_key(sha256))


def existing_raw_cache(settings: Settings, sha256: str) -> Path | None:
    """The raw cache as a local file (copied from a bucket on first use), or None when there is none."""
    path = raw_path(settings, sha256)
    if path.is_file():
        return path
    try:
        return store_of(settings).local_file(raw_key(sha256))
    except FileNotFoundError:
        return None


def fits_raw_cache(settings: Settings, width: int, height: int) -> bool:
    """Whether a file of width x height level-0 pixels gets a raw cache (one band must be readable)."""
    return width * height <= settings.raw_cache_max_pixels and width <= MAX_REGION_PIXELS


def write_raw_cache(settings: Settings, sha256: str, stored: Path, width: int, height: int) -> Path | None:
    """Write the cache of a stored file unless it is too large or already there.

    Returns the cache's path when this call created it (the caller removes it if its upload fails),
    else None.
    """
    store = store_of(settings)
    target = raw_path(settings, sha256)
    if not fits_raw_cache(settings, width, height) or store.exists(raw_key(sha256)):
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{sha256}-", suffix=".npy.partial")
    os.close(handle)
    partial = Path(name)
    try:
        _write_bands(stored, partial, width, height)
        os.replace(partial, target)
        store.put_file(raw_key(sha256), target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return target


def _write_bands(stored: Path, out_path: Path, width: int, height: int) -> None:
    rows = _band_rows(width)
    out = np.lib.format.open_memmap(out_path, mode="w+", dtype=np.uint8, shape=(height, width, 3))
    try:
        with ImageSource(stored) as source:
            if (source.width, source.height) != (width, height):
                raise ValueError(f"{stored.name} is {source.width}x{source.height}, not {width}x{height}")
            for top in range(0, height, rows):
                band_height = min(rows, height - top)
                out[top : top + band_height] = source.read_region(0, 0, top, width, band_height)
        out.flush()
    finally:
        del out


def _band_rows(width: int) -> int:
    return max(1, min(RAW_BAND_ROWS, MAX_REGION_PIXELS // width))


def ensure_raw_cache(settings: Settings, image: Image) -> Path | None:
    """The image file's raw cache, built now if it is missing; None when the file gets none.

    For files stored before the cache existed. Blocking (it may decode a whole file): call it from a
    worker thread, never from a request that serves tiles.
    """
    extension = STORED_EXTENSIONS.get(image.file_format)
    if extension is None:
        return None
    existing = existing_raw_cache(settings, image.sha256)
    if existing is not None:
        return existing
    if not fits_raw_cache(settings, image.file_width, image.file_height):
        return None
    try:
        stored = store_of(settings).local_file(storage.image_key(image.sha256, extension))
    except FileNotFoundError:
        return None
    write_raw_cache(settings, image.sha256, stored, image.file_width, image.file_height)
    return existing_raw_cache(settings, image.sha256)
