"""Explanations: which concepts put an image in its cluster, and what-if interventions.

Contribution of concept c to the score f_k of cluster k (minus the squared latent distance to
its centre) is the Integrated-Gradients attribution through the VAE encoder:

    contribution_c = x_c * integral over alpha in [0, 1] of  d f_k / d x_c  (alpha * x)

x is the z-scored concept vector, so the zero baseline is the train mean and ``x_c`` is the
concept's activation relative to it: "activation times integrated gradient". The path integral uses
the trapezoid rule over ``steps`` intervals; by IG's completeness the contributions sum to
f_k(x) - f_k(0) up to its error, which ``completeness_error`` measures (``conceptlens eval`` reports it).
A concept whose activation is below the train mean (x_c < 0) is read as its absence, so its
label is "NOT <concept>"; the sign of the contribution says whether it argues for (+) or
against (-) the cluster. Reading contributions (top concepts, per cluster) and where a latent lands needs no
model: :mod:`core.ceir.reading`, free of PyTorch, holds that.
"""

from __future__ import annotations

import numpy as np
import torch

from core.ceir.model import CEIRModel
from core.ceir.reading import Intervention, landing

IG_STEPS = 64  # trapezoid intervals; the shipped model's completeness error: median 0.2 %, p95 0.6 %


def integrated_gradients(
    model: CEIRModel, x: torch.Tensor, clusters: torch.Tensor, steps: int = IG_STEPS
) -> torch.Tensor:
    """(N, C) IG attributions of the cluster scores ``f_clusters[i](x_i)`` with a zero baseline
    (trapezoid rule on ``steps`` equal intervals of the straight path)."""
    if steps < 1:
        raise ValueError(f"Integrated Gradients needs at least 1 step, not {steps}.")
    model.eval()
    alphas = (torch.arange(0, steps + 1, dtype=x.dtype) / steps).view(-1, 1, 1)
    weights = torch.ones(steps + 1, dtype=x.dtype)
    weights[0] = weights[-1] = 0.5
    path = (alphas * x.unsqueeze(0)).reshape(-1, x.shape[1]).detach().requires_grad_(True)
    scores = model.cluster_scores(model.latent(path))
    target = clusters.repeat(steps + 1)
    chosen = scores.gather(1, target.view(-1, 1)).sum()
    (grad,) = torch.autograd.grad(chosen, path)
    integral = (weights.view(-1, 1, 1) * grad.view(steps + 1, *x.shape)).sum(dim=0) / steps
    return x * integral


def completeness_error(
    model: CEIRModel, x: torch.Tensor, clusters: torch.Tensor, contributions: torch.Tensor
) -> np.ndarray:
    """(N,) |sum of contributions - (f(x) - f(0))| / |f(x) - f(0)| per image: how far IG's sum is from
    the score change it should add up to (0 for exact integration)."""
    with torch.no_grad():
        start = model.cluster_scores(model.latent(torch.zeros_like(x))).gather(1, clusters.view(-1, 1))
        end = model.cluster_scores(model.latent(x)).gather(1, clusters.view(-1, 1))
        change = (end - start).squeeze(1)
        gap = (contributions.sum(dim=1) - change).abs()
        return (gap / change.abs().clamp_min(1e-12)).numpy()


def explain(
    model: CEIRModel,
    concept_vectors: torch.Tensor,
    clusters: torch.Tensor | None = None,
    steps: int = IG_STEPS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Contributions (N, C) of every concept to each image's cluster (default: its assigned one)."""
    if clusters is None:
        with torch.no_grad():
            clusters = model.assign(model.latent(concept_vectors))
    return integrated_gradients(model, concept_vectors, clusters, steps), clusters


def contributions_in_batches(
    model: CEIRModel,
    concept_vectors: np.ndarray,
    clusters: np.ndarray,
    batch_size: int = 256,
    steps: int = IG_STEPS,
) -> np.ndarray:
    """(N, C) float32 contributions of every row's concepts to its given cluster (:func:`explain`), batched to
    bound memory: the ``train_contributions`` a bundle stores, and what the dashboard computes for a bundle
    saved before it stored them."""
    x = torch.as_tensor(np.asarray(concept_vectors, dtype=np.float32))
    k = torch.as_tensor(np.asarray(clusters, dtype=np.int64))
    parts = [
        explain(model, x[start : start + batch_size], k[start : start + batch_size], steps)[0]
        for start in range(0, len(x), batch_size)
    ]
    return torch.cat(parts).detach().numpy() if parts else np.zeros((0, x.shape[1]), dtype=np.float32)


@torch.no_grad()
def intervene(model: CEIRModel, concept_vector: torch.Tensor, edits: dict[str | int, float]) -> Intervention:
    """Set some concepts (by name or index) of one image's z-scored vector; return where it lands."""
    edited = concept_vector.detach().clone().reshape(1, -1)
    for key, value in edits.items():
        if isinstance(key, str):
            if key not in model.concepts:
                raise ValueError(f"'{key}' is not one of this model's concepts.")
            index = model.concepts.index(key)
        else:
            index = int(key)
            if not 0 <= index < len(model.concepts):
                raise ValueError(f"Concept index {index} is out of range (0..{len(model.concepts) - 1}).")
        edited[0, index] = float(value)
    model.eval()
    latent = model.latent(edited)
    return landing(edited[0].numpy(), latent[0].numpy(), model.cluster_centers.numpy())
