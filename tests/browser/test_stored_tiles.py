"""Chromium decodes the stored JPEG tiles Concord passes through to the pixels OpenSlide reads, Aperio's RGB
tiles (tables spliced, Adobe marker added) included."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
from playwright.async_api import Page

from app.images.stored_jpeg import APP14, complete_jpeg
from app.images.tiles import ImageSource, Pixels, served_jpeg
from tests.images.jpegfiles import (
    numbered_components,
    rgb_jpeg,
    smooth_pixels,
    split_tables,
    without_segment,
    write_jpeg_svs,
)

DECODE = """async (src) => {
  const image = new Image();
  image.src = src;
  await image.decode();
  const canvas = document.createElement("canvas");
  canvas.width = image.width;
  canvas.height = image.height;
  const context = canvas.getContext("2d");
  context.drawImage(image, 0, 0);
  return [image.width, image.height, Array.from(context.getImageData(0, 0, image.width, image.height).data)];
}"""


async def _decoded_by_chromium(page: Page, jpeg: bytes) -> Pixels:
    source = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
    width, height, rgba = await page.evaluate(DECODE, source)
    return np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)[:, :, :3]


def _mean_difference(a: Pixels, b: Pixels) -> float:
    return float(np.abs(a.astype(int) - b.astype(int)).mean())


async def test_chromium_decodes_served_tiles_of_ycbcr_and_rgb_levels(page: Page, tmp_path: Path) -> None:
    await page.set_content("<!doctype html><title>tiles</title>")
    for outcolorspace in ("ycbcr", "rgb"):
        path = write_jpeg_svs(tmp_path / f"{outcolorspace}.svs", smooth_pixels(), outcolorspace)
        with ImageSource(path) as source:
            served = source.stored_jpeg_tile(0, 1, 1, 256)
            assert served is not None
            expected = source.read_region(0, 256, 256, 256, 256)
        assert _mean_difference(await _decoded_by_chromium(page, served.jpeg), expected) < 2, outcolorspace


async def test_chromium_needs_the_adobe_marker_on_aperio_rgb_tiles(page: Page) -> None:
    await page.set_content("<!doctype html><title>tiles</title>")
    pixels = smooth_pixels()[:256, :256]
    tables, tile = split_tables(numbered_components(without_segment(rgb_jpeg(pixels), APP14)))
    served = complete_jpeg(tile, tables, rgb=True)
    unmarked = complete_jpeg(tile, tables, rgb=False)
    assert served is not None
    assert unmarked is not None
    assert _mean_difference(await _decoded_by_chromium(page, served), pixels) < 3
    assert _mean_difference(await _decoded_by_chromium(page, unmarked), pixels) > 20


async def test_chromium_shows_a_tile_cut_only_below_as_its_rows_kept(page: Page, tmp_path: Path) -> None:
    await page.set_content("<!doctype html><title>tiles</title>")
    for outcolorspace in ("ycbcr", "rgb"):
        path = write_jpeg_svs(tmp_path / f"{outcolorspace}.svs", smooth_pixels(), outcolorspace)
        with ImageSource(path) as source:
            height = source.levels[0][1]
            row = height // 256
            stored = source.stored_jpeg_tile(0, 0, row, 256)
            assert stored is not None
            assert (stored.width, stored.height) == (256, height - row * 256)
            served = served_jpeg(stored, 85)
            assert served == stored.cut_only_below()
            expected = source.read_region(0, 0, row * 256, 256, stored.height)
        shown = await _decoded_by_chromium(page, served)
        assert shown.shape == expected.shape, outcolorspace
        assert _mean_difference(shown, expected) < 2, outcolorspace
