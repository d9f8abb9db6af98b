"""Train CEIR end to end and write it as a bundle; load a bundle back.

Steps (CEIR, Cui et al. 2023):
1. CLIP image embeddings of the train and test splits; text embeddings of the concept bank.
2. Bank filters: length, near-duplicates (text-embedding cosine), optionally closeness to class
   names (off by default, as in the paper), concepts that never activate on training images.
3. Bias-free projection trained with cos^3 on 90 % of TRAIN, early-stopped on the other 10 %;
   concepts whose held-out fidelity is below the cut-off are dropped and the projection refit.
4. z-score the concept activations with train statistics; train the VAE on them (resumable).
5. k-means (k = number of classes by default) on the train latents; test images are assigned to
   the nearest centre. Baselines on the same images: k-means on CLIP embeddings and on concept
   vectors.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.backbones.clip import Backbone, load_backbone
from core.bundle import BundleError, check_shapes, load_bundle, save_bundle
from core.ceir import concept_bank as banks
from core.ceir.bottleneck import ProjectionConfig, ZScore, teacher_similarities, train_projection
from core.ceir.clustering import evaluate_clusterings, fit_kmeans
from core.ceir.model import CEIRModel
from core.ceir.vae import VAEConfig, train_vae
from core.data.spec import DataSpec, ImageSplit, ToyBirdsSplit, open_split
from core.progress import Progress, no_progress
from core.runtime import resolve_device, seed_everything
from core.training import checkpoint_path, prepare_output

KIND = "ceir"


@dataclass
class CEIRConfig:
    projection: ProjectionConfig = field(default_factory=ProjectionConfig)
    vae: VAEConfig = field(default_factory=VAEConfig)
    n_clusters: int | None = None  # default: number of classes
    near_duplicate_threshold: float = 0.95
    class_name_threshold: float | None = None  # off by default, as in the paper
    min_top_activation: float | None = 0.25  # top-5 mean cosine, the Label-free CBM default; None: off
    seed: int = 0
    device: str = "auto"
    half: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"vae": self.vae.to_dict()}


@dataclass
class LoadedCEIR:
    path: Path
    model: CEIRModel
    backbone: Backbone
    data: DataSpec
    config: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def concepts(self) -> list[str]:
        return self.model.concepts

    @property
    def metrics(self) -> dict[str, Any]:
        return self.config.get("metrics", {})


def image_embeddings(backbone: Backbone, split: ImageSplit, progress: Progress = no_progress) -> torch.Tensor:
    """L2-normalised CLIP image embeddings of a whole split (CPU)."""
    return backbone.encode_images(backbone.preprocess_split(split, progress=progress)).cpu()


def filter_bank(
    concepts: list[str],
    backbone: Backbone,
    train_embeddings: torch.Tensor,
    class_names: list[str],
    config: CEIRConfig,
    log=print,
) -> tuple[list[str], dict[str, str]]:
    """Apply the bank filters in order; returns the kept concepts and why each other one went."""
    removed: dict[str, str] = {}
    kept, why = banks.filter_by_length(concepts)
    removed |= why
    text = backbone.encode_texts(kept).cpu().numpy()
    kept_next, why = banks.filter_near_duplicates(kept, text, config.near_duplicate_threshold)
    removed |= why
    text = text[[kept.index(c) for c in kept_next]]
    kept = kept_next
    if config.class_name_threshold is not None:
        class_text = backbone.encode_texts(class_names).cpu().numpy()
        kept_next, why = banks.filter_close_to_classes(
            kept, text, class_names, class_text, config.class_name_threshold
        )
        removed |= why
        text = text[[kept.index(c) for c in kept_next]]
        kept = kept_next
    if config.min_top_activation is not None:
        activations = teacher_similarities(train_embeddings, torch.from_numpy(text)).numpy()
        kept, why = banks.filter_never_activated(kept, activations, config.min_top_activation, top_k=5)
        removed |= why
    if len(kept) < 2:
        raise ValueError(f"Only {len(kept)} concepts survive the bank filters; CEIR needs at least 2.")
    log(f"Concept bank: kept {len(kept)} of {len(concepts)} concepts.")
    return kept, removed


def fit_bottleneck(
    backbone: Backbone, concepts: list[str], train_embeddings: torch.Tensor, config: CEIRConfig, log=print
) -> tuple[list[str], torch.nn.Linear, np.ndarray, dict[str, str]]:
    """Fit the projection, drop low-fidelity concepts, refit on the rest."""
    text = backbone.encode_texts(concepts).cpu()
    teacher = teacher_similarities(train_embeddings, text)
    result = train_projection(train_embeddings, teacher, config.projection)
    kept, removed = banks.filter_by_fidelity(concepts, result.fidelity, config.projection.fidelity_cutoff)
    if len(kept) < 2:
        raise ValueError(
            f"Only {len(kept)} concepts reach the fidelity cut-off "
            f"{config.projection.fidelity_cutoff}; lower it or use a richer bank."
        )
    if len(kept) < len(concepts):
        log(f"Fidelity cut-off {config.projection.fidelity_cutoff}: kept {len(kept)}/{len(concepts)}; refit.")
        index = [concepts.index(c) for c in kept]
        result = train_projection(train_embeddings, teacher[:, index], config.projection)
    return kept, result.projection, result.fidelity, removed


def concept_precision_at_5(concepts: list[str], concept_vectors: np.ndarray, split: ToyBirdsSplit) -> float:
    """Share of each image's top-5 positive concepts that are true attributes of its species (ToyBirds).

    The true attributes are the species' head, wing and body colours (``toybirds_concept_truth``);
    nuisance concepts (crest, wing pattern, tail) and distractors count as misses, so with three
    true concepts per species the best possible value is 3/5.
    """
    from core.data.toybirds import SPECIES

    truth = np.array([[banks.toybirds_concept_truth(c, s) is True for c in concepts] for s in SPECIES])
    shares = []
    for vector, label in zip(concept_vectors, split.labels, strict=True):
        top = [i for i in np.argsort(-vector, kind="stable")[:5] if vector[i] > 0]
        if top:
            shares.append(truth[label, top].mean())
    return float(np.mean(shares)) if shares else 0.0


def train_ceir(
    backbone_spec: str | dict,
    data: DataSpec,
    bank: str,
    config: CEIRConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: Progress = no_progress,
    log=print,
) -> Path:
    """The whole CEIR pipeline; writes a ``ceir`` bundle at ``out_dir``."""
    out = prepare_output(out_dir, resume, overwrite)
    device = resolve_device(config.device)
    seed_everything(config.seed)
    concept_source = banks.load_bank(bank)
    for issue in concept_source.issues:
        log(f"concept bank: {issue}")
    backbone = load_backbone(backbone_spec, device=device)
    train_split, test_split = open_split(data, "train"), open_split(data, "test")
    started = time.perf_counter()
    log(f"Embedding {len(train_split)} train and {len(test_split)} test images ...")
    train_emb, test_emb = (
        image_embeddings(backbone, train_split, progress),
        image_embeddings(backbone, test_split),
    )

    concepts, removed = filter_bank(
        concept_source.concepts, backbone, train_emb, train_split.classes, config, log
    )
    concepts, projection, fidelity, low_fidelity = fit_bottleneck(backbone, concepts, train_emb, config, log)
    removed |= low_fidelity
    with torch.no_grad():
        raw_train = projection(train_emb)
    zscore = ZScore.fit(raw_train)
    z_train = zscore(raw_train)

    from core.ceir.bottleneck import split_holdout

    fit_idx, val_idx = split_holdout(len(z_train), config.projection.val_fraction, config.seed)
    vae_config = config.vae
    vae, vae_history = train_vae(
        z_train[fit_idx],
        vae_config,
        x_val=z_train[val_idx],
        checkpoint=checkpoint_path(out),
        resume=resume,
        progress=progress,
        log=log,
    )
    k = config.n_clusters or len(train_split.classes)
    model = CEIRModel(train_emb.shape[1], concepts, vae_config, k)
    model.projection.load_state_dict(projection.state_dict())
    model.vae.load_state_dict(vae.state_dict())
    model.zscore_mean.copy_(zscore.mean)
    model.zscore_std.copy_(zscore.std)
    model.concept_embeddings.copy_(backbone.encode_texts(concepts).cpu())
    model.eval()
    with torch.no_grad():
        latent_train = model.latent(z_train)
    _, kmeans = fit_kmeans(latent_train.numpy(), k, seed=config.seed)
    model.cluster_centers.copy_(torch.from_numpy(kmeans.centers).float())
    seconds = time.perf_counter() - started

    metrics = evaluate_arrays(model, train_split, test_split, train_emb, test_emb, seed=config.seed)
    arrays = {
        "train_concepts": z_train.numpy().astype(np.float32),
        "train_latents": latent_train.numpy().astype(np.float32),
        "train_clusters": model.assign(latent_train).numpy().astype(np.int64),
        "train_labels": train_split.labels.astype(np.int64),
        "train_ids": np.array([train_split.image_id(i) for i in range(len(train_split))]),
        "concept_fidelity": fidelity.astype(np.float32),
    }
    bundle_config = {
        "backbone": backbone.reference,
        "data": data.to_dict(),
        "concept_bank": {
            "source": concept_source.source,
            "n_input": len(concept_source.concepts),
            "removed": removed,
        },
        "concepts": concepts,
        "classes": list(train_split.classes),
        "ceir": config.to_dict() | {"n_clusters": k},
        "train": {"seconds": round(seconds, 1), "vae_history": vae_history},
        "metrics": metrics,
    }
    save_bundle(
        out,
        kind=KIND,
        config=bundle_config,
        weights=model.state_dict(),
        arrays=arrays,
        half=config.half,
        overwrite=overwrite,
    )
    checkpoint_path(out).unlink(missing_ok=True)
    return out


def evaluate_arrays(
    model: CEIRModel,
    train_split: ImageSplit,
    test_split: ImageSplit,
    train_emb: torch.Tensor,
    test_emb: torch.Tensor,
    seed: int = 0,
) -> dict[str, Any]:
    """Clustering of the test split by CEIR (fixed centres) and the two baselines (k-means fit on train).

    Concept vectors and latents are derived from the embeddings by the trained model itself.
    """
    from core.ceir.clustering import clustering_scores

    with torch.no_grad():
        z_train, z_test = model.concept_vectors(train_emb), model.concept_vectors(test_emb)
        predicted = model.assign(model.latent(z_test)).numpy()
    metrics: dict[str, Any] = dict(clustering_scores(test_split.labels, predicted))
    metrics["baselines"] = evaluate_clusterings(
        {
            "clip_embedding": (train_emb.numpy(), test_emb.numpy()),
            "concepts": (z_train.numpy(), z_test.numpy()),
        },
        test_split.labels,
        model.n_clusters,
        seed=seed,
    )
    metrics["n_train"], metrics["n_test"], metrics["n_concepts"] = (
        len(train_split),
        len(test_split),
        len(model.concepts),
    )
    if isinstance(test_split, ToyBirdsSplit):
        metrics["concept_precision_at_5"] = concept_precision_at_5(model.concepts, z_test.numpy(), test_split)
    return metrics


def load_ceir(path: str | Path, device: str = "auto") -> LoadedCEIR:
    """Load a CEIR bundle and its backbone."""
    bundle = load_bundle(path, kind=KIND)
    concepts = list(bundle.config.get("concepts") or [])
    settings = bundle.section("ceir")
    vae_config = VAEConfig.from_dict(settings.get("vae", {}))
    weights = bundle.weights
    if "cluster_centers" not in weights or "projection.weight" not in weights:
        raise ValueError(f"The bundle {bundle.path} lacks CEIR weights (projection, cluster centres).")
    embed_dim = weights["projection.weight"].shape[1]
    model = CEIRModel(embed_dim, concepts, vae_config, int(weights["cluster_centers"].shape[0]))
    check_shapes(weights, {k: tuple(v.shape) for k, v in model.state_dict().items()}, path=bundle.path)
    model.load_state_dict(weights)
    model.eval()
    backbone = load_backbone(
        bundle.section("backbone"), device=resolve_device(device), relative_to=bundle.path
    )
    if backbone.embed_dim != embed_dim:
        raise BundleError(
            f"Bundle {bundle.path} has weights for image embeddings of {embed_dim} numbers, but its backbone "
            f"{backbone.describe()} gives {backbone.embed_dim}; it was trained on another backbone."
        )
    return LoadedCEIR(
        bundle.path, model, backbone, DataSpec.from_dict(bundle.section("data")), bundle.config, bundle.arrays
    )


def evaluate_bundle(path: str, seed: int | None = None, device: str = "auto") -> dict[str, Any]:
    """``conceptlens eval`` for CEIR: clustering metrics with baselines (fresh ToyBirds with ``seed``)."""
    loaded = load_ceir(path, device=device)
    data = loaded.data if seed is None else loaded.data.with_seed(seed)
    train_split, test_split = open_split(data, "train"), open_split(data, "test")
    train_emb, test_emb = (
        image_embeddings(loaded.backbone, train_split),
        image_embeddings(loaded.backbone, test_split),
    )
    seed = int(loaded.config.get("ceir", {}).get("seed", 0))
    metrics = evaluate_arrays(loaded.model, train_split, test_split, train_emb, test_emb, seed=seed)
    return {"kind": KIND, "bundle": str(loaded.path), "data": data.to_dict(), **metrics}
