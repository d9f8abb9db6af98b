"""What every backbone shares, whatever builds it: the errors a backbone reference can raise and the
preprocessing of images and data splits (the CLIP ``Backbone`` and the offline ConSE one both use it).

Kept apart from the factory in :mod:`core.backbones.clip`, which builds every kind of backbone, so that a
backbone module (ConSE) never imports the factory that builds it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image

from core.backbones.errors import BackboneError as BackboneError
from core.backbones.errors import BackboneOfflineError as BackboneOfflineError
from core.data.images import check_image_shape


class ImagePreprocessing:
    """Preprocessing of PIL images and data splits, shared by every backbone with a ``preprocess``
    transform and a ``device`` (the CLIP ``Backbone`` and the offline ConSE one)."""

    preprocess: Callable[[Image.Image], torch.Tensor]

    def preprocess_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """PIL images -> a normalised batch on the backbone's device.

        Images from :func:`core.data.images.load_image` are already shape-checked; this checks again so
        that an image made in code can never make the shortest-side resize allocate gigabytes.
        """
        for n, image in enumerate(images):
            check_image_shape(*image.size, getattr(image, "filename", "") or f"image {n + 1} of the batch")
        return torch.stack([self.preprocess(im) for im in images]).to(self.device)

    def preprocess_split(
        self,
        split: Any,
        indices: Sequence[int] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Preprocess the images of a data split (all, or ``indices``) into one CPU tensor."""
        order = range(len(split)) if indices is None else indices
        out = []
        for n, i in enumerate(order, 1):
            out.append(self.preprocess(split.image(i)))
            if progress is not None and (n % 64 == 0 or n == len(order)):
                progress(n, len(order))
        return torch.stack(out)
