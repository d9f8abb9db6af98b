"""CEIR: concept-based explainable image representations (Cui et al., 2023).

Concept bank -> CLIP concept bottleneck (cos^3) -> VAE latent -> k-means clusters, with
concept-level explanations, interventions and open-world labels.
"""

from core.ceir.bottleneck import cos3_loss, cos3_similarity, teacher_similarities, train_projection
from core.ceir.bundle import LoadedCEIR, load_ceir
from core.ceir.concept_bank import ConceptBank, ConceptBankError, load_bank, parse_concepts, read_concept_file
from core.ceir.explain import cluster_top_concepts, explain, intervene, top_contributions
from core.ceir.model import CEIRModel
from core.ceir.train import CEIRConfig, train_ceir

__all__ = [
    "CEIRConfig",
    "CEIRModel",
    "ConceptBank",
    "ConceptBankError",
    "LoadedCEIR",
    "cluster_top_concepts",
    "cos3_loss",
    "cos3_similarity",
    "explain",
    "intervene",
    "load_bank",
    "load_ceir",
    "parse_concepts",
    "read_concept_file",
    "teacher_similarities",
    "top_contributions",
    "train_ceir",
    "train_projection",
]
