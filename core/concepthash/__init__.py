"""ConceptHash: interpretable fine-grained hashing via concept tokens (Ng et al., CVPR-W 2024)."""

from core.concepthash.attention import concept_heatmaps
from core.concepthash.bundle import LoadedConceptHash, load_concepthash
from core.concepthash.model import ConceptHash, ConceptHashConfig, ConceptHashOutput
from core.concepthash.train import TrainConfig, train_concepthash

__all__ = [
    "ConceptHash",
    "ConceptHashConfig",
    "ConceptHashOutput",
    "LoadedConceptHash",
    "TrainConfig",
    "concept_heatmaps",
    "load_concepthash",
    "train_concepthash",
]
