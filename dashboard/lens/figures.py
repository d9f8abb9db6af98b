"""Drawing helpers: heatmap overlays with their colour scale, image grids and download buttons."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image, ImageDraw, ImageFont

# A perceptually ordered colour ramp (dark blue -> teal -> yellow), sampled at 5 stops.
_RAMP = np.array(
    [[48, 18, 59], [40, 120, 180], [33, 170, 140], [190, 210, 60], [250, 230, 30]], dtype=np.float32
)


def colourize(heatmap: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] (H, W) to RGB uint8 (H, W, 3) along the ramp."""
    x = np.clip(heatmap, 0.0, 1.0) * (len(_RAMP) - 1)
    low = np.floor(x).astype(int).clip(0, len(_RAMP) - 2)
    frac = (x - low)[..., None]
    return (_RAMP[low] * (1 - frac) + _RAMP[low + 1] * frac).astype(np.uint8)


def overlay(image: Image.Image, heatmap: np.ndarray, opacity: float = 0.5) -> Image.Image:
    """The image with a heatmap (H, W in [0, 1], any size) blended on top."""
    rgb = image.convert("RGB")
    heat = Image.fromarray(colourize(heatmap)).resize(rgb.size, Image.Resampling.BILINEAR)
    return Image.blend(rgb, heat, float(np.clip(opacity, 0.0, 1.0)))


ATTENTION_SCALE = "attention, each map scaled to its own range (0 = least, 1 = most attended)"
_TEXT = (20, 20, 20)


# Pillow's built-in font lacks these glyphs; with it they are written in plain characters.
_PLAIN = str.maketrans({"≈": "~", "−": "-", "✓": "yes", "✗": "no", "⟲": "*"})


