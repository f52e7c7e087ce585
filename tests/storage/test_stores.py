"""Both stores keep the same promises: what is put is read back whole, by ranges and as a local file."""

import os
from pathlib import Path

import pytest

from app.config import Settings
from app.storage import LocalStore, ObjectStore, StorageUnusable, Store, local_copy, readable, store_of
from tests.storage.conftest import bucket_keys

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        return LocalStore(tmp_path / "data")
    bucket = request.getfixturevalue("bucket")
    return ObjectStore(f"s3://{bucket}/concord", tmp_path / "cache")


def test_what_is_put_is_read_back(store: Store, tmp_path: Path) -> None:
    store.put_bytes("models/a.onnx", PAYLOAD)
    source = tmp_path / "upload.bin"
    source.write_bytes(PAYLOAD[::-1])
    store.put_file("images/ab/b.tif", source)
    assert store.read_bytes("models/a.onnx") == PAYLOAD
    assert store.local_file("images/ab/b.tif").read_bytes() == PAYLOAD[::-1]
    assert source.is_file(), "put_file keeps its source unless told otherwise"
    assert store.size("models/a.onnx") == len(PAYLOAD)
    assert store.exists("images/ab/b.tif")
    assert not store.exists("images/ab/c.tif")
    assert store.size("images/ab/c.tif") is None


def test_ranged_reads_return_the_bytes_asked_for(store: Store) -> None:
    store.put_bytes("raw/x.npy", PAYLOAD)
    with store.open_ranged("raw/x.npy") as reader:
        reader.seek(300_000)
        assert reader.read(1000) == PAYLOAD[300_000:301_000]
        reader.seek(-10, 2)
        assert reader.read() == PAYLOAD[-10:]
        assert reader.read(5) == b""


def test_missing_objects_raise_file_not_found(store: Store) -> None:
    with pytest.raises(FileNotFoundError):
        store.read_bytes("models/none.onnx")
    with pytest.raises(FileNotFoundError):
        store.local_file("models/none.onnx")
    with pytest.raises(FileNotFoundError):
        store.open_ranged("models/none.onnx")
    store.delete("models/none.onnx")  # no error


def test_delete_removes_the_object_and_the_local_copy(store: Store) -> None:
    store.put_bytes("models/a.onnx", PAYLOAD)
    copy = store.local_file("models/a.onnx")
    store.delete("models/a.onnx")
    assert not store.exists("models/a.onnx")
    assert not copy.exists()


def test_put_file_may_take_the_source_as_the_local_copy(store: Store, tmp_path: Path) -> None:
    source = tmp_path / "staged.upload"
    source.write_bytes(PAYLOAD)
    store.put_file("images/cd/c.png", source, keep_source=False)
    assert not source.exists()
    assert store.local_path("images/cd/c.png").read_bytes() == PAYLOAD
    assert store.key_of(store.local_path("images/cd/c.png")) == "images/cd/c.png"
    assert store.key_of(tmp_path / "elsewhere") is None


def test_a_bucket_object_is_copied_here_once_and_read_by_ranges_without_a_copy(
    bucket: str, s3_env: dict[str, str], tmp_path: Path
) -> None:
    writer = ObjectStore(f"s3://{bucket}/p", tmp_path / "writer-cache")
    writer.put_bytes("images/ab/s.tif", PAYLOAD)
    assert bucket_keys(s3_env, bucket) == ["p/images/ab/s.tif"]
    settings = Settings(data_dir=tmp_path / "reader", storage_url=f"s3://{bucket}/p")
    reader = store_of(settings)
    assert isinstance(reader, ObjectStore)
    path = reader.local_path("images/ab/s.tif")
    stream = readable(path)
    assert not isinstance(stream, Path)
    with stream:
        stream.seek(500_000)
        assert stream.read(100) == PAYLOAD[500_000:500_100]
    assert not path.exists(), "a ranged read makes no local copy"
    assert reader.fetched_bytes < len(PAYLOAD)
    assert local_copy(path) == path
    assert path.read_bytes() == PAYLOAD
    assert readable(path) == path


def test_the_default_store_is_the_data_dir(tmp_path: Path) -> None:
    store = store_of(Settings(data_dir=tmp_path))
    assert isinstance(store, LocalStore)
    assert store.local_path("images/ab/x.png") == tmp_path / "images" / "ab" / "x.png"


def test_a_storage_url_that_is_not_s3_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StorageUnusable):
        ObjectStore("gs://bucket/prefix", tmp_path)
    with pytest.raises(StorageUnusable):
        ObjectStore("s3:///no-bucket", tmp_path)


def test_the_cache_of_copies_keeps_the_most_recently_used_within_its_bound(
    bucket: str, tmp_path: Path
) -> None:
    store = ObjectStore(f"s3://{bucket}/p", tmp_path / "cache", cache_bytes=int(2.5 * len(PAYLOAD)))
    for name in ("a", "b", "c"):
        store.put_bytes(f"models/{name}.onnx", PAYLOAD)
    first = store.local_file("models/a.onnx")
    store.local_file("models/b.onnx")
    os.utime(first, (1, 1))  # long unused
    store.local_file("models/c.onnx")
    assert not first.exists()
    assert store.local_path("models/b.onnx").is_file()
    assert store.local_path("models/c.onnx").is_file()
    assert store.local_file("models/a.onnx").read_bytes() == PAYLOAD, "a trimmed copy is downloaded again"
    assert not store.local_path("models/b.onnx").exists()
