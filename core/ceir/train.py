"""Train CEIR end to end and write it as a bundle (loaded back by ``core.ceir.bundle``, scored by
``core.ceir.evaluate``).

Steps (CEIR, Cui et al. 2023, on Label-free CBM):
1. CLIP image embeddings of the train and test splits; text embeddings of the concept bank. With a
   ``teacher`` backbone (the paper projects ViT-L/14 features onto ViT-B/16 concept similarities), the
   teacher's image and text towers give the concept similarities and ``backbone`` gives the features.
2. Bank filters, every threshold relative to the bank (see ``bank_filters``): length, unrelated to every
   class name, near-duplicates, never activated on training images. Optionally the class names are then
   appended to the bank (the paper does; ``include_class_names``) and the concept text embeddings centred
   (``centre_concepts``: subtract their mean, so a concept scores what sets it apart from the others).
3. Bias-free projection trained with cos^3 on 90 % of TRAIN, early-stopped on the other 10 %;
   concepts whose held-out fidelity (a correlation, on the same scale for any backbone) is below the
   cut-off are dropped and the projection refit.
4. z-score the concept activations with train statistics; train the VAE on them (resumable).
5. k-means (k = number of classes by default) on the train latents; test images are assigned to
   the nearest centre. ``evaluate_arrays`` scores this inductive protocol and the paper's transductive
   one (VAE on train + test, k-means fit and scored on test), each with raw-CLIP and concept-vector
   baselines and mean +- std over k-means seeds.
6. Every train image's concept contributions to its cluster (Integrated Gradients), stored for the app.

Each step is a named phase (:data:`PHASES`, then the evaluation's ``evaluation: ...`` phases): the progress
callback hears its name before its first ``(done, total)``, the log gets one line, and the bundle records
``train.seconds`` (the wall time of the whole call, evaluation included, up to writing the bundle) and
``train.phase_seconds`` (each phase's share of it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core.backbones.clip import Backbone, load_backbone
from core.bundle import save_bundle
from core.ceir import arrays as arr
from core.ceir import bank_filters as filters
from core.ceir.bottleneck import (
    ZScore,
    split_holdout,
    teacher_similarities,
    train_projection,
)
from core.ceir.bundle import KIND, image_embeddings
from core.ceir.clustering import fit_kmeans
from core.ceir.concept_bank import RAW_TEMPLATE, ConceptBank, apply_template, check_template, load_bank
from core.ceir.config import CEIRConfig
from core.ceir.evaluate import evaluate_arrays
from core.ceir.explain import contributions_in_batches
from core.ceir.labels import even_subsample
from core.ceir.model import CEIRModel
from core.ceir.projection2d import DEFAULT_NEIGHBORS, DEFAULT_SEED, MAX_WAITED_POINTS, umap_2d
from core.ceir.vae import train_vae
from core.data.spec import DataSpec, open_split
from core.data.stored import prints_key, split_prints
from core.distributed import DistContext, distributed_run, main_rank_only
from core.progress import PhaseClock, Progress, no_progress
from core.runtime import seed_everything
from core.training import checkpoint_path, prepare_output


def filter_bank(
    concepts: list[str],
    backbone: Backbone,
    train_embeddings: torch.Tensor,
    class_names: list[str],
    config: CEIRConfig,
    log=print,
) -> tuple[list[str], dict[str, dict[str, str]]]:
    """Apply the bank filters in order; returns the kept concepts and, per filter, why each other one went.

    ``backbone`` and ``train_embeddings`` are the teacher's (the towers the concept similarities come from).
    """
    removed: dict[str, dict[str, str]] = {}
    kept, removed["length"] = filters.filter_by_length(concepts)
    text = encode_concepts(backbone, kept, config).cpu().numpy()

    def keep(kept_next: list[str]) -> list[str]:
        nonlocal text
        text = text[[kept.index(c) for c in kept_next]]
        return kept_next

    needs_class_text = config.class_name_threshold is not None or config.class_relevance_fraction is not None
    class_text = backbone.encode_texts(class_names).cpu().numpy() if needs_class_text else None
    if config.class_name_threshold is not None:
        kept_next, removed["class_name"] = filters.filter_close_to_classes(
            kept, text, class_names, class_text, config.class_name_threshold
        )
        kept = keep(kept_next)
    if config.class_relevance_fraction is not None:
        kept_next, removed["class_relevance"] = filters.filter_class_irrelevant(
            kept, text, class_text, config.class_relevance_fraction
        )
        kept = keep(kept_next)
    threshold = filters.relative_duplicate_threshold(text, config.near_duplicate_fraction)
    kept_next, removed["near_duplicate"] = filters.filter_near_duplicates(kept, text, threshold)
    kept = keep(kept_next)
    if config.activation_fraction is not None:
        activations = teacher_similarities(train_embeddings, torch.from_numpy(text)).numpy()
        kept, removed["never_activated"] = filters.filter_never_activated(
            kept, activations, config.activation_fraction, top_k=5
        )
    if len(kept) < 2:
        raise ValueError(f"Only {len(kept)} concepts survive the bank filters; CEIR needs at least 2.")
    counts = ", ".join(f"{name} {len(why)}" for name, why in removed.items() if why)
    summary = f" (removed: {counts})." if counts else "."
    log(f"Concept bank: kept {len(kept)} of {len(concepts)} concepts{summary}")
    return kept, removed


def with_bank_template(config: CEIRConfig, bank: ConceptBank) -> CEIRConfig:
    """``config`` with its concept template settled: its own if set (checked), else the bank's."""
    template = bank.template if config.concept_template is None else check_template(config.concept_template)
    return replace(config, concept_template=template)


