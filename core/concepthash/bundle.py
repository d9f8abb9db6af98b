"""A trained ConceptHash bundle loaded back: the model in eval mode, its backbone, data spec and arrays."""

from __future__ import annotations

from pathlib import Path

from core.backbones.clip import load_backbone
from core.bundle import check_shapes, load_bundle
from core.concepthash.arrays import ARRAYS, DatabaseArrays
from core.concepthash.model import ConceptHash, ConceptHashConfig, current_weight_names
from core.data.spec import DataSpec
from core.loaded import LoadedBundle
from core.runtime import resolve_device

KIND = "concepthash"


class LoadedConceptHash(LoadedBundle[ConceptHash], DatabaseArrays):
    """A ConceptHash bundle ready to use: model (eval mode), its backbone, data spec and cached arrays."""


def load_concepthash(path: str | Path, device: str = "auto") -> LoadedConceptHash:
    """Load a ConceptHash bundle with its backbone (found by the reference the bundle stores)."""
    bundle = load_bundle(path, kind=KIND, layout=ARRAYS)  # validated: config numbers, arrays, weights
    model_config = ConceptHashConfig.from_dict(bundle.section("model"))
    classes = list(bundle.config.get("classes") or [])
    backbone = load_backbone(
        bundle.section("backbone"), device=resolve_device(device), relative_to=bundle.path
    )
    text_features = bundle.weights.get("text_features")
    if text_features is None:
        raise ValueError(
            f"The bundle {bundle.path} has no 'text_features' weights; it is not a ConceptHash model."
        )
    model = ConceptHash(backbone, classes, model_config, text_features=text_features)
    weights = current_weight_names(bundle.weights)
    check_shapes(weights, model.state_dict(), path=bundle.path)
    model.load_state_dict(weights)
    model.to(backbone.device).eval()
    data = DataSpec.from_dict(bundle.section("data"))
    return LoadedConceptHash(bundle.path, model, backbone, data, bundle.config, bundle.arrays)
