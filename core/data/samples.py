"""Real sample photos that ship inside installed packages (scikit-image, scikit-learn, matplotlib).

No download: they are read from the packages' own data folders. Used by the dashboard's
open-world page, the ConSE check set and tests.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import numpy as np
from PIL import Image


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data

        if name == "motorcycle_left":  # the left view of skimage's stereo pair
            return data.stereo_motorcycle()[0]
        return getattr(data, name)()

    return load


def _sklearn(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(name)

    return load


def _grace_hopper() -> np.ndarray:
    from matplotlib.cbook import get_sample_data

    with get_sample_data("grace_hopper.jpg") as file:
        return np.asarray(Image.open(file).convert("RGB"))


LOADERS: dict[str, Callable[[], np.ndarray]] = {
    **{f"skimage: {n}": _skimage(n) for n in ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left")},
    **{f"sklearn: {n}": _sklearn(n) for n in ("china.jpg", "flower.jpg")},
    "matplotlib: grace_hopper.jpg": _grace_hopper,
}


def sample_photo_names() -> list[str]:
    """Names of the sample photos whose package is installed here (found, not imported: importing
    scikit-learn, scikit-image and matplotlib takes ~1-2 s, and a page lists the names on every visit)."""
    return [name for name in LOADERS if importlib.util.find_spec(name.split(":")[0]) is not None]


def load_sample_photo(name: str) -> Image.Image:
    """One sample photo as an RGB image; an unknown name raises ValueError listing the known ones."""
    if name not in LOADERS:
        raise ValueError(f"Unknown sample photo '{name}'; known: {', '.join(LOADERS)}.")
    array = np.asarray(LOADERS[name]())
    image = Image.fromarray(array if array.ndim == 3 else array.astype(np.uint8))
    return image.convert("RGB")


def sample_photos() -> dict[str, Image.Image]:
    """Every available sample photo by name."""
    return {name: load_sample_photo(name) for name in sample_photo_names()}