def encode_concepts(
    backbone: Backbone, concepts: list[str], config: CEIRConfig, bare: Sequence[str] = ()
) -> torch.Tensor:
    """Text embeddings of ``concepts``, each read in the run's caption template except those in ``bare``
    (appended class names, read as the paper reads them: as they are)."""
    captions = apply_template(config.concept_template or RAW_TEMPLATE, concepts)
    return backbone.encode_texts([c if c in bare else t for c, t in zip(concepts, captions, strict=True)])


def with_class_names(concepts: list[str], class_names: list[str]) -> list[str]:
    """The bank with every class name appended (the paper's choice), each once whatever its case."""
    seen = {c.casefold() for c in concepts}
    return concepts + [name for name in class_names if name.casefold() not in seen]


def concept_text(
    backbone: Backbone, concepts: list[str], config: CEIRConfig, bare: Sequence[str] = ()
) -> torch.Tensor:
    """(C, D) concept text embeddings (``bare`` as in :func:`encode_concepts`); ``config.centre_concepts``
    subtracts their mean so each concept scores what sets it apart from the rest of the bank (the shared
    "a bird" direction otherwise dominates every cosine)."""
    text = F.normalize(encode_concepts(backbone, concepts, config, bare).cpu().float(), dim=-1)
    return text - text.mean(dim=0, keepdim=True) if config.centre_concepts else text


def fit_bottleneck(
    concepts: list[str],
    train_embeddings: torch.Tensor,
    teacher: torch.Tensor,
    config: CEIRConfig,
    log=print,
    ctx: DistContext | None = None,
    progress: Progress = no_progress,
) -> tuple[list[str], torch.nn.Linear, np.ndarray, list[int], dict[str, str]]:
    """Fit the projection from ``train_embeddings`` onto the ``teacher`` similarities, drop low-fidelity
    concepts and refit on the rest. Returns the kept concepts, the projection, their fidelity, their columns
    in ``teacher`` and why the others went."""
    result = train_projection(train_embeddings, teacher, config.projection, progress=progress, ctx=ctx)
    kept, removed = filters.filter_by_fidelity(concepts, result.fidelity, config.projection.fidelity_cutoff)
    if len(kept) < 2:
        raise ValueError(
            f"Only {len(kept)} concepts reach the fidelity cut-off "
            f"{config.projection.fidelity_cutoff}; lower it or use a richer bank."
        )
    index = [concepts.index(c) for c in kept]
    if len(kept) < len(concepts):
        log(f"Fidelity cut-off {config.projection.fidelity_cutoff}: kept {len(kept)}/{len(concepts)}; refit.")
        result = train_projection(
            train_embeddings, teacher[:, index], config.projection, progress=progress, ctx=ctx
        )
    return kept, result.projection, result.fidelity, index, removed


PHASES = ("embedding", "concept bank", "projection", "vae", "k-means", "contributions")
CONTRIBUTION_ROWS_PER_REPORT = 1024  # train images explained between two progress reports


def train_contributions(
    model: CEIRModel, concept_vectors: np.ndarray, clusters: np.ndarray, progress: Progress = no_progress
) -> np.ndarray:
    """(N, C) contributions of every train image's concepts to its cluster, as
    :func:`~core.ceir.explain.contributions_in_batches` computes them (whole batches of it, the same numbers),
    reporting ``progress(rows done, N)`` every :data:`CONTRIBUTION_ROWS_PER_REPORT` rows."""
    n = len(concept_vectors)
    parts = []
    for start in range(0, n, CONTRIBUTION_ROWS_PER_REPORT):
        stop = min(n, start + CONTRIBUTION_ROWS_PER_REPORT)
        parts.append(contributions_in_batches(model, concept_vectors[start:stop], clusters[start:stop]))
        progress(stop, n)
    return np.concatenate(parts) if parts else contributions_in_batches(model, concept_vectors, clusters)


