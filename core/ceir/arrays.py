"""The cached arrays of a CEIR bundle: named keys and their layout (free of PyTorch)."""

from __future__ import annotations

from core.validate import (
    AMOUNT,
    COMMON_NUMBERS,
    FINITE,
    SEED,
    SHARE,
    WHOLE_WEIGHTS,
    ArrayLayout,
    Number,
    count,
    ids_below,
    nested_value,
    optional,
    size,
)

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
TRAIN_PRINTS = "train_prints"  # files' fingerprints beside their ids (core.data.stored.prints_key)


def _array_sizes(config: dict) -> dict:
    concepts, classes = config.get("concepts"), config.get("classes")
    return {
        "concepts": len(concepts) if isinstance(concepts, list) else None,
        "latent_dim": nested_value(config, "ceir", "vae", "latent_dim"),
        "classes": len(classes) if isinstance(classes, list) and classes else None,
    }


# Every number of the "ceir" section (core.ceir.config.CEIRConfig and the projection and VAE inside it).
CEIR_NUMBERS: dict[str, Number] = {
    "ceir.projection.steps": size(10**9),
    "ceir.projection.batch_size": size(10**6),
    "ceir.projection.lr": AMOUNT,
    "ceir.projection.val_fraction": SHARE,
    "ceir.projection.eval_every": size(10**9),
    "ceir.projection.patience": size(10**6),
    "ceir.projection.fidelity_cutoff": Number(-1, 1),  # a cosine: -1 keeps every concept
    "ceir.projection.seed": SEED,
    "ceir.vae.latent_dim": size(65536),
    "ceir.vae.hidden_dims[]": size(65536),
    "ceir.vae.beta": AMOUNT,
    "ceir.vae.epochs": size(10**6),
    "ceir.vae.batch_size": Number(2, 10**6, whole=True),
    "ceir.vae.lr": Number(0, above_low=True),
    "ceir.vae.weight_decay": AMOUNT,
    "ceir.vae.warmup_epochs": count(10**6),
    "ceir.vae.seed": SEED,
    "ceir.n_clusters": optional(size(10**6)),
    "ceir.near_duplicate_fraction": SHARE,
    "ceir.class_name_threshold": optional(Number(0, 2)),
    "ceir.class_relevance_fraction": optional(SHARE),
    "ceir.activation_fraction": optional(SHARE),
    "ceir.kmeans_restarts": size(10**6),
    "ceir.seed": SEED,
}


# Checked on every load: one row per train image in every table array (the OOD reference has rows of its own,
# as wide as the backbone's image embeddings, the width the projection's weights take), finite numbers, class
# ids naming a class of config.json's list, cluster ids below the number of stored cluster centres.
ARRAYS = ArrayLayout(
    {
        TRAIN_CONCEPTS: ("rows", "concepts"),
        TRAIN_LATENTS: ("rows", "latent_dim"),
        TRAIN_CLUSTERS: ("rows",),
        TRAIN_LABELS: ("rows",),
        TRAIN_IDS: ("rows",),
        TRAIN_PRINTS: ("rows",),
        TRAIN_UMAP: ("rows", 2),
        TRAIN_CONTRIBUTIONS: ("rows", "concepts"),
        CONCEPT_FIDELITY: ("concepts",),
        OOD_REFERENCE: ("ood_rows", "embed_dim"),
    },
    required=(TRAIN_CONCEPTS, TRAIN_LATENTS, TRAIN_CLUSTERS, TRAIN_LABELS),
    sizes=_array_sizes,
    values={
        TRAIN_CONCEPTS: FINITE,
        TRAIN_LATENTS: FINITE,
        TRAIN_CLUSTERS: ids_below("clusters", "cluster"),
        TRAIN_LABELS: ids_below("classes", "class"),
        TRAIN_UMAP: FINITE,
        TRAIN_CONTRIBUTIONS: FINITE,
        CONCEPT_FIDELITY: FINITE,
        OOD_REFERENCE: FINITE,
    },
    weight_sizes={"embed_dim": ("projection.weight", 1), "clusters": ("cluster_centers", 0)},
    numbers={**COMMON_NUMBERS, **CEIR_NUMBERS},
    whole_weights=WHOLE_WEIGHTS,
    texts=("classes", "concepts"),
)
