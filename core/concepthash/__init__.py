"""ConceptHash: interpretable fine-grained hashing via concept tokens (Ng et al., CVPR-W 2024)."""

from core.lazy import lazy_exports

_EXPORTS = {
    "concept_heatmaps": "core.concepthash.attention",
    "ConceptHash": "core.concepthash.model",
    "ConceptHashConfig": "core.concepthash.config",
    "ConceptHashOutput": "core.concepthash.model",
    "load_concepthash": "core.concepthash.bundle",
    "LoadedConceptHash": "core.concepthash.bundle",
    "train_concepthash": "core.concepthash.train",
    "TrainConfig": "core.concepthash.config",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
