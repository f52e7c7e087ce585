"""Where Concord keeps its files: image files, pixel caches and models, behind one interface.

Objects are named by keys that mirror the data dir's layout (``images/ab/<sha256>.tif``,
``raw/ab/<sha256>.npy``, ``models/<sha256>.onnx``, ``training/models/<sha256>.onnx``). Two stores:

- ``LocalStore`` (``CONCORD_STORAGE_URL`` unset): the data dir itself, as before; an object's local
  path *is* the object.
- ``ObjectStore`` (``CONCORD_STORAGE_URL=s3://bucket/prefix``): an S3-compatible bucket through
  ``obstore``, shared by every API replica and worker. A process that needs a real file (an ONNX model,
  a raw cache to memory-map, a PNG to decode) gets a copy under ``<data_dir>/cache/<key>``, downloaded
  once; a TIFF is read by ranges (``open_ranged``), so tiles of a large slide never download it whole.

Every object is immutable once written (keys are content hashes), so a cached copy never goes stale.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Protocol
from urllib.parse import urlparse

from app.config import Settings

if TYPE_CHECKING:
    from obstore.store import S3Store

RANGE_BUFFER_BYTES = 64 * 1024
DOWNLOAD_CHUNK = 8 * 1024 * 1024


class StorageUnusable(Exception):
    """CONCORD_STORAGE_URL names a store that cannot be used (unknown scheme, no bucket)."""


class Store(Protocol):
    """The storage interface: every method is blocking (call it from a thread in async code)."""

    url: str

    def local_path(self, key: str) -> Path:
        """Where this machine keeps (or would keep) the object's file; a handle, it may not exist."""
        ...

    def key_of(self, path: Path) -> str | None:
        """The key whose local path this is, or None for a path outside the store."""
        ...

    def exists(self, key: str) -> bool: ...

    def size(self, key: str) -> int | None:
        """The object's size in bytes, or None when it does not exist."""
        ...

    def put_file(self, key: str, source: Path, *, keep_source: bool = True) -> None:
        """Store the file as the object; ``keep_source=False`` lets the store take the file itself."""
        ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def read_bytes(self, key: str) -> bytes:
        """The whole object; FileNotFoundError when it does not exist."""
        ...

    def local_file(self, key: str) -> Path:
        """A local file holding the object (downloaded once for a remote store); FileNotFoundError."""
        ...

    def open_ranged(self, key: str) -> BinaryIO:
        """A seekable reader that fetches only the bytes read; FileNotFoundError."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object (and any local copy); a missing object is no error."""
        ...


def _write_atomically(target: Path, fill: object) -> None:
    """Write into a temporary file beside the target, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}-", suffix=".partial")
    temporary = Path(name)
    try:
        with os.fdopen(handle, "wb") as out:
            fill(out)  # type: ignore[operator]
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


class LocalStore:
    """The data dir as the store: ``<root>/<key>`` is the object."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = root.resolve().as_uri()

    def local_path(self, key: str) -> Path:
        return self.root / key

    def key_of(self, path: Path) -> str | None:
        return _relative_key(self.root, path)

    def exists(self, key: str) -> bool:
        return self.local_path(key).is_file()

    def size(self, key: str) -> int | None:
        path = self.local_path(key)
        return path.stat().st_size if path.is_file() else None

    def put_file(self, key: str, source: Path, *, keep_source: bool = True) -> None:
        target = self.local_path(key)
        if source.resolve() == target.resolve():
            return
        if keep_source:
            with source.open("rb") as data:
                _write_atomically(target, lambda out: shutil.copyfileobj(data, out, DOWNLOAD_CHUNK))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(source, target)

    def put_bytes(self, key: str, data: bytes) -> None:
        _write_atomically(self.local_path(key), lambda out: out.write(data))

    def read_bytes(self, key: str) -> bytes:
        return self.local_path(key).read_bytes()

    def local_file(self, key: str) -> Path:
        path = self.local_path(key)
        if not path.is_file():
            raise FileNotFoundError(f"{key} is not in the store {self.url}")
        return path

    def open_ranged(self, key: str) -> BinaryIO:
        return self.local_file(key).open("rb")

    def delete(self, key: str) -> None:
        self.local_path(key).unlink(missing_ok=True)


