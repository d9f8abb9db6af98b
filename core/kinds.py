"""The bundle kinds ConceptLens knows, in one table: what each is, how to load it and how to evaluate it.

``conceptlens eval``, ``conceptlens reproduce``, the dashboard benchmark and the tests look the kind up here
instead of writing their own ``if kind == ...`` chain. ``core.bundle`` (a lower layer) knows only the kind
names, to validate ``config.json``; what a kind's cached arrays look like its own ``bundle`` module declares
(an ``ArrayLayout`` its loader passes to ``load_bundle``). Loaders and evaluators are named as
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
    loader: str  # "module:function" taking (path, device="auto") -> the loaded model
    # "module:function" taking (path, seed=None, device="auto", progress=..., log=...) -> metrics dict
    evaluator: str

    def load(self, bundle: str | Path, device: str = "auto") -> Any:
        return _function(self.loader)(str(bundle), device=device)

    def evaluate(
        self,
        bundle: str | Path,
        seed: int | None = None,
        device: str = "auto",
        progress: Any = None,
        log: Any = None,
    ) -> dict[str, Any]:
        """The evaluator's metrics; ``progress`` (``progress(done, total)``, told each phase's name where it
        takes one) and ``log`` (one line per phase) are passed on when given, so a long evaluation is never
        silent."""
        extra = {name: value for name, value in (("progress", progress), ("log", log)) if value is not None}
        return _function(self.evaluator)(str(bundle), seed=seed, device=device, **extra)


def _function(name: str) -> Any:
    module, function = name.split(":")
    return getattr(import_module(module), function)


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind(
            "clip",
            "an image-text backbone trained on ToyBirds",
            "core.backbones.clip:load_backbone",
            "core.backbones.evaluate_clip:evaluate_clip_bundle",
        ),
        Kind(
            "concepthash",
            "ConceptHash: concept tokens -> sub-codes",
            "core.concepthash.bundle:load_concepthash",
            "core.concepthash.evaluate:evaluate_bundle",
        ),
        Kind(
            "ceir",
            "CEIR: concept bottleneck -> VAE latent -> clusters",
            "core.ceir.bundle:load_ceir",
            "core.ceir.evaluate:evaluate_bundle",
        ),
    )
}


def kind_of(bundle: str | Path) -> Kind:
    """The registered kind of the bundle at ``bundle`` (read from its ``config.json``)."""
    from core.bundle import read_bundle_config

    name = read_bundle_config(Path(bundle))["kind"]
    if name not in KINDS:
        raise ValueError(f"'{name}' bundles are not known to this version of ConceptLens.")
    return KINDS[name]


def load_any(bundle: str | Path, device: str = "auto") -> Any:
    """Load a bundle of any kind with its kind's loader."""
    return kind_of(bundle).load(bundle, device=device)


def evaluate_any(
    bundle: str | Path, seed: int | None = None, device: str = "auto", progress: Any = None, log: Any = None
) -> dict[str, Any]:
    """Evaluate a bundle of any kind; the kind is read from the bundle."""
    return kind_of(bundle).evaluate(bundle, seed=seed, device=device, progress=progress, log=log)


# What an evaluator's report says about the run rather than measures: not stored as metrics.
REPORT_KEYS = ("kind", "bundle", "data")


def store_metrics(bundle: str | Path, report: dict[str, Any]) -> dict[str, Any]:
    """Merge the metrics of ``report`` (an :func:`evaluate_any` result on the bundle's own data) into the
    bundle's ``config.json`` atomically, weights and arrays untouched; returns what was stored."""
    from core.bundle import update_bundle_arrays

    metrics = {key: value for key, value in report.items() if key not in REPORT_KEYS}
    update_bundle_arrays(bundle, {}, metrics=metrics)
    return metrics
