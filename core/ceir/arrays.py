"""The cached arrays of a CEIR bundle: named keys and their layout (free of PyTorch)."""

from __future__ import annotations

from core.bundle import ArrayLayout, nested_value

# The cached arrays, one row per train image: concept vectors, latents, cluster and class indices, ids,
# the 2-D map of the latents (added on first view), each concept's contribution to the image's cluster
# (Integrated Gradients, so the dashboard draws them without running the model; bundles saved before it have
# none, and the page then computes them), and one fidelity per concept.
TRAIN_CONCEPTS, TRAIN_LATENTS, TRAIN_CLUSTERS, TRAIN_LABELS = (
    "train_concepts",
    "train_latents",
    "train_clusters",
    "train_labels",
)
TRAIN_IDS, TRAIN_UMAP, CONCEPT_FIDELITY = "train_ids", "train_umap", "concept_fidelity"
TRAIN_CONTRIBUTIONS = "train_contributions"
OOD_REFERENCE = "ood_reference"  # train image embeddings the out-of-distribution warning compares with


def _array_sizes(config: dict) -> dict:
    concepts = config.get("concepts")
    return {
        "concepts": len(concepts) if isinstance(concepts, list) else None,
        "latent_dim": nested_value(config, "ceir", "vae", "latent_dim"),
    }


ARRAYS = ArrayLayout(
    {
        TRAIN_CONCEPTS: ("rows", "concepts"),
        TRAIN_LATENTS: ("rows", "latent_dim"),
        TRAIN_CLUSTERS: ("rows",),
        TRAIN_LABELS: ("rows",),
        TRAIN_IDS: ("rows",),
        TRAIN_UMAP: ("rows", 2),
        TRAIN_CONTRIBUTIONS: ("rows", "concepts"),
        CONCEPT_FIDELITY: ("concepts",),
    },
    required=(TRAIN_CONCEPTS, TRAIN_LATENTS, TRAIN_CLUSTERS, TRAIN_LABELS),
    sizes=_array_sizes,
)
