"""Uploaded images go through core's safe image loader; each bad file gets one st.error sentence."""

from __future__ import annotations

from typing import Any

import streamlit as st
from PIL import Image

from core.data.images import ImageLoadError, load_image

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


def show_errors(errors: list[str]) -> None:
    for error in errors:
        st.error(error)


def sample_photos() -> dict[str, Any]:
    """Real photos that ship inside installed packages (no download): name -> loader."""
    photos: dict[str, Any] = {}
    try:
        from skimage import data

        for name in ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left"):
            if hasattr(data, name):
                photos[f"skimage: {name}"] = getattr(data, name)
    except ImportError:
        pass
    try:
        from sklearn.datasets import load_sample_image

        for name in ("china.jpg", "flower.jpg"):
            photos[f"sklearn: {name}"] = lambda name=name: load_sample_image(name)
    except ImportError:
        pass
    return photos


def load_sample_photo(label: str) -> Image.Image:
    array = sample_photos()[label]()
    if array.ndim == 2:
        return Image.fromarray(array).convert("RGB")
    return Image.fromarray(array[..., :3])
