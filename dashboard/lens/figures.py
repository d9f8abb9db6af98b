"""Drawing helpers: heatmap overlays, image grids and download buttons."""

from __future__ import annotations

import io
from collections.abc import Sequence
from functools import partial

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

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


def mask_overlay(
    image: Image.Image, mask: np.ndarray, colour: tuple[int, int, int] = (255, 0, 128), opacity: float = 0.55
) -> Image.Image:
    """Tint the pixels of a boolean mask (same size as the image)."""
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    tint = np.array(colour, dtype=np.float32)
    m = mask.astype(bool)[..., None]
    return Image.fromarray(np.where(m, base * (1 - opacity) + tint * opacity, base).astype(np.uint8))


def image_grid(items: Sequence[tuple[str, Image.Image]], columns: int = 6, width: int = 110) -> None:
    """Images with captions in rows of ``columns``."""
    for start in range(0, len(items), columns):
        cols = st.columns(columns)
        for col, (caption, image) in zip(cols, items[start : start + columns], strict=False):
            col.image(image, caption=caption, width=width)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def download_table(df: pd.DataFrame, name: str, key: str | None = None) -> None:
    st.download_button(
        f"Download {name} (CSV)",
        df.to_csv(index=False).encode(),
        file_name=f"{name}.csv",
        mime="text/csv",
        key=key or f"csv-{name}",
    )


def figure_html(fig) -> bytes:
    """A plotly figure as one self-contained HTML file: plotly.js is inlined, so it opens with no network."""
    return fig.to_html(include_plotlyjs=True, full_html=True).encode()


def download_figure(fig, name: str, key: str | None = None) -> None:
    """Plotly figure as a self-contained HTML file (no kaleido needed).

    The file (about 5 MB with plotly.js inside) is built only when the button is pressed, not on every rerun.
    """
    st.download_button(
        f"Download {name} (HTML)",
        partial(figure_html, fig),
        file_name=f"{name}.html",
        mime="text/html",
        key=key or f"html-{name}",
    )
