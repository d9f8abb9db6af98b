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


def show_errors(errors: list[str]) -> None:
    for error in errors:
        st.error(error)


def sample_photos() -> list[str]:
    """Names of the real photos that ship inside installed packages (no download)."""
    return sample_photo_names()


def load_sample_photo(label: str) -> Image.Image:
    return core_load_sample_photo(label)
