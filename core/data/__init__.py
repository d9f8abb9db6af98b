"""Data: the ToyBirds world, real data-set readers, safe image loading, data specs."""

from core.data.images import IMAGE_EXTENSIONS, ImageLoadError, list_image_files, load_image
from core.data.spec import DataSpec, ImageSplit, ToyBirdsSplit, open_split

__all__ = [
    "IMAGE_EXTENSIONS",
    "DataSpec",
    "ImageLoadError",
    "ImageSplit",
    "ToyBirdsSplit",
    "list_image_files",
    "load_image",
    "open_split",
]