@dataclass
class FittedCEIR:
    """A trained CEIR model and what training it found out."""

    model: CEIRModel
    removed: dict[str, dict[str, str]]  # per filter: concept -> why it went
    fidelity: np.ndarray  # (C,) held-out cos^3 fidelity of each kept concept
    history: list[dict]  # VAE epochs


def fit_ceir(
    bank: list[str],
    class_names: list[str],
    train_embeddings: torch.Tensor,
    teacher: Backbone,
    teacher_train: torch.Tensor,
    config: CEIRConfig,
    *,
    checkpoint: Path | None = None,
    resume: bool = False,
    progress: Progress = no_progress,
    log=print,
    ctx: DistContext | None = None,
    clock: PhaseClock | None = None,
) -> FittedCEIR:
    """Steps 2-5 on embeddings already computed: filters, projection, z-scores, VAE and k-means centres.

    ``train_embeddings`` are the features the model will take; ``teacher`` and ``teacher_train`` (the same
    backbone and tensor unless a teacher is configured) give the concept similarities it learns. Under
    torchrun (``ctx``) the projection and the VAE train on each rank's slice of every batch; the filters
    and k-means are cheap and deterministic, so every rank runs them alike. ``clock`` (default: one on
    ``progress`` and ``log``) names and times the phases ``concept bank``, ``projection``, ``vae`` and
    ``k-means``.
    """
    clock = clock or PhaseClock(progress, log)
    seed_everything(config.seed)
    with clock.phase("concept bank", f"Filtering the concept bank ({len(bank)} concepts) ...") as bar:
        bar(0, 2)
        concepts, removed = filter_bank(bank, teacher, teacher_train, class_names, config, log)
        bar(1, 2)
        appended: list[str] = []
        if config.include_class_names:
            appended = with_class_names(concepts, class_names)[len(concepts) :]
            concepts = concepts + appended
        text = concept_text(teacher, concepts, config, bare=appended)
        bar(2, 2)
    with clock.phase("projection", f"Training the concept projection ({len(concepts)} concepts) ...") as bar:
        concepts, projection, fidelity, columns, removed["fidelity"] = fit_bottleneck(
            concepts, train_embeddings, teacher_similarities(teacher_train, text), config, log, ctx, bar
        )
    text = text[columns]
    with torch.no_grad():
        raw_train = projection(train_embeddings)
    zscore = ZScore.fit(raw_train)
    z_train = zscore(raw_train)
    fit_idx, val_idx = split_holdout(len(z_train), config.projection.val_fraction, config.seed)
    with clock.phase("vae", f"Training the VAE ({config.vae.epochs} epochs) ...") as bar:
        vae, history = train_vae(
            z_train[fit_idx],
            config.vae,
            x_val=z_train[val_idx],
            checkpoint=checkpoint,
            resume=resume,
            progress=bar,
            log=log,
            ctx=ctx,
        )
    k = config.n_clusters or len(class_names)
    model = CEIRModel(train_embeddings.shape[1], concepts, config.vae, k, text_dim=text.shape[1])
    model.projection.load_state_dict(projection.state_dict())
    model.vae.load_state_dict(vae.state_dict())
    model.zscore_mean.copy_(zscore.mean)
    model.zscore_std.copy_(zscore.std)
    model.concept_embeddings.copy_(text)
    model.eval()
    with torch.no_grad():
        latent_train = model.latent(z_train)
    restarts = config.kmeans_restarts
    with clock.phase(
        "k-means", f"k-means: {k} clusters, {restarts} restarts on the train latents ..."
    ) as bar:
        _, kmeans = fit_kmeans(latent_train.numpy(), k, seed=config.seed, n_init=restarts, progress=bar)
    model.cluster_centers.copy_(torch.from_numpy(kmeans.centers).float())
    return FittedCEIR(model, removed, fidelity, history)


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
    """The whole CEIR pipeline; writes a ``ceir`` bundle at ``out_dir``.

    Under ``torchrun`` every process embeds the images and trains the projection and the VAE on its slice of
    each batch (see :mod:`core.distributed`); rank 0 alone evaluates and writes the checkpoint and bundle.
    """
    with distributed_run(config.device) as ctx:
        progress, log = main_rank_only(ctx, progress, log)
        return _train_ceir(ctx, backbone_spec, data, bank, config, out_dir, resume, overwrite, progress, log)


