"""The drawing helpers behind every heatmap and download: the overlay colour scale and labelled PNG grids."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lens import figures


def test_colour_scale_shows_the_overlay_ramp_from_0_to_1():
    scale = figures.colour_scale(width=200)
    assert scale.width == 200
    pixels = np.asarray(scale)
    # the bar is the one row band whose colours are exactly the ramp of colourize over [0, 1]
    ramp = figures.colourize(np.linspace(0.0, 1.0, 200, dtype=np.float32)[None, :])[0]
    rows = [y for y in range(scale.height) if np.array_equal(pixels[y], ramp)]
    assert len(rows) == 12, "a 12 px bar"
    above, below = pixels[: rows[0]], pixels[rows[-1] + 1 :]
    assert (above < 128).any(), "the title is written above the bar"
    assert (below < 128).any(), "the tick labels 0, 0.5 and 1 are written below it"


def test_labelled_grid_writes_every_caption_under_its_tile_and_adds_the_scale():
    tiles = [
        (f"concept {m} ≈ wing = 01", Image.new("RGB", (32, 32), colour))
        for m, colour in enumerate(["red", "blue", "green"])
    ]
    plain = figures.labelled_grid(tiles, columns=2, tile=64)
    with_scale = figures.labelled_grid(tiles, columns=2, tile=64, scale=figures.ATTENTION_SCALE)
    assert with_scale.height > plain.height and with_scale.width == plain.width
    pixels = np.asarray(plain)
    assert tuple(pixels[10, 10]) == (255, 0, 0), "first tile top left"
    cell = (plain.width - 8) // 2
    assert tuple(pixels[10, cell + 8 + 10]) == (0, 0, 255), "second tile in the same row"
    second_row = plain.height // 2 + 10
    assert tuple(pixels[second_row, 10]) == (0, 128, 0), "third tile starts the second row"
    caption_band = pixels[65:80, :cell]
    assert (caption_band < 100).any(), "the caption is written under the first tile"
    with pytest.raises(ValueError, match="no images"):
        figures.labelled_grid([])


def test_captions_wrap_to_the_tile_and_fall_back_to_plain_characters():
    font = figures._font(13)
    lines = figures._fit_lines("concept 2 ≈ head and a long caption that needs two lines or more", 120, font)
    assert len(lines) == 2 and lines[-1].endswith("…")
    assert all(font.getlength(line) <= 120 for line in lines)
    builtin = figures.ImageFont.load_default(size=13)
    assert figures._writable("concept 1 ≈ wing · ✓", builtin) == "concept 1 ~ wing · yes"
