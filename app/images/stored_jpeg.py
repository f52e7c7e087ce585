"""A pyramid level's own stored JPEG tiles, served as they are: no decode, no re-encode.

A tiled TIFF (an Aperio SVS, a pyramidal TIFF) whose level is JPEG-compressed with tiles of the size a
viewer asks for holds each viewer tile as one JPEG stream. ``StoredJpegTiles`` indexes such levels once
(offsets, byte counts, shared tables) and answers a tile as a complete JPEG a browser decodes:

- abbreviated streams (Aperio keeps the quantisation and Huffman tables once, in JPEGTables) get the
  tables spliced in;
- a level whose TIFF says its JPEG holds RGB, not YCbCr (Aperio's), gets an Adobe APP14 marker with
  transform 0 unless the stream already says so, since decoders otherwise assume YCbCr and shift colours;
- a tile cut by the level's extent is stored whole, padded. Cut by the bottom edge only, it is served as
  stored with its frame header saying the rows kept (``cut_only_below``); cut by the right edge, the
  caller crops it (decode, crop, encode; ``rows_to_decode`` spares the decode of the padding below);
- anything else (other sizes, non-JPEG or non-RGB levels, a JFIF marker that contradicts an RGB level)
  answers None, and the caller reads and encodes the region as before.

Reads use ``os.pread`` on one descriptor: threads read at once, with no seek state to share. A read for an
event loop (``nowait``) takes only what the page cache holds; when a tile's bytes are not there, it asks
the kernel to read them ahead (POSIX_FADV_WILLNEED returns at once) and raises ``WouldBlock``, so that
the loop may try again shortly instead of handing the read to a thread.
"""

from __future__ import annotations

import errno
import os
import threading
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import tifffile

JPEG = 7
PHOTOMETRIC_RGB = 2
PHOTOMETRIC_YCBCR = 6
SOI = b"\xff\xd8"
EOI = b"\xff\xd9"
APP0 = 0xE0
APP14 = 0xEE
SOS = 0xDA
SOF_BASELINE = 0xC0
SOF_EXTENDED = 0xC1
MCU_ROWS = 16  # the tallest MCU (4:2:0)
# Rows decoded below a cut tile's last row: a whole MCU row more, so that the fancy upsampling of the last
# rows kept sees the same chroma neighbours as in the whole tile's decode.
CONTEXT_ROWS = MCU_ROWS
# Adobe APP14: version 100, no flags, transform 0 (the components are RGB, not YCbCr).
ADOBE_RGB = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"
MAX_TILE_BYTES = 16 * 2**20
RWF_NOWAIT: int | None = getattr(os, "RWF_NOWAIT", None)
# A nowait read lands in its thread's scratch buffer, reused (tiles up to this size): a new bytearray per
# tile was zeroed, and when the heap had to grow for it faulted its pages in, before the answer's own copy.
SCRATCH_BYTES = 64 * 2**10
MAX_SCRATCH_BYTES = 2**20
_scratch = threading.local()


class WouldBlock(Exception):
    """A nowait read would have waited: the tile's bytes are outside the page cache (their read-ahead has
    been asked), or another thread holds the source for a moment. Ask again shortly."""


