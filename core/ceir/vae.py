"""The CEIR variational auto-encoder: a latent representation learned from z-scored concept vectors.

CEIR (Cui et al., arXiv 2312.10747) projects each image onto C human-readable concepts and then
trains a VAE on those concept vectors; k-means on the latent gives the clusters (we use the deterministic
latent *mean*; the authors' code clusters a sampled z), and the encoder is what explanations attribute
through.

* ``ConceptVAE``: MLP encoder (Linear -> BatchNorm1d -> ReLU per hidden layer) with two heads,
  ``mu_head`` and ``logvar_head``; the decoder mirrors it and ends in a plain Linear back to C
  (no output activation, because the targets are z-scores, not probabilities).
* ``vae_loss``: mean-squared reconstruction error + beta * KL(q(z|x) || N(0, I)).
* ``train_vae``: AdamW, warm-up + cosine learning rate, per-epoch history, resumable checkpoints
  that continue a run bit for bit.

About beta.  The two loss terms are on different scales: the reconstruction term is a *mean* over
all N*C elements, while the KL is a *sum* over the latent dimensions (averaged over the batch). For a
linear-Gaussian VAE this objective equals the usual evidence bound with a decoder noise variance of
``beta * C / 2``, so a latent direction stays active only when it explains more than a ``beta / 2``
share of the (z-scored, so per-concept unit) variance; every weaker direction collapses onto the
prior. The reference code used a *summed* reconstruction term plus a summed KL, i.e. ``beta ~ 1/C``
in our units. The default ``beta = 0.01`` keeps every direction worth about 1/200 of the variance
(about one concept's worth for the ~100-300 concepts of a typical bank) while still regularising the
latent towards N(0, I); ``beta = 1`` would keep only a direction explaining half the variance.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from core.ceir.config import VAEConfig
from core.distributed import (
    DistContext,
    WithLoss,
    check_global_batch,
    global_batchnorm,
    mean_over_ranks,
    rank_slice,
    wrap_model,
)
from core.progress import Progress, no_progress
from core.runtime import seed_everything
from core.training import batches, cosine_lr, restore_training_state, save_training_state, set_lr


def _mlp(sizes: list[int]) -> nn.Sequential:
    """Linear -> BatchNorm1d -> ReLU for each consecutive pair of ``sizes``."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(n_in, n_out), nn.BatchNorm1d(n_out), nn.ReLU()]
    return nn.Sequential(*layers)


class ConceptVAE(nn.Module):
    """VAE over concept vectors of width ``n_concepts``; see the module docstring for the layout."""

    def __init__(self, n_concepts: int, config: VAEConfig) -> None:
        super().__init__()
        if n_concepts < 1:
            raise ValueError(f"The VAE needs at least one concept, got n_concepts={n_concepts}.")
        self.n_concepts = int(n_concepts)
        self.config = config
        hidden = list(config.hidden_dims)
        self.encoder = _mlp([self.n_concepts, *hidden])
        width = hidden[-1] if hidden else self.n_concepts
        self.mu_head = nn.Linear(width, config.latent_dim)
        self.logvar_head = nn.Linear(width, config.latent_dim)
        decoder_sizes = [config.latent_dim, *reversed(hidden)]
        self.decoder = nn.Sequential(*_mlp(decoder_sizes), nn.Linear(decoder_sizes[-1], self.n_concepts))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior parameters (mu, logvar), each (N, latent_dim)."""
        h = self.encoder(x)
        return self.mu_head(h), self.logvar_head(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstructed z-scored concepts (N, C) from latents (N, latent_dim)."""
        return self.decoder(z)

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(recon, mu, logvar). Train mode decodes a reparameterised sample, eval mode decodes mu.

        ``generator`` (a CPU generator) draws the noise, which makes training reproducible and resumable;
        ``noise`` gives it instead (a rank's slice of the global batch's noise under torchrun).
        """
        mu, logvar = self.encode(x)
        if self.training:
            if noise is None:
                noise = torch.randn(mu.shape, generator=generator, dtype=mu.dtype)
            noise = noise.to(mu.device)
            z = mu + torch.exp(0.5 * logvar) * noise
        else:
            z = mu
        return self.decode(z), mu, logvar

    @torch.no_grad()
    def latent_mean(self, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Deterministic latent means (N, latent_dim) on the CPU, computed in eval mode.

        The module's train/eval mode is restored afterwards.
        """
        _check_matrix(x, "x", self.n_concepts)
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        try:
            parts = [
                self.encode(chunk.to(device=device, dtype=torch.float32))[0].cpu()
                for chunk in x.split(max(1, int(batch_size)))
            ]
        finally:
            self.train(was_training)
        return torch.cat(parts) if parts else torch.zeros(0, self.config.latent_dim)


