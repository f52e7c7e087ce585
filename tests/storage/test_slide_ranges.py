"""Tiles of a large TIFF in a bucket are read by ranges: the same pixels as from a local file, a small
part of the file fetched, no copy of it made."""

from pathlib import Path

import numpy as np

from app.config import Settings
from app.images import storage as image_storage
from app.images.tiles import TileCache
from app.phantoms import write_pyramidal_tiff
from app.storage import ObjectStore, store_of

SIDE = 4096


def gradient_slide(path: Path) -> Path:
    rows, cols = np.mgrid[0:SIDE, 0:SIDE]
    noise = np.random.default_rng(7).integers(0, 40, size=(SIDE, SIDE), dtype=np.uint8)
    image = np.stack([(rows // 17) % 256, (cols // 13) % 256, noise + 100], axis=2).astype(np.uint8)
    write_pyramidal_tiff(path, image)
    return path


def test_a_tile_of_a_bucket_slide_fetches_a_small_part_of_it(bucket: str, tmp_path: Path) -> None:
    slide = gradient_slide(tmp_path / "slide.tif")
    sha256 = "ab" + "0" * 62
    url = f"s3://{bucket}/concord"
    uploader = ObjectStore(url, tmp_path / "uploader-cache")
    uploader.put_file(image_storage.image_key(sha256, "tif"), slide)

    settings = Settings(data_dir=tmp_path / "api", storage_url=url)
    remote = image_storage.stored_path(settings, sha256, "tif")
    with TileCache() as local_tiles, TileCache() as remote_tiles:
        for level, col, row in [(0, 5, 7), (2, 1, 1), (4, 0, 0)]:
            expected = local_tiles.tile(slide, level, col, row, 256, "png")
            assert remote_tiles.tile(remote, level, col, row, 256, "png") == expected
        assert remote_tiles.source(remote).levels == local_tiles.source(slide).levels

    reader = store_of(settings)
    assert isinstance(reader, ObjectStore)
    assert not remote.exists(), "the slide was downloaded"
    size = slide.stat().st_size
    assert 0 < reader.fetched_bytes < size / 4, (reader.fetched_bytes, size)