class ObjectStore:
    """An S3-compatible bucket (``s3://bucket/prefix``) with a local cache of downloaded copies.

    Endpoint, region and credentials come from the usual AWS variables (``AWS_ENDPOINT_URL``,
    ``AWS_REGION``, ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ...) unless the settings name them.
    """

    def __init__(
        self, url: str, cache_dir: Path, *, endpoint: str = "", region: str = "", cache_bytes: int = 0
    ) -> None:
        from obstore.store import S3Store

        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise StorageUnusable(f"CONCORD_STORAGE_URL must look like s3://bucket/prefix, not {url!r}")
        self.url = url
        self.cache_dir = cache_dir
        self.cache_bytes = cache_bytes  # 0: unbounded
        endpoint = (
            endpoint or os.environ.get("AWS_ENDPOINT_URL_S3", "") or os.environ.get("AWS_ENDPOINT_URL", "")
        )
        config: dict[str, str] = {}
        if endpoint:
            config["endpoint"] = endpoint
        if region:
            config["region"] = region
        prefix = parsed.path.strip("/")
        self.bucket: S3Store = S3Store(
            parsed.netloc,
            prefix=prefix or None,
            config=config,  # type: ignore[arg-type]
            client_options={"allow_http": endpoint.startswith("http://")},
        )
        self._download_lock = threading.Lock()
        self._download_locks: dict[str, threading.Lock] = {}
        self._count_lock = threading.Lock()
        self.fetched_bytes = 0  # read from the bucket by this process: ranges and downloads

    def count_fetched(self, size: int) -> None:
        with self._count_lock:
            self.fetched_bytes += size

    def local_path(self, key: str) -> Path:
        return self.cache_dir / key

    def key_of(self, path: Path) -> str | None:
        return _relative_key(self.cache_dir, path)

    def exists(self, key: str) -> bool:
        return self.size(key) is not None

    def size(self, key: str) -> int | None:
        import obstore

        try:
            return int(obstore.head(self.bucket, key)["size"])
        except FileNotFoundError:
            return None

    def put_file(self, key: str, source: Path, *, keep_source: bool = True) -> None:
        import obstore

        obstore.put(self.bucket, key, source)
        if not keep_source:
            cached = self.local_path(key)
            if source.resolve() != cached.resolve():
                cached.parent.mkdir(parents=True, exist_ok=True)
                shutil.move(source, cached)
            self.trim_cache(keep=cached)

    def put_bytes(self, key: str, data: bytes) -> None:
        import obstore

        obstore.put(self.bucket, key, data)

    def read_bytes(self, key: str) -> bytes:
        import obstore

        return obstore.get(self.bucket, key).bytes().to_bytes()

    def local_file(self, key: str) -> Path:
        cached = self.local_path(key)
        if cached.is_file():
            cached.touch()  # recently used: trimmed last
            return cached
        with self._download_lock_of(key):
            if not cached.is_file():
                self._download(key, cached)
                self.trim_cache(keep=cached)
        return cached

    def trim_cache(self, keep: Path) -> None:
        """Delete the least recently used copies until the cache fits ``cache_bytes`` (``keep`` stays).

        A copy in use survives its deletion where it matters: memory maps and open files keep their
        data, and a reader that reopens a deleted copy downloads it again."""
        if self.cache_bytes <= 0:
            return
        copies = []
        for path in self.cache_dir.rglob("*"):
            with contextlib.suppress(FileNotFoundError):
                if path.is_file() and path != keep and not path.name.endswith(".partial"):
                    status = path.stat()
                    copies.append((status.st_mtime, status.st_size, path))
        total = sum(size for _, size, _ in copies) + (keep.stat().st_size if keep.is_file() else 0)
        for _, size, path in sorted(copies):
            if total <= self.cache_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size

    def _download_lock_of(self, key: str) -> threading.Lock:
        """One lock per key: two threads never download the same object, different objects in parallel."""
        with self._download_lock:
            return self._download_locks.setdefault(key, threading.Lock())

    def _download(self, key: str, target: Path) -> None:
        import obstore

        result = obstore.get(self.bucket, key)

        def fill(out: BinaryIO) -> None:
            for chunk in result.stream(min_chunk_size=DOWNLOAD_CHUNK):
                out.write(chunk)
                self.count_fetched(len(chunk))

        _write_atomically(target, fill)

    def open_ranged(self, key: str) -> BinaryIO:
        size = self.size(key)
        if size is None:
            raise FileNotFoundError(f"{key} is not in the store {self.url}")
        reader = _RangeReader(self, key, size)
        return io.BufferedReader(reader, buffer_size=RANGE_BUFFER_BYTES)

    def delete(self, key: str) -> None:
        import obstore

        with contextlib.suppress(FileNotFoundError):
            obstore.delete(self.bucket, key)
        self.local_path(key).unlink(missing_ok=True)


