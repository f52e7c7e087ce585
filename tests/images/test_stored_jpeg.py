"""A slide's own JPEG tiles served as they are: the bytes a browser gets decode to the pixels OpenSlide reads."""

from __future__ import annotations

import contextlib
import io
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import imagecodecs
import numpy as np
import pytest
import tifffile
from PIL import Image

from app.images import service, stored_jpeg
from app.images.stored_jpeg import (
    APP14,
    StoredTile,
    WouldBlock,
    complete_jpeg,
    jpeg_markers,
    with_frame_lines,
)
from app.images.tiles import ImageSource, Pixels, TileCache, encode, served_jpeg
from tests.images.jpegfiles import (
    numbered_components,
    rgb_jpeg,
    smooth_pixels,
    split_tables,
    without_segment,
    write_jpeg_svs,
)
from tests.images.slidefiles import TILE


def _jpeg_pixels(data: bytes) -> Pixels:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.parametrize("outcolorspace", ["ycbcr", "rgb"])
def test_stored_tiles_decode_to_the_pixels_openslide_reads(tmp_path: Path, outcolorspace: str) -> None:
    path = write_jpeg_svs(tmp_path / "slide.svs", smooth_pixels(), outcolorspace)
    with tifffile.TiffFile(path) as tiff:
        assert tiff.pages.first.photometric == (2 if outcolorspace == "rgb" else 6)
    with ImageSource(path) as source, TileCache() as cache:
        for level, col, row in [(0, 0, 0), (0, 2, 1), (0, 3, 2), (1, 0, 0)]:
            width = min(TILE, source.levels[level][0] - col * TILE)
            height = min(TILE, source.levels[level][1] - row * TILE)
            expected = source.read_region(level, col * TILE, row * TILE, width, height).astype(int)
            stored = source.stored_jpeg_tile(level, col, row, TILE)
            served = cache.tile(path, level, col, row, TILE)
            assert stored is not None
            assert (stored.width, stored.height) == (width, height)
            if stored.whole:
                assert served == stored.jpeg  # the file's bytes, not an encode
                assert np.abs(_jpeg_pixels(served).astype(int) - expected).max() <= 2
            else:  # cut by the extent: stored whole, padded; cropped and encoded
                cropped = _jpeg_pixels(stored.jpeg)[:height, :width]
                assert np.abs(cropped.astype(int) - expected).max() <= 2
                assert served == encode(np.ascontiguousarray(cropped), "jpeg")


def test_other_sizes_and_synthetic_levels_are_not_stored_tiles(tmp_path: Path) -> None:
    path = write_jpeg_svs(tmp_path / "slide.svs", smooth_pixels(), "ycbcr")
    with ImageSource(path) as source:
        assert source.stored_jpeg_tile(0, 0, 0, 512) is None
        assert source.stored_jpeg_tile(0, 9, 0, TILE) is None
        assert source.stored_jpeg_tile(source.native_level_count, 0, 0, TILE) is None


def test_a_missed_tile_is_read_without_blocking_only_from_an_open_file(tmp_path: Path) -> None:
    path = write_jpeg_svs(tmp_path / "slide.svs", smooth_pixels(), "ycbcr")
    with TileCache() as cache:
        assert cache.stored_tile_nowait(path, 0, 0, 0) is None  # not open yet: opening may block
        cache.view(path)
        for col, row in [(1, 1), (3, 2)]:  # whole, and cut by the extent (cropped here)
            fresh = cache.stored_tile_nowait(path, 0, col, row)  # the page cache holds the file just written
            if fresh is not None:
                assert cache.cached_tile(path, 0, col, row) == fresh
                assert fresh == cache.tile(path, 0, col, row)
        assert cache.stored_tile_nowait(path, 0, 1, 1, fmt="png") is None
        assert cache.stored_tile_nowait(path, 0, 1, 0, size=512) is None