def vae_loss(
    recon: torch.Tensor, target: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float
) -> dict[str, torch.Tensor]:
    """{"recon", "kl", "total"} for one batch.

    recon: mean squared error over every element. The reference used binary cross-entropy, which
    needs targets in [0, 1]; our targets are z-scores, which current PyTorch's BCE rejects, and a
    Gaussian likelihood (MSE) is the right model for them anyway.
    kl: KL(N(mu, exp(logvar)) || N(0, I)), summed over latent dimensions and averaged over the batch.
    total: recon + beta * kl.
    """
    recon_term = F.mse_loss(recon, target)
    kl = (-0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp())).sum(dim=1).mean()
    return {"recon": recon_term, "kl": kl, "total": recon_term + beta * kl}


def _check_matrix(x: torch.Tensor, name: str, width: int | None = None) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a 2-D tensor of concept vectors (N, C), got {shape}.")
    if width is not None and x.shape[1] != width:
        raise ValueError(f"{name} has {x.shape[1]} concepts per row but the VAE expects {width}.")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values; z-score finite concept vectors.")


@torch.no_grad()
def _evaluate(model: ConceptVAE, x: torch.Tensor, beta: float, batch_size: int) -> dict[str, float]:
    """Losses of ``x`` in eval mode (decoding mu), weighted by batch size."""
    model.eval()
    device = next(model.parameters()).device
    sums = {"recon": 0.0, "kl": 0.0, "total": 0.0}
    for chunk in x.split(batch_size):
        chunk = chunk.to(device)
        recon, mu, logvar = model(chunk)
        terms = vae_loss(recon, chunk, mu, logvar, beta)
        for name, value in terms.items():
            sums[name] += float(value) * len(chunk)
    return {name: value / len(x) for name, value in sums.items()}


def _vae_terms(
    model: ConceptVAE, batch: torch.Tensor, noise: torch.Tensor, beta: float
) -> dict[str, torch.Tensor]:
    recon, mu, logvar = model(batch, noise=noise)
    return vae_loss(recon, batch, mu, logvar, beta)


def _train_epoch(
    model: ConceptVAE,
    trained: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    config: VAEConfig,
    generator: torch.Generator,
    lr_at: Callable[[int], float],
    first_step: int,
    ctx: DistContext,
) -> dict[str, float]:
    """One epoch. Under torchrun every rank draws the same global batch and its noise and trains on its
    contiguous slice (``trained`` is the DDP-wrapped loss; BatchNorm uses global-batch statistics)."""
    model.train()
    sums = {"recon": 0.0, "kl": 0.0, "total": 0.0}
    chunks = batches(len(x), config.batch_size, generator, drop_last=True)
    for step, idx in enumerate(chunks):
        set_lr(optimizer, lr_at(first_step + step))
        noise = torch.randn((len(idx), config.latent_dim), generator=generator)
        if ctx.distributed:
            check_global_batch(ctx, len(idx), len(idx))
            rows = rank_slice(ctx, len(idx))
            idx, noise = idx[rows], noise[rows]
        terms = trained(x[idx.to(x.device)], noise)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimizer.step()
        reported = mean_over_ranks(torch.stack([terms[name].detach() for name in sums]), ctx)
        for name, value in zip(sums, reported, strict=True):
            sums[name] += float(value)
    return {name: value / len(chunks) for name, value in sums.items()}


