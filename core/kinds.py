"""The bundle kinds ConceptLens knows, in one table: what each is, how to load it and how to evaluate it.

``conceptlens eval``, ``conceptlens reproduce``, the dashboard benchmark and the tests look the kind up here
instead of writing their own ``if kind == ...`` chain. ``core.bundle`` (a lower layer) knows only the kind
names, to validate ``config.json``; what a kind's bundles hold (cached arrays, their values, config numbers)
its own module declares in an ``ArrayLayout``, named here as ``layout``: the kind's loader passes it to
``load_bundle``, the dashboard to ``read_bundle_arrays``, and :func:`check_any` checks any bundle with it,
so every bundle is validated by one function (``core.validate.check_bundle``) whoever opens it. Loaders,
evaluators and layouts are named as ``module:name`` and imported only when used, so reading this table costs
nothing (no PyTorch).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.bundle import ArrayLayout


@dataclass(frozen=True)
class Kind:
    """One bundle kind: its name (``config.json``'s ``kind``), a one-line summary and its evaluator."""

    name: str
    summary: str
    loader: str  # "module:function" taking (path, device="auto") -> the loaded model
    # "module:function" taking (path, seed=None, device="auto", progress=..., log=...) -> metrics dict
    evaluator: str
    layout: str  # "module:NAME" of the ArrayLayout its bundles are validated against (PyTorch-free module)

    def arrays(self) -> ArrayLayout:
        """What this kind's bundles hold (:class:`core.bundle.ArrayLayout`)."""
        return _function(self.layout)

    def check(self, bundle: str | Path) -> None:
        """Raise BundleError (one sentence) unless the bundle holds what this kind declares, and the clip
        bundle it names as its backbone (when that is found) what a clip bundle must; cached per version of
        the files."""
        from core.backbones.layout import backbone_bundle_of
        from core.bundle import BundleError, read_bundle_config
        from core.validate import check_bundle

        config = read_bundle_config(Path(bundle))
        check_bundle(bundle, config, self.arrays())
        backbone = backbone_bundle_of(config, bundle) if self.name != "clip" else None
        if backbone is not None:
            found = read_bundle_config(backbone)["kind"]
            if found != "clip":
                raise BundleError(
                    f"Bundle {bundle} names {backbone} as its backbone, but that is a '{found}' bundle, "
                    "not a 'clip' one."
                )
            KINDS["clip"].check(backbone)

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
            "core.backbones.layout:CLIP_LAYOUT",
        ),
        Kind(
            "concepthash",
            "ConceptHash: concept tokens -> sub-codes",
            "core.concepthash.bundle:load_concepthash",
            "core.concepthash.evaluate:evaluate_bundle",
            "core.concepthash.arrays:ARRAYS",
        ),
        Kind(
            "ceir",
            "CEIR: concept bottleneck -> VAE latent -> clusters",
            "core.ceir.bundle:load_ceir",
            "core.ceir.evaluate:evaluate_bundle",
            "core.ceir.arrays:ARRAYS",
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


def check_any(bundle: str | Path) -> None:
    """Validate a bundle of any kind against its kind's layout (config numbers, cached arrays, weights):
    BundleError with one sentence naming the file, the array or key and what was expected."""
    kind_of(bundle).check(bundle)


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
