"""Evaluate CEIR: clustering under both protocols beside its baselines, and, on ToyBirds, its labels.

* top level (``acc``, ``nmi``, ``ari``) and ``baselines``: the model as shipped (its stored centres) and
  k-means with the model's seed on raw CLIP embeddings and concept vectors, fit on train, test assigned;
* ``protocols.inductive`` / ``protocols.transductive`` (the paper's: VAE on train + test, k-means fit and
  scored on test), each mean and std over ``KMEANS_SEEDS`` k-means seeds;
* ``ig_completeness_error``, and on ToyBirds ``concept_precision_at_5`` (of the top five present concepts,
  :mod:`core.ceir.presence`; with ``concept_top5``: what fills them; ``concept_precision_at_5_above_mean``
  with the training mean as zero point; ``concept_precision_references``: an oracle and a counterfeit),
  ``concept_separation`` and ``labels`` (what ``conceptlens label`` prints, scored against the world);
  ``evaluate_bundle`` adds ``ood_warned_share`` (test images the out-of-distribution warning
  flags) and, on ToyBirds, ``ood_photos`` (the real sample photos it flags).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from core.bundle import update_bundle_arrays
from core.ceir.arrays import TRAIN_CLUSTERS, TRAIN_CONCEPTS, TRAIN_CONTRIBUTIONS
from core.ceir.bundle import KIND, image_embeddings, load_ceir
from core.ceir.clustering import clustering_scores, evaluate_clusterings, offset_progress
from core.ceir.config import CEIRConfig
from core.ceir.explain import IG_STEPS, completeness_error, contributions_in_batches, explain
from core.ceir.labels import ConceptScore, labels_by_share, ood_flags
from core.ceir.model import CEIRModel
from core.ceir.presence import presence_thresholds
from core.ceir.vae import VAEConfig, train_vae
from core.data.spec import ImageSplit, ToyBirdsSplit, open_split
from core.data.toybirds_concepts import (
    toybirds_concept_parts,
    toybirds_concept_truth,
    toybirds_species_colour,
)
from core.progress import PhaseClock, Progress, no_progress

TOP5_VERDICTS = ("true", "wrong_colour", "distractor", "nuisance")


def concept_top5(
    concepts: list[str], concept_vectors: np.ndarray, split: ToyBirdsSplit, thresholds=None
) -> dict[str, float]:
    """What each image's top-5 present concepts are (ToyBirds): the five highest above their ``thresholds``
    (per concept, :func:`~core.ceir.presence.presence_thresholds`; None: 0, the training mean), as shares
    averaged over the images with at least one: ``true`` (a colour of its species' head, wing or body: the
    precision@5), ``wrong_colour`` (another colour of a species part), ``distractor`` (something the world
    never draws, such as "red wattle"), ``nuisance`` (the rest: crest, wing pattern, tail); plus
    ``present_per_image``, the mean count of concepts above their thresholds, and ``positives_per_image``,
    above the training mean."""
    from core.data.toybirds import SPECIES

    vectors = np.asarray(concept_vectors, dtype=np.float64)
    margins = vectors - (np.zeros(len(concepts)) if thresholds is None else np.asarray(thresholds))
    truth = [[toybirds_concept_truth(c, s) for c in concepts] for s in SPECIES]
    distractor = [toybirds_concept_parts(c) is None for c in concepts]

    def verdict(label: int, j: int) -> str:
        if truth[label][j] is not None:
            return "true" if truth[label][j] else "wrong_colour"
        return "distractor" if distractor[j] else "nuisance"

    shares = []
    for margin, vector, label in zip(margins, vectors, split.labels, strict=True):
        top = [j for j in np.argsort(-vector, kind="stable") if margin[j] > 0][:5]
        if top:
            verdicts = [verdict(int(label), int(j)) for j in top]
            shares.append([verdicts.count(v) / len(top) for v in TOP5_VERDICTS])
    mean = np.mean(shares, axis=0) if shares else np.zeros(len(TOP5_VERDICTS))
    return {
        **{v: float(x) for v, x in zip(TOP5_VERDICTS, mean, strict=True)},
        "present_per_image": float((margins > 0).sum(axis=1).mean()),
        "positives_per_image": float((vectors > 0).sum(axis=1).mean()),
    }


def reference_vectors(concepts: list[str], labels, kind: str) -> np.ndarray:
    """(N, C) concept vectors that know each image's species (ToyBirds), to show what precision@5 can tell
    apart: ``oracle`` scores 1 exactly for the species' own part colours; ``family_only`` scores 1 for every
    part-colour concept in the colour of the body (the family), the reading of a model that sees the body
    colour and not where a colour is; everything else scores 0."""
    from core.data.toybirds import SPECIES

    colours = [toybirds_species_colour(c) for c in concepts]
    rows = []
    for label in labels:
        species = SPECIES[int(label)]
        if kind == "oracle":
            rows.append([toybirds_concept_truth(c, species) is True for c in concepts])
        elif kind == "family_only":
            rows.append([named is not None and named[1] == species.colours["body"] for named in colours])
        else:
            raise ValueError(f"Unknown reference {kind!r}: choose 'oracle' or 'family_only'.")
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(concepts))


def precision_references(concepts: list[str], train: ToyBirdsSplit, test: ToyBirdsSplit) -> dict[str, float]:
    """Precision@5 of the :func:`reference_vectors` (oracle and counterfeit), their presence thresholds fit
    on their own train vectors as the model's are: the figure's best case and one that should fail."""
    references = {}
    for kind in ("oracle", "family_only"):
        thresholds = presence_thresholds(reference_vectors(concepts, train.labels, kind))
        vectors = reference_vectors(concepts, test.labels, kind)
        references[kind] = concept_top5(concepts, vectors, test, thresholds)["true"]
    return references


def concept_precision_at_5(
    concepts: list[str], concept_vectors: np.ndarray, split: ToyBirdsSplit, thresholds=None
) -> float:
    """Share of each image's top-5 present concepts that are true attributes of its species (ToyBirds).

    The true attributes are the species' head, wing and body colours (``toybirds_concept_truth``);
    nuisance concepts (crest, wing pattern, tail) and distractors count as misses. With three true
    concepts per species, an image with five present concepts scores at most 3/5; one with three scores 1.
    """
    return concept_top5(concepts, concept_vectors, split, thresholds)["true"]


def concept_separation(
    concepts: list[str], concept_vectors: np.ndarray, split: ToyBirdsSplit
) -> dict[str, Any]:
    """How cleanly each species-colour concept tells the birds that have it from the others (ToyBirds).

    Per concept such as "red head": the ROC AUC of its score for "the head is red", and its mean score on
    three groups of images: the part has the colour (``present``), another species part has it
    (``elsewhere``: a concept that reads colour without its part scores high here), no part has it
    (``absent``). The summary gives the smallest AUC and each group's mean over the concepts; empty when
    the model keeps no species-colour concept.
    """
    from sklearn.metrics import roc_auc_score

    from core.data.toybirds import SPECIES

    birds = [SPECIES[label].colours for label in split.labels]
    per_concept: dict[str, dict[str, float]] = {}
    for j, concept in enumerate(concepts):
        named = toybirds_species_colour(concept)
        if named is None:
            continue
        part, colour = named
        present = np.array([bird[part] == colour for bird in birds])
        elsewhere = ~present & np.array([colour in bird.values() for bird in birds])
        absent = ~present & ~elsewhere
        if present.all() or not present.any():
            continue
        scores = concept_vectors[:, j]
        per_concept[concept] = {
            "auc": float(roc_auc_score(present, scores)),
            **{
                name: float(scores[mask].mean()) if mask.any() else None  # strict JSON: no NaN
                for name, mask in (("present", present), ("elsewhere", elsewhere), ("absent", absent))
            },
        }
    if not per_concept:
        return {}
    rows = list(per_concept.values())
    summary: dict[str, Any] = {"min_auc": min(row["auc"] for row in rows)}
    for name in ("present", "elsewhere", "absent"):
        values = [row[name] for row in rows if row[name] is not None]
        summary[name] = float(np.mean(values)) if values else None
    return summary | {"per_concept": per_concept}


KMEANS_SEEDS = 3  # k-means restarts from this many seeds per protocol; the report gives mean and std
EVALUATION_PHASES = (  # what evaluate_arrays names, in order, for a progress callback that listens
    "evaluation: k-means, inductive",
    "evaluation: transductive VAE",
    "evaluation: k-means, transductive",
    "evaluation: explanations",
)


def _mean_std(runs: list[dict[str, float]]) -> dict[str, float]:
    """{"acc": mean, "acc_std": std, ...} over runs of the same scores."""
    summary: dict[str, float] = {}
    for key in runs[0]:
        values = [run[key] for run in runs]
        summary[key], summary[f"{key}_std"] = float(np.mean(values)), float(np.std(values))
    return summary


def protocol_runs(
    features: dict[str, tuple[np.ndarray, np.ndarray]],
    labels: np.ndarray,
    k: int,
    seeds: list[int],
    restarts: int = 10,
    progress: Progress = no_progress,
) -> list[dict[str, dict[str, float]]]:
    """One :func:`~core.ceir.clustering.evaluate_clusterings` per k-means seed; ``progress`` counts the
    restarts of every fit together."""
    per_seed = restarts * len(features)
    return [
        evaluate_clusterings(
            features,
            labels,
            k,
            seed=seed,
            restarts=restarts,
            progress=offset_progress(progress, i * per_seed, per_seed * len(seeds)),
        )
        for i, seed in enumerate(seeds)
    ]


def _summary(runs: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {name: _mean_std([run[name] for run in runs]) for name in runs[0]}


def protocol_scores(
    features: dict[str, tuple[np.ndarray, np.ndarray]],
    labels: np.ndarray,
    k: int,
    seeds: list[int],
    restarts: int = 10,
    progress: Progress = no_progress,
) -> dict[str, dict[str, float]]:
    """Per representation, ACC / NMI / ARI of k-means (best of ``restarts`` starts) fit on the first array
    and scored on the second, as mean and std over the k-means ``seeds``."""
    return _summary(protocol_runs(features, labels, k, seeds, restarts, progress))


def evaluate_arrays(
    model: CEIRModel,
    vae_config: VAEConfig,
    train_split: ImageSplit,
    test_split: ImageSplit,
    train_emb: torch.Tensor,
    test_emb: torch.Tensor,
    seed: int = 0,
    kmeans_restarts: int = CEIRConfig.kmeans_restarts,
    clock: PhaseClock | None = None,
) -> dict[str, Any]:
    """Clustering of the test split under both protocols, each beside the raw-CLIP and concept baselines.

    * top level (``acc``, ``nmi``, ``ari``) and ``baselines``: the model as shipped (its stored centres) and
      k-means with the model's seed on the baselines, fit on train and assigned on test;
    * ``protocols.inductive``: the same, with k-means refit on the train features from ``KMEANS_SEEDS`` seeds
      (the first of which is the model's: the baselines are that seed's fits, not fitted twice);
    * ``protocols.transductive`` (the paper's): a VAE trained on train + test concept vectors, k-means fit and
      scored on the test split, for every representation.

    Concept vectors and latents are derived from the embeddings by the trained model itself; every k-means
    keeps the best of ``kmeans_restarts`` starts. ``clock`` names and times the phases (``evaluation: ...``)
    and carries the progress callback; without one the evaluation is silent.
    """
    clock = clock or PhaseClock()
    with torch.no_grad():
        z_train, z_test = model.concept_vectors(train_emb), model.concept_vectors(test_emb)
        latent_train, latent_test = model.latent(z_train), model.latent(z_test)
        predicted = model.assign(latent_test).numpy()
    labels = test_split.labels
    metrics: dict[str, Any] = dict(clustering_scores(labels, predicted))
    clip = (train_emb.numpy(), test_emb.numpy())
    concepts = (z_train.numpy(), z_test.numpy())
    seeds = [seed + i for i in range(KMEANS_SEEDS)]
    latents = (latent_train.numpy(), latent_test.numpy())
    inductive = {"ceir": latents, "clip_embedding": clip, "concepts": concepts}
    k = model.n_clusters
    with clock.phase(
        "evaluation: k-means, inductive",
        f"Evaluating: k-means on train, {len(seeds)} seeds x {len(inductive)} representations x "
        f"{kmeans_restarts} restarts ...",
    ) as progress:
        inductive_runs = protocol_runs(inductive, labels, k, seeds, kmeans_restarts, progress)
    metrics["baselines"] = {name: inductive_runs[0][name] for name in ("clip_embedding", "concepts")}
    with clock.phase(
        "evaluation: transductive VAE", "Evaluating: the transductive VAE on train + test ..."
    ) as progress:
        both = torch.cat([z_train, z_test])
        vae_settings = VAEConfig.from_dict(vae_config.to_dict() | {"seed": seed})
        vae, _ = train_vae(both, vae_settings, progress=progress, log=lambda *_: None)
        with torch.no_grad():
            transductive_latent = vae.encode(z_test)[0].numpy()
    transductive = {
        "ceir": (transductive_latent, transductive_latent),
        "clip_embedding": (clip[1], clip[1]),
        "concepts": (concepts[1], concepts[1]),
    }
    with clock.phase(
        "evaluation: k-means, transductive", "Evaluating: k-means on test (transductive) ..."
    ) as progress:
        transductive_runs = protocol_runs(transductive, labels, k, seeds, kmeans_restarts, progress)
    metrics["protocols"] = {
        "inductive": _summary(inductive_runs),
        "transductive": _summary(transductive_runs),
        "kmeans_seeds": seeds,
        "kmeans_restarts": kmeans_restarts,
    }
    metrics["n_train"], metrics["n_test"], metrics["n_concepts"] = (
        len(train_split),
        len(test_split),
        len(model.concepts),
    )
    with clock.phase(
        "evaluation: explanations", "Evaluating: explanations of the test images ..."
    ) as progress:
        metrics.update(_explanation_metrics(model, train_split, test_split, z_train, z_test, progress))
    return metrics


def _explanation_metrics(
    model: CEIRModel,
    train_split: ImageSplit,
    test_split: ImageSplit,
    z_train: torch.Tensor,
    z_test: torch.Tensor,
    progress: Progress = no_progress,
) -> dict[str, Any]:
    """Integrated Gradients' completeness error on the test split and, on ToyBirds, the concept and label
    metrics of the module docstring; ``progress`` counts the three steps."""
    metrics: dict[str, Any] = {}
    progress(0, 3)
    contributions, clusters = explain(model, z_test)
    progress(1, 3)
    error = completeness_error(model, z_test, clusters, contributions)
    progress(2, 3)
    metrics["ig_completeness_error"] = {
        "median": float(np.median(error)),
        "p95": float(np.percentile(error, 95)),
        "steps": IG_STEPS,
    }
    if isinstance(test_split, ToyBirdsSplit):
        thresholds = presence_thresholds(z_train.numpy())
        metrics["concept_top5"] = concept_top5(model.concepts, z_test.numpy(), test_split, thresholds)
        metrics["concept_precision_at_5"] = metrics["concept_top5"]["true"]
        metrics["concept_top5_above_mean"] = concept_top5(model.concepts, z_test.numpy(), test_split)
        metrics["concept_precision_at_5_above_mean"] = metrics["concept_top5_above_mean"]["true"]
        if isinstance(train_split, ToyBirdsSplit):
            metrics["concept_precision_references"] = precision_references(
                model.concepts, train_split, test_split
            )
        metrics["concept_separation"] = concept_separation(model.concepts, z_test.numpy(), test_split)
        printed = labels_by_share(model.concepts, z_test, contributions, clusters, top_k=5)
        metrics["labels"] = toybirds_label_quality(printed, test_split)
    progress(3, 3)
    return metrics


def toybirds_label_quality(
    printed: list[tuple[list[ConceptScore], int]], split: ToyBirdsSplit
) -> dict[str, float]:
    """What ``conceptlens label`` prints for the split's images (``printed``, one entry per image), scored
    against the world: the share of printed labels that are true species attributes, that are distractors
    (concepts the world never draws, such as "webbed feet"), and of images left with no label."""
    verdicts = [
        (toybirds_concept_truth(label.concept, int(kind)), toybirds_concept_parts(label.concept))
        for (labels, _), kind in zip(printed, split.labels, strict=True)
        for label in labels
    ]
    n = max(1, len(verdicts))
    return {
        "precision": sum(truth is True for truth, _ in verdicts) / n,
        "distractor_share": sum(parts is None for _, parts in verdicts) / n,
        "unlabelled_share": sum(not labels for labels, _ in printed) / max(1, len(printed)),
    }


def add_train_contributions(path: str, device: str = "auto") -> None:
    """Store every train image's concept contributions to its stored cluster (``train_contributions``,
    :func:`~core.ceir.explain.contributions_in_batches`) in a bundle saved before bundles held them; the
    weights and every other array stay as they are."""
    loaded = load_ceir(path, device=device)
    contributions = contributions_in_batches(
        loaded.model, loaded.arrays[TRAIN_CONCEPTS], loaded.arrays[TRAIN_CLUSTERS]
    )
    update_bundle_arrays(path, {TRAIN_CONTRIBUTIONS: contributions})


def photo_warnings(loaded) -> dict[str, Any]:
    """The out-of-distribution warning on the real photos that ship inside installed packages
    (``core.data.samples``): how many there are, the share warned, and the names of any it let through."""
    from core.data.samples import sample_photos

    photos = sample_photos()
    if not photos:
        return {"n": 0, "warned_share": None, "missed": []}
    backbone = loaded.backbone
    embeddings = backbone.encode_images(backbone.preprocess_images(list(photos.values()))).cpu()
    flags = ood_flags(loaded, embeddings)
    missed = [name for name, flagged in zip(photos, flags, strict=True) if not flagged]
    return {"n": len(photos), "warned_share": float(np.mean(flags)), "missed": missed}


def evaluate_bundle(
    path: str,
    seed: int | None = None,
    device: str = "auto",
    progress: Progress = no_progress,
    log=None,
) -> dict[str, Any]:
    """``conceptlens eval`` for CEIR: ``evaluate_arrays`` (fresh ToyBirds with ``seed``) and the share of
    test images the out-of-distribution warning flags. ``progress`` hears each phase (see
    :class:`~core.progress.PhaseClock`), ``log`` gets one line as each starts."""
    clock = PhaseClock(progress, log)
    loaded = load_ceir(path, device=device)
    data = loaded.data if seed is None else loaded.data.with_seed(seed)
    train_split, test_split = open_split(data, "train"), open_split(data, "test")
    message = f"Embedding {len(train_split)} train and {len(test_split)} test images ..."
    with clock.phase("embedding", message):
        train_emb, test_emb = (
            image_embeddings(loaded.backbone, train_split, clock.progress),
            image_embeddings(loaded.backbone, test_split, clock.progress),
        )
    settings = loaded.config.get("ceir", {})
    seed = int(settings.get("seed", 0))
    metrics = evaluate_arrays(
        loaded.model,
        VAEConfig.from_dict(settings.get("vae", {})),
        train_split,
        test_split,
        train_emb,
        test_emb,
        seed=seed,
        kmeans_restarts=int(settings.get("kmeans_restarts", CEIRConfig.kmeans_restarts)),
        clock=clock,
    )
    # the out-of-distribution warning's false alarms: the share of test images it would flag
    metrics["ood_warned_share"] = float(np.mean(ood_flags(loaded, test_emb)))
    if isinstance(test_split, ToyBirdsSplit):  # a real photo is unlike any drawn bird: each should be warned
        metrics["ood_photos"] = photo_warnings(loaded)
    return {"kind": KIND, "bundle": str(loaded.path), "data": data.to_dict(), **metrics}