def _settings(config: VAEConfig, model: ConceptVAE) -> dict:
    return {"config": config.to_dict(), "n_concepts": model.n_concepts}


def train_vae(
    x_train: torch.Tensor,
    config: VAEConfig,
    *,
    x_val: torch.Tensor | None = None,
    checkpoint: Path | None = None,
    resume: bool = False,
    progress: Progress = no_progress,
    log=print,
    ctx: DistContext | None = None,
) -> tuple[ConceptVAE, list[dict]]:
    """Train a ``ConceptVAE`` on z-scored concept vectors; returns (model in eval mode, history).

    Trains on the device ``x_train`` lives on. Each history row holds the epoch number, the mean
    training losses ("recon", "kl", "total") and, with ``x_val``, the validation losses in eval mode
    ("val_recon", "val_kl", "val_total"). With ``checkpoint`` the full state (model, optimizer,
    data-order and noise generator, epoch, history) is written there after every epoch; with
    ``resume=True`` an existing checkpoint is continued and gives exactly the result of an
    uninterrupted run. The caller deletes the checkpoint once the result is safely stored.
    Shuffled batches drop a short last batch, so BatchNorm never sees a batch of one sample.
    Under torchrun (``ctx``) each rank trains on its slice of every batch (the same losses as one process);
    every rank resumes from ``checkpoint``, rank 0 alone writes it.
    """
    ctx = ctx or DistContext(device=x_train.device)
    _check_matrix(x_train, "x_train")
    if len(x_train) < 2:
        raise ValueError(f"x_train has {len(x_train)} row(s); the VAE needs at least 2 to train BatchNorm.")
    x_train = x_train.float()
    if x_val is not None:
        _check_matrix(x_val, "x_val", x_train.shape[1])
        x_val = x_val.float()
    generator = seed_everything(config.seed)
    model = global_batchnorm(ConceptVAE(x_train.shape[1], config).to(x_train.device), ctx)
    trained = wrap_model(WithLoss(model, partial(_vae_terms, beta=config.beta)), ctx)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    start_epoch, history = 0, []
    if checkpoint is not None and resume:
        start_epoch, history = restore_training_state(
            Path(checkpoint),
            model,
            optimizer,
            generator,
            _settings(config, model),
            what="VAE configuration or concept count",
        )
        if start_epoch:
            log(f"Resuming the VAE from {checkpoint} at epoch {start_epoch}.")

    steps_per_epoch = len(batches(len(x_train), config.batch_size, drop_last=True))
    total_steps = config.epochs * steps_per_epoch
    warmup_steps = config.warmup_epochs * steps_per_epoch

    def lr_at(step: int) -> float:
        return cosine_lr(step, total_steps, config.lr, warmup_steps)

    for epoch in range(start_epoch, config.epochs):
        row: dict[str, Any] = {"epoch": epoch + 1}
        row |= _train_epoch(
            model, trained, optimizer, x_train, config, generator, lr_at, epoch * steps_per_epoch, ctx
        )
        if x_val is not None and len(x_val):
            val = _evaluate(model, x_val, config.beta, max(config.batch_size, 1024))
            row |= {f"val_{name}": value for name, value in val.items()}
        if not all(math.isfinite(v) for v in row.values()):
            raise ValueError(
                f"VAE training diverged at epoch {epoch + 1} (non-finite loss); lower lr ({config.lr})."
            )
        history.append(row)
        log(
            f"VAE epoch {epoch + 1}/{config.epochs} "
            + " ".join(f"{k}={v:.4f}" for k, v in row.items() if k != "epoch")
        )
        if checkpoint is not None and ctx.is_main:
            save_training_state(
                Path(checkpoint), model, optimizer, generator, epoch + 1, history, _settings(config, model)
            )
        progress(epoch + 1, config.epochs)
    model.eval()
    return model, history