def _train_ceir(
    ctx: DistContext,
    backbone_spec: str | dict,
    data: DataSpec,
    bank: str,
    config: CEIRConfig,
    out_dir: str | Path,
    resume: bool,
    overwrite: bool,
    progress: Progress,
    log,
) -> Path:
    clock = PhaseClock(progress, log)  # the recorded seconds count from here
    out = prepare_output(out_dir, resume, overwrite)
    device = ctx.device
    concept_source = load_bank(bank)
    for issue in concept_source.issues:
        log(f"concept bank: {issue}")
    config = with_bank_template(config, concept_source)
    backbone = load_backbone(backbone_spec, device=device)
    teacher = backbone if config.teacher is None else load_backbone(config.teacher, device=device)
    train_split, test_split = open_split(data, "train"), open_split(data, "test")
    message = f"Embedding {len(train_split)} train and {len(test_split)} test images ..."
    with clock.phase("embedding", message) as bar:
        train_emb, test_emb = (
            image_embeddings(backbone, train_split, bar),
            image_embeddings(backbone, test_split, bar),
        )
        teacher_train = train_emb if teacher is backbone else image_embeddings(teacher, train_split, bar)
    fitted = fit_ceir(
        concept_source.concepts,
        list(train_split.classes),
        train_emb,
        teacher,
        teacher_train,
        config,
        checkpoint=checkpoint_path(out),
        resume=resume,
        progress=progress,
        log=log,
        ctx=ctx,
        clock=clock,
    )
    if not ctx.is_main:
        return out  # rank 0 evaluates and writes the bundle
    model, removed, fidelity, vae_history = fitted.model, fitted.removed, fitted.fidelity, fitted.history
    with torch.no_grad():
        z_train = model.concept_vectors(train_emb)
        latent_train = model.latent(z_train)
        clusters_train = model.assign(latent_train).numpy().astype(np.int64)
    message = f"Concept contributions of the {len(train_split)} train images (Integrated Gradients) ..."
    with clock.phase("contributions", message) as bar:
        contributions = train_contributions(model, z_train.numpy(), clusters_train, bar)
    metrics = evaluate_arrays(
        model,
        config.vae,
        train_split,
        test_split,
        train_emb,
        test_emb,
        seed=config.seed,
        kmeans_restarts=config.kmeans_restarts,
        clock=clock,
    )
    arrays = {
        arr.TRAIN_CONCEPTS: z_train.numpy().astype(np.float32),
        arr.TRAIN_LATENTS: latent_train.numpy().astype(np.float32),
        arr.TRAIN_CLUSTERS: clusters_train,
        arr.TRAIN_LABELS: train_split.labels.astype(np.int64),
        arr.TRAIN_IDS: np.array([train_split.image_id(i) for i in range(len(train_split))]),
        arr.TRAIN_CONTRIBUTIONS: contributions,
        arr.CONCEPT_FIDELITY: fidelity.astype(np.float32),
        arr.OOD_REFERENCE: even_subsample(train_emb.numpy()),  # for the out-of-distribution warning
    }
    prints = split_prints(train_split)  # files' fingerprints: a file edited in place is then noticed
    if prints is not None:
        arrays[prints_key(arr.TRAIN_IDS)] = prints
    if len(train_split) > MAX_WAITED_POINTS:  # smaller maps are made on first view, in seconds
        with clock.phase("2-d map", f"A UMAP map of the {len(train_split)} latents for the dashboard ..."):
            arrays[arr.TRAIN_UMAP] = umap_2d(latent_train.numpy(), DEFAULT_SEED, DEFAULT_NEIGHBORS)
    bundle_config = {
        "backbone": backbone.reference,
        **({} if teacher is backbone else {"teacher": teacher.reference}),
        "data": data.to_dict(),
        "concept_bank": {
            "source": concept_source.source,
            "n_input": len(concept_source.concepts),
            "template": config.concept_template,
            "removed": removed,
        },
        "concepts": model.concepts,
        "classes": list(train_split.classes),
        "ceir": config.to_dict() | {"n_clusters": model.n_clusters},
        "train": {
            "seconds": round(clock.elapsed(), 1),
            "phase_seconds": clock.rounded(),
            "vae_history": vae_history,
        },
        "metrics": metrics,
    }
    log(f"Trained and evaluated in {clock.elapsed():.0f} s; writing the bundle to {out} ...")
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
