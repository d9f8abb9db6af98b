"""Reading CEIR explanations without PyTorch: top concepts by contribution, per image and per cluster, and
where a latent lands among the cluster centres.

The dashboard draws a bundle's train images from its stored arrays (concept vectors, latents, contributions)
and its k-means centres with these, before (or without) importing the model's code;
:mod:`core.ceir.explain` computes contributions and interventions with the model and uses the same functions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open

from core.bundle import WEIGHTS_FILE, BundleError

CLUSTER_CENTRES = "cluster_centers"  # the k-means centres' name among the model's weights


def concept_label(concept: str, activation: float) -> str:
    return concept if activation >= 0 else f"NOT {concept}"


@dataclass
class ConceptContribution:
    concept: str
    label: str  # "concept" or "NOT concept"
    activation: float  # z-scored
    contribution: float


def top_contributions(
    concepts: list[str],
    activations: np.ndarray,
    contributions: np.ndarray,
    k: int = 10,
    positive_only: bool = False,
) -> list[ConceptContribution]:
    """The ``k`` concepts with the largest |contribution| (largest positive if ``positive_only``)."""
    order = np.argsort(-contributions if positive_only else -np.abs(contributions), kind="stable")
    picked = [i for i in order if not positive_only or contributions[i] > 0][:k]
    return [
        ConceptContribution(
            concepts[i],
            concept_label(concepts[i], float(activations[i])),
            float(activations[i]),
            float(contributions[i]),
        )
        for i in picked
    ]


def cluster_top_concepts(
    concepts: list[str], activations: np.ndarray, contributions: np.ndarray, clusters: np.ndarray, k: int = 10
) -> dict[int, list[ConceptContribution]]:
    """Per cluster: concepts with the largest mean contribution over its images (label by mean activation)."""
    result = {}
    for cluster in np.unique(clusters):
        members = clusters == cluster
        result[int(cluster)] = top_contributions(
            concepts,
            activations[members].mean(axis=0),
            contributions[members].mean(axis=0),
            k,
            positive_only=True,
        )
    return result


@dataclass
class Intervention:
    concept_vector: np.ndarray  # (C,) after the edit
    latent: np.ndarray  # (latent_dim,)
    cluster: int
    distances: np.ndarray  # (k,) Euclidean distance to every cluster centre


def landing(concept_vector: np.ndarray, latent: np.ndarray, centres: np.ndarray) -> Intervention:
    """Where a (possibly edited) concept vector whose latent is ``latent`` lands: its distance to every
    cluster centre and the nearest one."""
    latent = np.asarray(latent, dtype=np.float32)
    distances = np.linalg.norm(np.asarray(centres, dtype=np.float32) - latent, axis=1)
    return Intervention(np.asarray(concept_vector), latent, int(distances.argmin()), distances)


def read_cluster_centres(path: str | os.PathLike) -> np.ndarray:
    """(k, latent_dim) float32 k-means centres of a CEIR bundle, read from its weights without PyTorch (as a
    loaded model holds them); BundleError (a ValueError) or OSError when the bundle cannot give them."""
    file = Path(path) / WEIGHTS_FILE
    try:
        with safe_open(str(file), framework="numpy") as weights:
            if CLUSTER_CENTRES not in weights.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                raise BundleError(f"Bundle {path} has no cluster centres in {WEIGHTS_FILE}.")
            return weights.get_tensor(CLUSTER_CENTRES).astype(np.float32)
    except SafetensorError as error:
        raise BundleError(f"Bundle {path} has a corrupt or truncated {WEIGHTS_FILE} ({error}).") from error