def _drop_from_page_cache(path: Path) -> bool:
    """Whether the file's pages left the page cache (written back first; some file systems keep them)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
        os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        try:
            os.preadv(descriptor, [bytearray(1)], path.stat().st_size // 2, os.RWF_NOWAIT)
        except BlockingIOError:
            return True
        return False
    finally:
        os.close(descriptor)


def test_a_tile_outside_the_page_cache_is_read_ahead_then_read_without_blocking(tmp_path: Path) -> None:
    path = write_jpeg_svs(tmp_path / "slide.svs", smooth_pixels(), "ycbcr")
    with TileCache() as cache, ImageSource(path) as source:
        cache.tile(path, 0, 0, 0)  # opens the file
        expected = source.stored_jpeg_tile(0, 1, 1, TILE)
        if not _drop_from_page_cache(path):
            pytest.skip("this file system keeps the file in the page cache")
        with pytest.raises(WouldBlock):
            cache.stored_tile_nowait(path, 0, 1, 1)
        deadline = time.monotonic() + 10
        fresh = None
        while fresh is None and time.monotonic() < deadline:
            time.sleep(0.001)
            with contextlib.suppress(WouldBlock):
                fresh = cache.stored_tile_nowait(path, 0, 1, 1)
        assert expected is not None
        assert fresh == expected.jpeg


@pytest.mark.parametrize("outcolorspace", ["ycbcr", "rgb"])
def test_nowait_reads_share_a_scratch_buffer_but_never_an_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, outcolorspace: str
) -> None:
    """Each nowait read lands in its thread's reused scratch buffer: answers kept from earlier reads, of
    larger and smaller tiles, in two threads at once, and past the scratch's size, stay the blocking
    read's bytes."""
    path = write_jpeg_svs(tmp_path / "slide.svs", smooth_pixels(), outcolorspace)
    with ImageSource(path) as source:
        tiles = [
            (level, col, row)
            for level, (width, height) in enumerate(source.levels[: source.native_level_count])
            for row in range(-(-height // TILE))
            for col in range(-(-width // TILE))
        ]
        expected = [source.stored_jpeg_tile(*tile, TILE) for tile in tiles]

        def read(index: int) -> StoredTile | None:
            while True:
                with contextlib.suppress(WouldBlock):  # the other thread holds the source a moment
                    return source.stored_jpeg_tile(*tiles[index], TILE, nowait=True)

        def read_all(order: list[int]) -> dict[int, StoredTile | None]:
            return {index: read(index) for index in order}

        if read_all([0])[0] is None:
            pytest.skip("this file system has no nowait reads")
        forward, backward = list(range(len(tiles))), list(reversed(range(len(tiles))))
        with ThreadPoolExecutor(2) as pool:
            kept = list(pool.map(read_all, [forward, backward, forward, backward]))
        monkeypatch.setattr(stored_jpeg, "MAX_SCRATCH_BYTES", 0)  # each read its own buffer
        kept.append(read_all(forward))
    sizes = {len(stored.jpeg) for stored in expected if stored is not None}
    assert len(tiles) > 4
    assert len(sizes) > 2
    for answers in kept:
        assert [answers[index] for index in forward] == expected


def test_a_nowait_read_does_not_wait_for_a_source_another_thread_holds(tmp_path: Path) -> None:
    path = write_jpeg_svs(tmp_path / "slide.svs", smooth_pixels(), "ycbcr")
    with TileCache() as cache:
        cache.tile(path, 0, 0, 0)
        with cache.source(path)._lock, pytest.raises(WouldBlock):
            cache.stored_tile_nowait(path, 0, 1, 1)
        assert cache.stored_tile_nowait(path, 0, 1, 1) == cache.tile(path, 0, 1, 1)


async def test_the_event_loop_waits_for_a_tile_read_ahead_instead_of_a_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_jpeg_svs(tmp_path / "slide.svs", smooth_pixels(), "rgb")
    file = service.ImageFile(path, None, "identity")
    with TileCache() as cache:
        cache.tile(path, 0, 0, 0)
        expected = cache.tile(path, 0, 2, 1)
        with TileCache() as fresh_cache:
            fresh_cache.tile(path, 0, 0, 0)
            if not _drop_from_page_cache(path):
                pytest.skip("this file system keeps the file in the page cache")

            async def no_thread(work: object) -> bytes:
                raise AssertionError("the tile went to a thread")

            monkeypatch.setattr(service, "_pixels", no_thread)
            assert await service.file_tile(fresh_cache, file, 0, 2, 1, TILE, "jpeg") == expected


async def test_a_tile_the_page_cache_holds_is_answered_at_once_and_one_it_lacks_after_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_jpeg_svs(tmp_path / "slide.svs", smooth_pixels(), "ycbcr")
    file = service.ImageFile(path, None, "identity")
    sleeps: list[float] = []

    async def recorded_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    monkeypatch.setattr(service, "sleep", recorded_sleep)
    with TileCache() as cache, TileCache() as fresh:
        fresh.tile(path, 0, 0, 0)  # opens the file
        assert await service.file_tile(fresh, file, 0, 2, 1, TILE, "jpeg") == cache.tile(path, 0, 2, 1)
        assert sleeps == []
        read = fresh.stored_tile_nowait
        refusals = [WouldBlock(), WouldBlock()]

        def refused_twice(*args: Any) -> bytes | None:
            if refusals:
                raise refusals.pop()
            return read(*args)

        monkeypatch.setattr(fresh, "stored_tile_nowait", refused_twice)
        assert await service.file_tile(fresh, file, 0, 3, 1, TILE, "jpeg") == cache.tile(path, 0, 3, 1)
        assert sleeps == list(service.PAGE_CACHE_WAITS_S[:2])

        def always_refused(*args: Any) -> bytes | None:
            raise WouldBlock

        sleeps.clear()
        monkeypatch.setattr(fresh, "stored_tile_nowait", always_refused)
        assert await service.file_tile(fresh, file, 0, 1, 2, TILE, "jpeg") == cache.tile(path, 0, 1, 2)
        assert sleeps == list(service.PAGE_CACHE_WAITS_S)  # then a thread read it


def test_a_close_waits_for_a_read_in_flight_whose_end_alone_wakes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_jpeg_svs(tmp_path / "slide.svs", smooth_pixels(), "ycbcr")
    source = ImageSource(path)
    assert source.stored_jpeg_tile(0, 0, 0, TILE) is not None
    notified: list[int] = []
    condition = source._no_readers
    notify_all = condition.notify_all

    def counted_notify_all() -> None:
        notified.append(1)
        notify_all()

    monkeypatch.setattr(condition, "notify_all", counted_notify_all)
    assert source.stored_jpeg_tile(0, 1, 1, TILE, nowait=True) is not None
    assert notified == []  # no close waited: nobody to wake
    backend = source._backend
    assert backend is not None
    entered, release = threading.Event(), threading.Event()
    read = backend.stored_jpeg_tile

    def held_read(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        release.wait(30)
        return read(*args, **kwargs)

    monkeypatch.setattr(backend, "stored_jpeg_tile", held_read)
    with ThreadPoolExecutor(2) as pool:
        reading = pool.submit(source.stored_jpeg_tile, 0, 1, 1, TILE)
        assert entered.wait(30)
        closing = pool.submit(source.close)
        deadline = time.monotonic() + 30
        while source._closers == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert source._closers == 1  # waiting for the reader
        assert not closing.done()
        release.set()
        assert reading.result(30) is not None
        closing.result(30)
    assert notified == [1]
    assert source._backend is None


def test_aperio_rgb_tiles_get_the_adobe_marker_and_their_tables() -> None:
    pixels = smooth_pixels()[:TILE, :TILE]
    aperio = numbered_components(without_segment(rgb_jpeg(pixels), APP14))  # RGB, nothing says so
    tables, tile = split_tables(aperio)
    assert APP14 not in jpeg_markers(tile)
    assert 0xDB not in jpeg_markers(tile)
    served = complete_jpeg(tile, tables, rgb=True)
    assert served is not None
    assert APP14 in jpeg_markers(served)
    assert np.abs(_jpeg_pixels(served).astype(int) - pixels.astype(int)).mean() < 3
    # Without the marker a decoder takes the RGB samples for YCbCr: the colours are far off.
    unmarked = complete_jpeg(tile, tables, rgb=False)
    assert unmarked is not None
    assert np.abs(_jpeg_pixels(unmarked).astype(int) - pixels.astype(int)).mean() > 20


def test_a_jfif_marker_on_an_rgb_level_is_left_to_the_decoder() -> None:
    ycbcr = bytes(imagecodecs.jpeg8_encode(smooth_pixels()[:64, :64], level=90))
    assert 0xE0 in jpeg_markers(ycbcr)
    assert complete_jpeg(ycbcr, None, rgb=True) is None
    assert complete_jpeg(ycbcr, None, rgb=False) == ycbcr
    assert complete_jpeg(b"not a jpeg", None, rgb=False) is None


def _tile_jpeg(subsampling: str, progressive: bool = False) -> bytes:
    buffer = io.BytesIO()
    pixels = smooth_pixels(3)[:TILE, :TILE]
    Image.fromarray(pixels).save(buffer, "JPEG", quality=85, subsampling=subsampling, progressive=progressive)
    return buffer.getvalue()


@pytest.mark.parametrize("subsampling", ["4:2:0", "4:4:4"])
@pytest.mark.parametrize("height", [1, 15, 16, 17, 53, 80, 200, 223, 255])
def test_a_bottom_edge_tile_decoded_down_to_its_rows_gives_the_whole_decode_s_pixels(
    subsampling: str, height: int
) -> None:
    jpeg = _tile_jpeg(subsampling)
    for width in (TILE, 53):
        stored = StoredTile(jpeg, TILE, width, height)
        trimmed = stored.rows_to_decode()
        assert len(trimmed) == len(jpeg)
        expected = _jpeg_pixels(jpeg)[:height, :width]
        assert np.array_equal(_jpeg_pixels(trimmed)[:height, :width], expected)
    cut_on_the_right = StoredTile(jpeg, TILE, 53, height)
    expected = _jpeg_pixels(jpeg)[:height, :53]
    assert served_jpeg(cut_on_the_right, 85) == encode(np.ascontiguousarray(expected), "jpeg")
    if height <= 200:
        assert _jpeg_pixels(StoredTile(jpeg, TILE, TILE, height).rows_to_decode()).shape[0] < TILE


@pytest.mark.parametrize("subsampling", ["4:2:0", "4:4:4"])
@pytest.mark.parametrize("height", [1, 15, 16, 17, 53, 80, 200, 255])
def test_a_tile_cut_only_below_is_served_as_stored_with_its_rows_in_the_frame_header(
    subsampling: str, height: int
) -> None:
    jpeg = _tile_jpeg(subsampling)
    served = served_jpeg(StoredTile(jpeg, TILE, TILE, height), 85)
    assert served == with_frame_lines(jpeg, height)
    assert len(served) == len(jpeg)  # the stored scan, not a second encode
    pixels = _jpeg_pixels(served).astype(int)
    whole = _jpeg_pixels(jpeg)[:height].astype(int)
    assert pixels.shape == (height, TILE, 3)
    assert np.array_equal(pixels[:-1], whole[:-1])
    # The last row's chroma had the row below it as neighbour in the whole tile (4:2:0 only).
    assert np.abs(pixels[-1] - whole[-1]).max() <= (16 if subsampling == "4:2:0" else 0)


def test_a_progressive_tile_cut_only_below_is_cropped_and_encoded() -> None:
    jpeg = _tile_jpeg("4:2:0", progressive=True)
    expected = _jpeg_pixels(jpeg)[:80]
    assert served_jpeg(StoredTile(jpeg, TILE, TILE, 80), 85) == encode(np.ascontiguousarray(expected), "jpeg")


def test_only_a_sequential_frame_header_is_given_fewer_lines() -> None:
    progressive = _tile_jpeg("4:2:0", progressive=True)
    assert with_frame_lines(progressive, 64) == progressive
    assert _jpeg_pixels(with_frame_lines(_tile_jpeg("4:2:0"), 64)).shape == (64, TILE, 3)


# Tiles of the test slide's stored levels cut by the right edge (one also below; a level in one tile).
RIGHT_EDGE_TILES = [(0, 3, 0), (0, 3, 1), (0, 3, 2), (1, 0, 0)]


def _open_file(cache: TileCache, path: Path) -> None:
    assert cache.view(path).levels  # opens the file, as an image's descriptor does


def _prepare_edges(cache: TileCache, path: Path) -> None:
    _open_file(cache, path)
    cache.prepare_edge_tiles(path)
    assert cache.edge_tiles_prepared(path, timeout=30)


@pytest.mark.parametrize("outcolorspace", ["ycbcr", "rgb"])
def test_prepared_edge_tiles_are_the_crops_the_event_loop_used_to_encode(
    tmp_path: Path, outcolorspace: str
) -> None:
    path = write_jpeg_svs(tmp_path / "slide.svs", smooth_pixels(), outcolorspace)
    with TileCache() as cache, ImageSource(path) as source:
        _prepare_edges(cache, path)
        for level, col, row in RIGHT_EDGE_TILES:
            stored = source.stored_jpeg_tile(level, col, row, TILE)
            assert stored is not None
            assert stored.width < TILE
            cropped = served_jpeg(stored, 85)  # what stored_tile_nowait encoded on the loop before
            assert cache.stored_tile_nowait(path, level, col, row) == cropped
            assert cache.cached_tile(path, level, col, row) == cropped
            assert cache.tile(path, level, col, row) == cropped
        assert cache.edge_bytes > 0


async def test_the_event_loop_never_decodes_a_tile_cut_by_the_right_edge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_jpeg_svs(tmp_path / "slide.svs", smooth_pixels(), "rgb")
    file = service.ImageFile(path, None, "identity")
    decoded_in: list[int] = []
    decode = imagecodecs.jpeg8_decode

    def recorded_decode(*args: Any, **kwargs: Any) -> Any:
        decoded_in.append(threading.get_ident())
        return decode(*args, **kwargs)

    with TileCache() as expected, TileCache() as cache:
        wanted = {tile: expected.tile(path, *tile) for tile in [(0, 3, 0), (0, 3, 1), (0, 1, 2)]}
        _open_file(cache, path)  # no viewer granted its tiles yet
        monkeypatch.setattr(imagecodecs, "jpeg8_decode", recorded_decode)
        loop = threading.get_ident()
        assert cache.stored_tile_nowait(path, 0, 3, 0) is None  # not prepared yet: starts preparing
        assert await service.file_tile(cache, file, 0, 3, 0, TILE, "jpeg") == wanted[0, 3, 0]  # a thread
        assert cache.edge_tiles_prepared(path, timeout=30)
        assert cache.stored_tile_nowait(path, 0, 3, 1) == wanted[0, 3, 1]  # prepared
        assert cache.stored_tile_nowait(path, 0, 1, 2) == wanted[0, 1, 2]  # cut below only: as stored
        assert decoded_in  # by the preparing thread (and maybe a worker thread)
        assert loop not in decoded_in


def test_edge_tiles_stay_within_their_bytes_and_leave_with_their_file(tmp_path: Path) -> None:
    path = write_jpeg_svs(tmp_path / "slide.svs", smooth_pixels(), "ycbcr")
    other = write_jpeg_svs(tmp_path / "other.svs", smooth_pixels(seed=1), "ycbcr")
    with TileCache(max_edge_bytes=1) as cache:
        _prepare_edges(cache, path)
        assert cache.edge_bytes == 0
        assert cache.stored_tile_nowait(path, 0, 3, 0) is None  # not kept: a thread crops it
    with TileCache(max_open_sources=1) as cache:
        for leaving in (cache.forget, lambda _: _open_file(cache, other)):  # forgotten, evicted
            _prepare_edges(cache, path)
            assert cache.edge_bytes > 0
            leaving(path)
            assert cache.edge_bytes == 0
            assert not cache.edge_tiles_prepared(path)


def test_edge_tiles_are_prepared_only_for_an_open_file(tmp_path: Path) -> None:
    path = write_jpeg_svs(tmp_path / "slide.svs", smooth_pixels(), "ycbcr")
    with TileCache() as cache:
        cache.prepare_edge_tiles(path)
        assert not cache.edge_tiles_prepared(path)
        assert cache.open_paths == []