def _font(size: int = 13) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans where the system has it (it draws ≈), else the font inside Pillow (no network needed)."""
    try:
        return ImageFont.truetype("DejaVuSans.ttf", size)
    except OSError:
        return ImageFont.load_default(size=size)


def _writable(text: str, font) -> str:
    return text if isinstance(getattr(font, "path", None), str) else text.translate(_PLAIN)


def _fit_lines(text: str, width: int, font, max_lines: int = 2) -> list[str]:
    """``text`` wrapped at spaces into lines no wider than ``width`` px; the last line ends in … when cut."""
    lines: list[str] = []
    for word in _writable(text, font).split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] += " …"
    for i, line in enumerate(lines):
        while font.getlength(line) > width and len(line) > 1:
            line = line[:-2] + "…"
        lines[i] = line
    return lines


def colour_scale(width: int = 240, title: str = ATTENTION_SCALE, font_size: int = 12) -> Image.Image:
    """The overlay colour ramp as a labelled bar (ticks 0, 0.5, 1 under it, ``title`` above): the legend of
    every heatmap drawn by :func:`overlay`. The bar is ``font_size`` pixels high."""
    font, bar_height, line = _font(font_size), font_size, font_size + 3
    title_lines = _fit_lines(title, width, font, max_lines=3)
    top = line * len(title_lines) + 2
    canvas = Image.new("RGB", (width, top + bar_height + line + 2), "white")
    draw = ImageDraw.Draw(canvas)
    for row, text in enumerate(title_lines):
        draw.text((0, row * line), text, fill=_TEXT, font=font)
    ramp = colourize(np.tile(np.linspace(0.0, 1.0, width, dtype=np.float32), (bar_height, 1)))
    canvas.paste(Image.fromarray(ramp), (0, top))
    for value, anchor in ((0.0, "la"), (0.5, "ma"), (1.0, "ra")):
        draw.text(
            (value * (width - 1), top + bar_height + 2), f"{value:g}", fill=_TEXT, font=font, anchor=anchor
        )
    return canvas


def labelled_grid(
    items: Sequence[tuple[str, Image.Image]], columns: int = 6, tile: int = 160, scale: str | None = None
) -> Image.Image:
    """One image of captioned tiles in rows of ``columns`` (each scaled to ``tile`` px high, its caption
    written under it), with the colour scale titled ``scale`` at the bottom: a PNG that says what it shows."""
    if not items:
        raise ValueError("There are no images to put in a grid.")
    font, line, gap = _font(13), 16, 8
    scaled = [
        image.convert("RGB").resize((max(1, round(image.width * tile / image.height)), tile))
        for _, image in items
    ]
    cell = max(max(image.width for image in scaled), 120)
    captions = [_fit_lines(caption, cell, font) for caption, _ in items]
    text_height = line * max(len(lines) for lines in captions)
    columns = max(1, min(columns, len(items)))
    rows = -(-len(items) // columns)
    legend = colour_scale(min(320, columns * cell), scale) if scale else None
    width = columns * cell + (columns - 1) * gap
    height = rows * (tile + text_height + gap) + (legend.height + gap if legend else 0)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    for n, (image, lines) in enumerate(zip(scaled, captions, strict=True)):
        x, y = (n % columns) * (cell + gap), (n // columns) * (tile + text_height + gap)
        canvas.paste(image, (x, y))
        for row, text in enumerate(lines):
            draw.text((x, y + tile + 2 + row * line), text, fill=_TEXT, font=font)
    if legend:
        canvas.paste(legend, (0, height - legend.height))
    return canvas


def show_colour_scale(title: str = ATTENTION_SCALE, width: int = 360) -> None:
    """The heatmap legend in the page, next to the overlays it explains (drawn at twice the size: crisp)."""
    st.image(colour_scale(2 * width, title, font_size=26), width=width)


def mask_overlay(
    image: Image.Image, mask: np.ndarray, colour: tuple[int, int, int] = (255, 0, 128), opacity: float = 0.55
) -> Image.Image:
    """Tint the pixels of a boolean mask (same size as the image)."""
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    tint = np.array(colour, dtype=np.float32)
    m = mask.astype(bool)[..., None]
    return Image.fromarray(np.where(m, base * (1 - opacity) + tint * opacity, base).astype(np.uint8))


# Width (px) a full-width grid plans for: the content column of the wide layout beside the sidebar in a
# 1280 px window; a grid inside half the page passes half of it. Streamlit's columns share their container
# equally with a 1 rem (16 px) gap; an image of a fixed width wider than its column runs into the next one,
# so grid tiles fill their column instead (narrower windows get smaller tiles, never overlapping ones).
GRID_ROOM = 820
COLUMN_GAP = 16


def grid_columns(wanted: int, width: int, room: int = GRID_ROOM) -> int:
    """How many tiles of ``width`` px go in a row: ``wanted``, or fewer where they would not fit ``room``."""
    return max(1, min(int(wanted), (int(room) + COLUMN_GAP) // (int(width) + COLUMN_GAP)))


def image_grid(
    items: Sequence[tuple[str, Image.Image]],
    columns: int = 6,
    width: int = 110,
    download: str | None = None,
    scale: str | None = None,
    key: str | None = None,
    label: str | None = None,
    room: int = GRID_ROOM,
) -> None:
    """Images with captions in rows of at most ``columns``, and no more than tiles of about ``width`` px fit
    side by side in ``room`` px; each tile fills its column, so tiles never overlap however many concepts
    there are or however narrow the window. With ``download`` (a file name) a button ``label`` for the grid
    as one labelled PNG (with the colour scale titled ``scale`` when the tiles are heatmap overlays)."""
    columns = grid_columns(columns, width, room)
    for start in range(0, len(items), columns):
        cols = st.columns(columns)
        for col, (caption, image) in zip(cols, items[start : start + columns], strict=False):
            col.image(image, caption=caption, width="stretch")
    if download and items:
        download_png(
            partial(labelled_grid, list(items), columns, scale=scale), download, key=key, label=label
        )


def share_bars(column: str, label: str) -> dict[str, Any]:
    """``column_config`` drawing ``column`` (shares from 0 to 1) as bars with percentages, named ``label``."""
    return {column: st.column_config.ProgressColumn(label, format="percent", min_value=0.0, max_value=1.0)}


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def download_png(
    make: Callable[[], Image.Image], name: str, key: str | None = None, label: str | None = None
) -> None:
    """A button for an image as ``name``.png; ``make`` draws it only when the button is pressed."""
    _download_button(
        f"Download {label or name} (PNG)",
        lambda: png_bytes(make()),
        f"{name}.png",
        "image/png",
        key or f"png-{name}",
    )


def _download_button(label: str, data: Any, file_name: str, mime: str, key: str) -> None:
    """Every download button of the app. ``on_click="ignore"``: a download does not rerun the page, which
    would redraw it for nothing and could drop the file the browser is about to fetch (the browser test saw
    a download never arrive when it did)."""
    st.download_button(label, data, file_name=file_name, mime=mime, key=key, on_click="ignore")


def download_table(df: pd.DataFrame, name: str, key: str | None = None) -> None:
    csv = df.to_csv(index=False).encode()
    _download_button(f"Download {name} (CSV)", csv, f"{name}.csv", "text/csv", key or f"csv-{name}")


def figure_html(fig) -> bytes:
    """A plotly figure as one self-contained HTML file: plotly.js is inlined, so it opens with no network."""
    return fig.to_html(include_plotlyjs=True, full_html=True).encode()


def download_figure(fig, name: str, key: str | None = None) -> None:
    """Plotly figure as a self-contained HTML file (no kaleido needed).

    The file (about 5 MB with plotly.js inside) is built only when the button is pressed, not on every rerun.
    """
    html = partial(figure_html, fig)
    _download_button(f"Download {name} (HTML)", html, f"{name}.html", "text/html", key or f"html-{name}")


def distinct_colours(n: int, base: Sequence[str] = ()) -> list[str]:
    """``n`` colours, none repeated: ``base`` (a qualitative palette) while it lasts, else ``n`` hues spread
    round the colour wheel by the golden angle, at three alternating lightnesses, so neighbouring classes of
    a 200-class map differ and no two share a colour."""
    if n <= len(base):
        return list(base[:n])
    colours = []
    for i in range(n):
        hue = (i * 137.508) % 360
        lightness = (42, 58, 32)[i % 3]
        colours.append(f"hsl({hue:.1f},{70 if i % 2 else 85}%,{lightness}%)")
    return colours
