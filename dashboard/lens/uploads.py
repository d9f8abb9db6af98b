"""Uploaded images go through core's safe image loader; each bad file gets one st.error sentence."""

from __future__ import annotations

from typing import Any

import streamlit as st
from PIL import Image

from core.data.images import ImageLoadError, load_image
from core.data.samples import load_sample_photo as core_load_sample_photo
from core.data.samples import sample_photo_names

IMAGE_TYPES = ["png", "jpg", "jpeg", "webp", "bmp", "gif", "tif", "tiff"]


def read_uploads(files: list[Any] | Any | None) -> tuple[list[tuple[str, Image.Image]], list[str]]:
    """(name, RGB image) for every readable upload and one error sentence per unreadable one."""
    if files is None:
        return [], []
    files = files if isinstance(files, list) else [files]
    images, errors = [], []
    for file in files:
        try:
            images.append((file.name, load_image(file.getvalue(), name=file.name)))
        except ImageLoadError as exc:
            errors.append(str(exc))
    return images, errors


def thumbnail(
    image: Image.Image, size: int = 150, background: tuple[int, int, int] = (255, 255, 255)
) -> Image.Image:
    """A ``size`` x ``size`` RGB copy of ``image``, scaled to fit and centred on ``background`` (letterboxed).

    Any shape works: a side that would scale below one pixel stays one pixel wide, so a 20000 x 20 picture
    becomes a visible line instead of an image of height 0 (which ``st.image(width=...)`` rejects).
    """
    width, height = image.size
    scale = size / max(width, height, 1)
    fitted = (min(size, max(1, round(width * scale))), min(size, max(1, round(height * scale))))
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST
    small = image.convert("RGB").resize(fitted, resample, reducing_gap=3.0 if scale < 1 else None)
    canvas = Image.new("RGB", (size, size), background)
    canvas.paste(small, ((size - fitted[0] + 1) // 2, (size - fitted[1] + 1) // 2))
    return canvas


def show_errors(errors: list[str]) -> None:
    for error in errors:
        st.error(error)


def sample_photos() -> list[str]:
    """Names of the real photos that ship inside installed packages (no download)."""
    return sample_photo_names()


def load_sample_photo(label: str) -> Image.Image:
    return core_load_sample_photo(label)
