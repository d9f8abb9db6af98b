"""The bundle kinds ConceptLens knows, in one table: what each is and how to evaluate it.

``conceptlens eval`` and ``conceptlens reproduce`` (and the shipped-bundle tests) look the kind up here
instead of writing their own ``if kind == ...`` chain; the dashboard benchmark's loaders and the bundle
validation in ``core.bundle`` still switch on the kind themselves. Evaluators are named as
``module:function`` and imported only when used, so reading this table costs nothing (no PyTorch).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Kind:
    """One bundle kind: its name (``config.json``'s ``kind``), a one-line summary and its evaluator."""

    name: str
    summary: str
    evaluator: str  # "module:function" taking (path, seed=None, device="auto") -> metrics dict

    def evaluate(self, bundle: str | Path, seed: int | None = None, device: str = "auto") -> dict[str, Any]:
        module, function = self.evaluator.split(":")
        return getattr(import_module(module), function)(str(bundle), seed=seed, device=device)


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind(
            "clip",
            "an image-text backbone trained on ToyBirds",
            "core.backbones.train_clip:evaluate_clip_bundle",
        ),
        Kind(
            "concepthash",
            "ConceptHash: concept tokens -> sub-codes",
            "core.concepthash.evaluate:evaluate_bundle",
        ),
        Kind(
            "ceir", "CEIR: concept bottleneck -> VAE latent -> clusters", "core.ceir.evaluate:evaluate_bundle"
        ),
    )
}


def kind_of(bundle: str | Path) -> Kind:
    """The registered kind of the bundle at ``bundle`` (read from its ``config.json``)."""
    from core.bundle import read_bundle_config

    name = read_bundle_config(Path(bundle))["kind"]
    if name not in KINDS:
        raise ValueError(f"Evaluating '{name}' bundles is not available in this version of ConceptLens.")
    return KINDS[name]


def evaluate_any(bundle: str | Path, seed: int | None = None, device: str = "auto") -> dict[str, Any]:
    """Evaluate a bundle of any kind; the kind is read from the bundle."""
    return kind_of(bundle).evaluate(bundle, seed=seed, device=device)
