"""The CLIP concept bottleneck: image embedding -> human-readable concept activations.

* Teacher P = cosine(CLIP image embedding, CLIP text embedding of each concept).
* Student: a bias-free linear projection W from the image embedding to the concepts, trained
  label-free with the cos^3 objective of Label-free CBM / CEIR: for every concept, centre the
  student's and the teacher's activations over the batch, cube them, L2-normalise over the
  batch and take the dot product; the loss is minus the mean over concepts. Cubing emphasises
  the images where a concept is strongly present.
* Early stopping and the per-concept *fidelity* (the same cos^3 similarity, measured on
  held-out images) use a held-out part of the TRAIN split only; the test split is never seen.
* Activations are z-scored with train statistics before the VAE.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.ceir.config import ProjectionConfig
from core.distributed import DistContext, check_global_batch, gather_with_grad, rank_slice, wrap_model
from core.progress import Progress, no_progress


def teacher_similarities(image_embeddings: torch.Tensor, concept_embeddings: torch.Tensor) -> torch.Tensor:
    """(N, C) cosine similarity between every image and every concept text."""
    return F.normalize(image_embeddings, dim=-1) @ F.normalize(concept_embeddings, dim=-1).t()


def _centred_cube(x: torch.Tensor) -> torch.Tensor:
    x = x - x.mean(dim=0, keepdim=True)
    x = x**3
    return x / x.norm(dim=0, keepdim=True).clamp_min(1e-12)


def cos3_similarity(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Per-concept cos^3 similarity over a batch: (N, C) x (N, C) -> (C,), each in [-1, 1]."""
    if student.shape != teacher.shape:
        raise ValueError(f"Student {tuple(student.shape)} and teacher {tuple(teacher.shape)} shapes differ.")
    return (_centred_cube(student) * _centred_cube(teacher)).sum(dim=0)


def cos3_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """The label-free projection loss: minus the mean per-concept cos^3 similarity."""
    return -cos3_similarity(student, teacher).mean()


@dataclass
class ProjectionResult:
    projection: nn.Linear
    fidelity: np.ndarray  # (C,) held-out cos^3 similarity per concept
    history: list[dict]
    best_step: int


def split_holdout(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic split of ``range(n)`` into (fit, held-out) indices."""
    if not 0 < fraction < 1:
        raise ValueError(f"The held-out fraction must be between 0 and 1, not {fraction}.")
    order = np.random.default_rng(seed).permutation(n)
    n_val = max(2, int(round(n * fraction)))
    if n - n_val < 2:
        raise ValueError(f"{n} training images are too few to hold out a validation part.")
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def train_projection(
    embeddings: torch.Tensor,
    teacher: torch.Tensor,
    config: ProjectionConfig,
    progress: Progress = no_progress,
    ctx: DistContext | None = None,
) -> ProjectionResult:
    """Fit bias-free W so ``embeddings @ W.T`` matches the teacher under cos^3; keep the best held-out W.

    Under torchrun (``ctx``) every rank draws the same batch, projects its contiguous slice and gathers the
    global batch's outputs before the loss (cos^3 centres over the batch), so the loss is one process's.
    """
    ctx = ctx or DistContext()
    fit_idx, val_idx = split_holdout(len(embeddings), config.val_fraction, config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    projection = nn.Linear(embeddings.shape[1], teacher.shape[1], bias=False)
    with torch.no_grad():
        projection.weight.normal_(0, embeddings.shape[1] ** -0.5, generator=generator)
    trained = wrap_model(projection, ctx)
    optimizer = torch.optim.Adam(projection.parameters(), lr=config.lr)
    x_fit, p_fit = embeddings[fit_idx], teacher[fit_idx]
    x_val, p_val = embeddings[val_idx], teacher[val_idx]
    best, best_state, best_step, stale, history = -np.inf, None, 0, 0, []
    batch = min(config.batch_size, len(x_fit))
    if ctx.distributed:  # equal slices: the batch rounds down to a multiple of the number of processes
        batch -= batch % ctx.world_size
        check_global_batch(ctx, batch, batch)  # at least one image per process
    for step in range(1, config.steps + 1):
        idx = torch.randperm(len(x_fit), generator=generator)[:batch]
        rows = idx[rank_slice(ctx, batch)]  # this rank's share of the batch (all of it in one process)
        loss = cos3_loss(gather_with_grad(trained(x_fit[rows]), ctx), p_fit[idx])
        if not torch.isfinite(loss):
            raise ValueError(
                f"The concept projection's loss became {float(loss)} at step {step}; lower the learning rate "
                "or check the embeddings for NaN."
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % config.eval_every == 0 or step == config.steps:
            with torch.no_grad():
                val_score = float(cos3_similarity(projection(x_val), p_val).mean())
            history.append({"step": step, "train_loss": float(loss.detach()), "val_similarity": val_score})
            if val_score > best + 1e-5:
                best, best_state, best_step, stale = (
                    val_score,
                    copy.deepcopy(projection.state_dict()),
                    step,
                    0,
                )
            else:
                stale += 1
                if stale >= config.patience:
                    progress(config.steps, config.steps)
                    break
        progress(step, config.steps)
    if best_state is not None:
        projection.load_state_dict(best_state)
    with torch.no_grad():
        fidelity = cos3_similarity(projection(x_val), p_val).numpy()
    return ProjectionResult(projection.eval(), fidelity, history, best_step)


@dataclass
class ZScore:
    """Per-concept standardisation with train statistics."""

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(cls, activations: torch.Tensor) -> ZScore:
        return cls(activations.mean(dim=0), activations.std(dim=0).clamp_min(1e-6))

    def __call__(self, activations: torch.Tensor) -> torch.Tensor:
        return (activations - self.mean) / self.std
