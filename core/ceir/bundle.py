"""A trained CEIR bundle loaded back: the model, its backbone, data spec, config and cached arrays."""

from __future__ import annotations

from pathlib import Path

import torch

from core.backbones.clip import Backbone, load_backbone
from core.bundle import BundleError, check_shapes, load_bundle
from core.ceir.arrays import ARRAYS
from core.ceir.model import CEIRModel
from core.ceir.vae import VAEConfig
from core.data.spec import DataSpec, ImageSplit
from core.loaded import LoadedBundle
from core.progress import Progress, no_progress
from core.runtime import resolve_device

KIND = "ceir"


class LoadedCEIR(LoadedBundle[CEIRModel]):
    """A CEIR bundle ready to use."""

    @property
    def concepts(self) -> list[str]:
        return self.model.concepts


def image_embeddings(backbone: Backbone, split: ImageSplit, progress: Progress = no_progress) -> torch.Tensor:
    """L2-normalised CLIP image embeddings of a whole split (CPU)."""
    return backbone.encode_images(backbone.preprocess_split(split, progress=progress)).cpu()


def load_ceir(path: str | Path, device: str = "auto") -> LoadedCEIR:
    """Load a CEIR bundle and its backbone."""
    bundle = load_bundle(path, kind=KIND, layout=ARRAYS)  # validated: config numbers, arrays, weights
    concepts = list(bundle.config.get("concepts") or [])
    settings = bundle.section("ceir")
    vae_config = VAEConfig.from_dict(settings.get("vae", {}))
    weights = bundle.weights
    matrices = ("cluster_centers", "projection.weight", "concept_embeddings")  # the last one is optional
    if any(weights.get(name) is None for name in matrices[:2]) or any(
        name in weights and weights[name].ndim != 2 for name in matrices
    ):
        raise BundleError(
            f"Bundle {bundle.path} lacks CEIR weights: 'projection.weight', 'cluster_centers' (and "
            "'concept_embeddings' where present) must be matrices (2-D) in its weights.safetensors."
        )
    embed_dim = weights["projection.weight"].shape[1]
    text_dim = weights["concept_embeddings"].shape[1] if "concept_embeddings" in weights else embed_dim
    model = CEIRModel(embed_dim, concepts, vae_config, int(weights["cluster_centers"].shape[0]), text_dim)
    check_shapes(weights, model.state_dict(), path=bundle.path)
    model.load_state_dict(weights)
    model.eval()
    backbone = load_backbone(
        bundle.section("backbone"), device=resolve_device(device), relative_to=bundle.path
    )
    if backbone.embed_dim != embed_dim:
        raise BundleError(
            f"Bundle {bundle.path} has weights for image embeddings of {embed_dim} numbers, but its backbone "
            f"{backbone.describe()} gives {backbone.embed_dim}; it was trained on another backbone."
        )
    return LoadedCEIR(
        bundle.path, model, backbone, DataSpec.from_dict(bundle.section("data")), bundle.config, bundle.arrays
    )
