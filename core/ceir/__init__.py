"""CEIR: concept-based explainable image representations (Cui et al., 2023).

Concept bank -> CLIP concept bottleneck (cos^3) -> VAE latent -> k-means clusters, with
concept-level explanations, interventions and open-world labels.
"""

from core.lazy import lazy_exports

_EXPORTS = {
    "CEIRConfig": "core.ceir.config",
    "CEIRModel": "core.ceir.model",
    "cluster_top_concepts": "core.ceir.reading",
    "ConceptBank": "core.ceir.concept_bank",
    "ConceptBankError": "core.ceir.concept_bank",
    "cos3_loss": "core.ceir.bottleneck",
    "cos3_similarity": "core.ceir.bottleneck",
    "explain": "core.ceir.explain",
    "intervene": "core.ceir.explain",
    "load_bank": "core.ceir.concept_bank",
    "load_ceir": "core.ceir.bundle",
    "LoadedCEIR": "core.ceir.bundle",
    "parse_concepts": "core.ceir.concept_bank",
    "read_concept_file": "core.ceir.concept_bank",
    "teacher_similarities": "core.ceir.bottleneck",
    "top_contributions": "core.ceir.reading",
    "train_ceir": "core.ceir.train",
    "train_projection": "core.ceir.bottleneck",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