class _RangeReader(io.RawIOBase):
    """A seekable raw reader over one object: each read is one ranged GET of the bytes asked for."""

    def __init__(self, owner: ObjectStore, key: str, size: int) -> None:
        self._owner, self._key, self._size = owner, key, size
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        import obstore

        end = min(self._size, self._position + len(buffer))
        if end <= self._position:
            return 0
        data = obstore.get_range(self._owner.bucket, self._key, start=self._position, end=end)
        count = len(data)
        memoryview(buffer).cast("B")[:count] = memoryview(data)
        self._position += count
        self._owner.count_fetched(count)
        return count


def _relative_key(root: Path, path: Path) -> str | None:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return None


_stores: dict[tuple[str, ...], Store] = {}
_stores_lock = threading.Lock()


def store_of(settings: Settings) -> Store:
    """The settings' store, one per (URL, data dir) in this process."""
    identity = (
        settings.storage_url,
        str(settings.data_dir),
        settings.storage_endpoint,
        settings.storage_region,
    )
    with _stores_lock:
        if identity not in _stores:
            _stores[identity] = _make_store(settings)
        return _stores[identity]


def _make_store(settings: Settings) -> Store:
    if not settings.storage_url:
        return LocalStore(settings.data_dir)
    return ObjectStore(
        settings.storage_url,
        settings.data_dir / "cache",
        endpoint=settings.storage_endpoint,
        region=settings.storage_region,
        cache_bytes=settings.storage_cache_bytes,
    )


def readable(path: Path) -> Path | BinaryIO:
    """The file at ``path`` if it is here, else ranged reads of the object some store keeps there.

    Image readers get paths from ``Store.local_path``; on a machine without a local copy of a remote
    object, this is how they read it without downloading it (FileNotFoundError when no store has it).
    """
    if path.is_file():
        return path
    with _stores_lock:
        stores = list(_stores.values())
    for store in stores:
        key = store.key_of(path)
        if key is not None and isinstance(store, ObjectStore):
            return store.open_ranged(key)
    raise FileNotFoundError(path)


def local_copy(path: Path) -> Path:
    """The file at ``path``, downloaded first when it is a remote object not yet copied here.

    For readers that need a real file (Pillow decoding a whole PNG, OpenSlide, memory maps).
    """
    if path.is_file():
        return path
    with _stores_lock:
        stores = list(_stores.values())
    for store in stores:
        key = store.key_of(path)
        if key is not None and isinstance(store, ObjectStore):
            return store.local_file(key)
    raise FileNotFoundError(path)
