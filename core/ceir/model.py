"""The trained CEIR pipeline as one module: image embedding -> concepts -> latent -> cluster.

Every stage is a plain tensor function so explanations (Integrated Gradients through the
encoder) and interventions (edit a concept, see the latent move) can call any part of it.
"""

from __future__ import annotations

import torch
from torch import nn

from core.ceir.bottleneck import ZScore
from core.ceir.vae import ConceptVAE, VAEConfig


class CEIRModel(nn.Module):
    """Bias-free concept projection, train z-scores, concept VAE and k-means centres."""

    def __init__(
        self,
        embed_dim: int,
        concepts: list[str],
        vae_config: VAEConfig,
        n_clusters: int,
        text_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.concepts = list(concepts)
        n_concepts = len(self.concepts)
        self.projection = nn.Linear(embed_dim, n_concepts, bias=False)
        self.register_buffer("zscore_mean", torch.zeros(n_concepts))
        self.register_buffer("zscore_std", torch.ones(n_concepts))
        self.register_buffer("concept_embeddings", torch.zeros(n_concepts, text_dim or embed_dim))
        self.register_buffer("cluster_centers", torch.zeros(n_clusters, vae_config.latent_dim))
        self.vae = ConceptVAE(n_concepts, vae_config)

    @property
    def zscore(self) -> ZScore:
        return ZScore(self.zscore_mean, self.zscore_std)

    @property
    def n_clusters(self) -> int:
        return self.cluster_centers.shape[0]

    def concept_vectors(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        """z-scored concept activations (N, C) from L2-normalised image embeddings."""
        return self.zscore(self.projection(image_embeddings))

    def latent(self, concept_vectors: torch.Tensor) -> torch.Tensor:
        """Deterministic latent: the VAE encoder's mean (eval mode)."""
        mu, _ = self.vae.encode(concept_vectors)
        return mu

    def cluster_scores(self, latent: torch.Tensor) -> torch.Tensor:
        """(N, k) score of every cluster: minus the squared distance to its centre."""
        return -torch.cdist(latent, self.cluster_centers).pow(2)

    @torch.no_grad()
    def assign(self, latent: torch.Tensor) -> torch.Tensor:
        return self.cluster_scores(latent).argmax(dim=1)
