"""Image files stored once in the store (``app.storage``: the data dir, or a bucket), named by their SHA-256.

An upload is staged in ``<data_dir>/tmp``, validated, then stored under ``images/<sha[:2]>/<sha>.<ext>``;
``stored_path`` is where this machine finds (or, for a bucket, would keep a copy of) that file.
"""

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from app.config import Settings
from app.images.validation import ImageInfo, ImageRejected, inspect_image_file
from app.storage import store_of

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class StagedFile:
    """A validated upload waiting in the temporary folder until its database rows exist."""

    temp_path: Path
    sha256: str
    info: ImageInfo


def image_key(sha256: str, extension: str) -> str:
    return f"images/{sha256[:2]}/{sha256}.{extension.lstrip('.')}"


def stored_path(settings: Settings, sha256: str, extension: str) -> Path:
    """The image file's local path: the stored file itself, or where a bucket's object is copied to.

    Readers open it through ``app.storage.readable`` / ``local_copy`` where it may not be here yet."""
    return store_of(settings).local_path(image_key(sha256, extension))


def local_path(settings: Settings, sha256: str, extension: str) -> Path:
    """A stored file as a path on this machine, for readers that open files by name (OpenSlide).

    With the local data dir this is the stored file itself."""
    return stored_path(settings, sha256, extension)


def staging_dir(settings: Settings) -> Path:
    path = settings.data_dir / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path


def stage_stream(settings: Settings, stream: BinaryIO) -> StagedFile:
    """Copy an upload to a temporary file, hashing it and stopping at the size limit, then validate."""
    handle, name = tempfile.mkstemp(dir=staging_dir(settings), suffix=".upload")
    temp_path = Path(name)
    try:
        sha256 = _copy_hashed(stream, handle, settings.max_upload_bytes)
        info = inspect_image_file(
            temp_path,
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_patch_pixels,
            max_tiff_pixels=settings.max_tiff_pixels,
        )
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    return StagedFile(temp_path=temp_path, sha256=sha256, info=info)


def stage_path(settings: Settings, source: Path) -> StagedFile:
    with source.open("rb") as stream:
        return stage_stream(settings, stream)


def _copy_hashed(stream: BinaryIO, handle: int, max_bytes: int) -> str:
    digest = hashlib.sha256()
    written = 0
    with os.fdopen(handle, "wb") as out:
        while chunk := stream.read(CHUNK):
            written += len(chunk)
            if written > max_bytes:
                raise ImageRejected(f"upload is larger than {max_bytes} bytes", 413)
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def commit_staged(settings: Settings, staged: StagedFile) -> tuple[Path, bool]:
    """Store a staged file; returns its local path and whether this call created it.

    With a bucket the staged file is uploaded and kept as this machine's copy (its raw cache is built
    from it next)."""
    store = store_of(settings)
    key = image_key(staged.sha256, staged.info.extension)
    target = store.local_path(key)
    if store.exists(key):
        staged.temp_path.unlink(missing_ok=True)
        return target, False
    store.put_file(key, staged.temp_path, keep_source=False)
    return target, True


def remove_stored(settings: Settings, path: Path) -> None:
    """Undo a store write named by its local path (an upload that failed after storing its files)."""
    store = store_of(settings)
    key = store.key_of(path)
    if key is None:
        path.unlink(missing_ok=True)
    else:
        store.delete(key)


def discard(staged: list[StagedFile]) -> None:
    for item in staged:
        item.temp_path.unlink(missing_ok=True)