@dataclass(slots=True)  # not frozen: a frozen dataclass is made in 0.9 µs, this in 0.15 (one per cold tile)
class StoredTile:
    """A stored tile as a complete JPEG of side ``side``; ``width`` x ``height`` of it lie in the level."""

    jpeg: bytes
    side: int
    width: int
    height: int

    @property
    def whole(self) -> bool:
        return self.width == self.side and self.height == self.side

    def served_as_stored(self) -> bytes | None:
        """The tile's bytes when it is served with no decode: whole, or cut by the bottom edge only
        (`cut_only_below`); None when it must be cropped and encoded."""
        return self.jpeg if self.whole else self.cut_only_below()

    def cut_only_below(self) -> bytes | None:
        """A tile cut by the level's bottom edge only, as its stored stream with a sequential frame header
        saying its ``height`` lines: decoders stop after them (Pillow, Chromium: tested), so the rows kept
        are shown as stored, with no decode and no second lossy encode. They equal the whole tile's decode
        but for the last row's chroma, which has no row below it now (4:2:0). None for a tile cut on the
        right or a stream without a sequential frame header (progressive)."""
        if self.width != self.side or self.height == self.side:
            return None
        stream = with_frame_lines(self.jpeg, self.height)
        return None if stream is self.jpeg else stream

    def rows_to_decode(self) -> bytes:
        """The stream a crop needs decoded: for a tile cut by the level's bottom edge, its sequential frame
        header says fewer lines (the kept rows and an MCU row more), so that a decoder stops there instead
        of decoding the padding; the rows kept decode to the same pixels."""
        lines = -(-self.height // MCU_ROWS) * MCU_ROWS + CONTEXT_ROWS
        return self.jpeg if lines >= self.side else with_frame_lines(self.jpeg, lines)


@dataclass(frozen=True)
class _Level:
    width: int
    height: int
    tile: int
    columns: int
    # array("q"), not NumPy: an item is a Python int at once (a cold tile reads two of them)
    offsets: array[int]
    byte_counts: array[int]
    splice: JpegSplice | None


def jpeg_markers(stream: bytes | bytearray | memoryview) -> list[int]:
    """The marker codes before the scan (SOS excluded); stops at the first malformed segment."""
    markers: list[int] = []
    position = 2
    while position + 4 <= len(stream) and stream[position] == 0xFF:
        marker = stream[position + 1]
        if marker == SOS:
            break
        markers.append(marker)
        position += 2 + int.from_bytes(stream[position + 2 : position + 4], "big")
    return markers


def with_frame_lines(stream: bytes, lines: int) -> bytes:
    """The stream with its baseline or extended sequential frame header saying ``lines`` lines (fewer than
    it holds: a decoder stops after them); unchanged when it has no such header before its scan."""
    position = 2
    while position + 4 <= len(stream) and stream[position] == 0xFF:
        marker = stream[position + 1]
        if marker == SOS:
            break
        if marker in (SOF_BASELINE, SOF_EXTENDED):
            field = position + 5  # after marker, length and sample precision
            return b"".join((stream[:field], lines.to_bytes(2, "big"), stream[field + 2 :]))
        position += 2 + int.from_bytes(stream[position + 2 : position + 4], "big")
    return stream


def complete_jpeg(tile: bytes, tables: bytes | None, rgb: bool) -> bytes | None:
    """A stand-alone JPEG from a stored tile stream (and the level's JPEGTables); None when unsure."""
    splice = JpegSplice.of(tables, rgb)
    return None if splice is None else splice.complete(tile)


@dataclass(frozen=True)
class JpegSplice:
    """What a level's tile streams get spliced in, worked out once per level from its JPEGTables (not
    per tile: a cold tile's answer is a few tens of microseconds of Python)."""

    header: bytes
    table_markers: frozenset[int]
    rgb: bool

    @classmethod
    def of(cls, tables: bytes | None, rgb: bool) -> JpegSplice | None:
        if tables is not None and not tables.startswith(SOI):
            return None
        header = tables[2:].removesuffix(EOI) if tables else b""
        return cls(header, frozenset(jpeg_markers(tables or SOI)), rgb)

    def complete(self, tile: bytes | bytearray | memoryview) -> bytes | None:
        """The tile as a stand-alone JPEG (one copy of its bytes, so a scratch buffer's view may be given);
        None when unsure."""
        if tile[:2] != SOI:
            return None
        adobe = b""
        if self.rgb:
            markers = self.table_markers.union(jpeg_markers(tile))
            if APP0 in markers:  # a JFIF marker says YCbCr, the TIFF says RGB: let the decoder decide
                return None
            if APP14 not in markers:
                adobe = ADOBE_RGB
        return b"".join((SOI, adobe, self.header, memoryview(tile)[2:]))


class StoredJpegTiles:
    """The JPEG-tiled levels of one TIFF file, by their (width, height)."""

    def __init__(self, path: Path, pages: Iterable[tifffile.TiffPage | tifffile.TiffFrame]) -> None:
        """``pages``: the candidate levels, read from ``path``; the first of each size is kept."""
        self._levels: dict[tuple[int, int], _Level] = {}
        for page in pages:
            level = _indexed(page)
            if level is not None:
                self._levels.setdefault((level.width, level.height), level)
        self._descriptor = os.open(path, os.O_RDONLY) if self._levels else -1

    @classmethod
    def of_file(cls, path: Path) -> StoredJpegTiles:
        """Every JPEG-tiled page of the file (an Aperio SVS keeps its label and macro images stripped)."""
        with tifffile.TiffFile(path) as tiff:
            return cls(path, tiff.pages)

    def has_level(self, size: tuple[int, int]) -> bool:
        return size in self._levels

    def tile(
        self, size: tuple[int, int], col: int, row: int, tile_size: int, *, nowait: bool = False
    ) -> StoredTile | None:
        """Tile (col, row) of the level of this size as a complete JPEG, when the file stores it as one
        tile of this size (a tile cut by the level's extent is stored whole, padded right and below).

        ``nowait``: only from the page cache (RWF_NOWAIT), so that an event loop may ask: WouldBlock when
        the bytes would have to come from the disk (their read-ahead asked), None when the system cannot
        tell."""
        level = self._levels.get(size)
        if level is None or level.tile != tile_size or col < 0 or row < 0:
            return None
        if col * tile_size >= level.width or row * tile_size >= level.height:
            return None
        index = row * level.columns + col
        offset, count = level.offsets[index], level.byte_counts[index]
        if offset <= 0 or not 0 < count <= MAX_TILE_BYTES:
            return None
        stream = (
            _read_nowait(self._descriptor, count, offset)
            if nowait
            else os.pread(self._descriptor, count, offset)
        )
        if stream is None or len(stream) != count:
            return None
        jpeg = None if level.splice is None else level.splice.complete(stream)
        if jpeg is None:
            return None
        width = min(tile_size, level.width - col * tile_size)
        height = min(tile_size, level.height - row * tile_size)
        return StoredTile(jpeg, tile_size, width, height)

    def close(self) -> None:
        if self._descriptor >= 0:
            os.close(self._descriptor)
            self._descriptor = -1


def _read_nowait(descriptor: int, count: int, offset: int) -> memoryview | None:
    """The bytes as a view of this thread's scratch buffer, valid until its next nowait read."""
    if RWF_NOWAIT is None:
        return None
    if count <= MAX_SCRATCH_BYTES:
        scratch: bytearray | None = getattr(_scratch, "buffer", None)
        if scratch is None or len(scratch) < count:
            scratch = _scratch.buffer = bytearray(max(count, SCRATCH_BYTES))
        buffer = memoryview(scratch)[:count]
    else:
        buffer = memoryview(bytearray(count))
    try:
        read = os.preadv(descriptor, [buffer], offset, RWF_NOWAIT)
    except OSError as error:
        if error.errno != errno.EAGAIN:  # EOPNOTSUPP: a file system without the flag
            return None
        read = 0
    if read == count:
        return buffer
    # Not cached, or only its first pages (a short read): the rest asked ahead.
    os.posix_fadvise(descriptor, offset, count, os.POSIX_FADV_WILLNEED)
    raise WouldBlock


def _indexed(page: tifffile.TiffPage | tifffile.TiffFrame) -> _Level | None:
    """The page's tile index when it is a tiled, 8-bit, 3-sample, interleaved JPEG level of square tiles."""
    if not isinstance(page, tifffile.TiffPage) or not page.is_tiled or page.compression != JPEG:
        return None
    if page.samplesperpixel != 3 or page.bitspersample != 8 or page.planarconfig != 1:
        return None
    if page.photometric not in (PHOTOMETRIC_RGB, PHOTOMETRIC_YCBCR) or page.imagedepth != 1:
        return None
    if page.tilewidth != page.tilelength or page.tilewidth <= 0:
        return None
    columns = -(-page.imagewidth // page.tilewidth)
    rows = -(-page.imagelength // page.tilelength)
    if len(page.dataoffsets) != columns * rows:
        return None
    return _Level(
        width=page.imagewidth,
        height=page.imagelength,
        tile=page.tilewidth,
        columns=columns,
        offsets=array("q", page.dataoffsets),
        byte_counts=array("q", page.databytecounts),
        splice=JpegSplice.of(page.jpegtables, rgb=page.photometric == PHOTOMETRIC_RGB),
    )
