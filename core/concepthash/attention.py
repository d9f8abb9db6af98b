"""Where each concept looks: per-concept attention heatmaps for any image.

Two readings of the same model:

* ``last``: the last block's attention from each concept token to the patch tokens, averaged
  over heads (the map L_csd acts on);
* ``rollout``: attention rollout through every block the model runs (residual path included),
  which also counts how patches reached the concept token through earlier layers. With
  ``concept_depth`` that is the first ``concept_depth`` blocks; with ``concept_blocks`` the concept
  tokens join only the last blocks, and the blocks before cover the CLS and patch tokens alone: a
  concept token starts as itself where it joins and gathers the patches' rollout through its
  attention from then on (:func:`core.backbones.vit.attention_rollout` states the rule).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from core.backbones.vit import attention_rollout
from core.concepthash.codes import upsample_maps
from core.concepthash.model import ConceptHash

HeatmapMethod = Literal["last", "rollout"]


@torch.no_grad()
def concept_attention_maps(
    model: ConceptHash, pixels: torch.Tensor, method: HeatmapMethod = "last"
) -> torch.Tensor:
    """(B, M, gh, gw) attention of each concept token over the patch grid (rows sum to 1 for ``last``)."""
    if method not in ("last", "rollout"):
        raise ValueError(f"Heatmap method must be 'last' or 'rollout', not {method!r}.")
    model.eval()
    out = model(pixels.to(model.backbone.device), attention_layers="last" if method == "last" else "all")
    gh, gw = model.backbone.grid_size
    n_patches = gh * gw
    if method == "last":
        maps = out.concept_attention
    else:
        rollout = attention_rollout(out.attentions)
        rows = slice(n_patches + 1, None) if model.config.mode == "concepts" else slice(0, 1)
        maps = rollout[:, rows, 1 : n_patches + 1]
    return maps.reshape(maps.shape[0], maps.shape[1], gh, gw).cpu()


def concept_heatmaps(
    model: ConceptHash,
    pixels: torch.Tensor,
    method: HeatmapMethod = "last",
    size: int | tuple[int, int] | None = None,
) -> np.ndarray:
    """Per-concept heatmaps (B, M, H, W) in [0, 1] to overlay on images (default size: the model input)."""
    maps = concept_attention_maps(model, pixels, method)
    return upsample_maps(maps.numpy(), size or model.backbone.image_size)
