"""ConceptHash losses, named as in the paper.

All classification-style terms use a margin cosine softmax (CosFace): logits are
``scale * (cos(x, w_c) - margin * [c == y])`` followed by cross-entropy.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def cosine_logits(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """cos(x_i, w_c) for every row i and class c: (B, D) x (C, D) -> (B, C)."""
    return F.normalize(x, dim=-1) @ F.normalize(weights, dim=-1).t()


def margin_cosine_loss(
    cosines: torch.Tensor, labels: torch.Tensor, scale: float = 8.0, margin: float = 0.2
) -> torch.Tensor:
    """Cross-entropy over ``scale * (cos - margin * onehot(labels))``."""
    onehot = F.one_hot(labels, cosines.shape[-1]).to(cosines.dtype)
    return F.cross_entropy(scale * (cosines - margin * onehot), labels)


def clf_loss(
    u: torch.Tensor, hash_centres: torch.Tensor, labels: torch.Tensor, scale: float = 8.0, margin: float = 0.2
) -> torch.Tensor:
    """L_clf: continuous codes u against the (language-guided) class centres o_c."""
    return margin_cosine_loss(cosine_logits(u, hash_centres), labels, scale, margin)


def quan_loss(
    u: torch.Tensor, hash_centres: torch.Tensor, labels: torch.Tensor, scale: float = 8.0, margin: float = 0.2
) -> torch.Tensor:
    """L_quan: u against the *binarised* centres sign(o_c), pulling codes towards binary targets."""
    return margin_cosine_loss(cosine_logits(u, torch.sign(hash_centres)), labels, scale, margin)


def cd_loss(
    concept_features: torch.Tensor,
    concept_positions: torch.Tensor,
    class_prototypes: torch.Tensor,
    labels: torch.Tensor,
    scale: float = 8.0,
    margin: float = 0.2,
) -> torch.Tensor:
    """L_cd: every concept alone must tell the class.

    ``concept_features`` Z (B, M, D), ``concept_positions`` P (M, D), ``class_prototypes`` w (C, D)
    shared by all concepts; mean over concepts of the margin cosine loss of Z_m + P_m.
    """
    z = concept_features + concept_positions.unsqueeze(0)
    batch, n_concepts, _ = z.shape
    if batch == 0:  # (a batch with no image of a class, as recolouring can leave)
        return z.sum() + class_prototypes.sum() * 0
    cos = cosine_logits(z.reshape(batch * n_concepts, -1), class_prototypes)
    return margin_cosine_loss(cos, labels.repeat_interleave(n_concepts), scale, margin)


def csd_loss(concept_attention: torch.Tensor) -> torch.Tensor:
    """L_csd, concept spatial diversity: mean pairwise cosine between concepts' attention maps.

    ``concept_attention`` (B, M, P): head-averaged last-layer attention from each concept token
    to the patch tokens. Maps are L2-normalised; the mean is over the M(M-1) ordered pairs
    m != n and over the batch. 0 when concepts look at disjoint patches, 1 when they all look
    at the same pattern.
    """
    maps = F.normalize(concept_attention, dim=-1)
    gram = maps @ maps.transpose(1, 2)
    n = gram.shape[-1]
    if n < 2:
        return gram.new_zeros(())
    off_diagonal = gram.sum(dim=(1, 2)) - gram.diagonal(dim1=1, dim2=2).sum(dim=-1)
    return (off_diagonal / (n * (n - 1))).mean()


def focus_loss(concept_attention: torch.Tensor) -> torch.Tensor:
    """Spread of each concept's attention over the patches: the entropy of its map (renormalised over the
    patches) divided by log(P), so 0 when it looks at one patch and 1 when at all alike; mean over
    concepts and batch. Not in the paper (``ConceptHashConfig.focus_weight``)."""
    n_patches = concept_attention.shape[-1]
    if n_patches < 2:
        return concept_attention.new_zeros(())
    maps = concept_attention / concept_attention.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    entropy = -(maps * maps.clamp_min(1e-12).log()).sum(dim=-1)
    return (entropy / math.log(n_patches)).mean()


MIX_SURE = 0.7  # share of a concept's attention on one image that makes that image its target in L_mix


def mix_loss(u: torch.Tensor, share: torch.Tensor, own: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """L_mix (not in the paper) on images pasted together from two: 1 - cos(sub-code, target), averaged
    over the concepts that have a target.

    ``u`` (B, K) codes of the pasted images; ``share`` (B, M) the part of each concept's attention that lies
    in the pasted rectangle; ``own`` / ``other`` (B, K) sign(centre) of the image's class and of the class of
    the image the rectangle came from. Concept m's target is slice m of ``other`` when ``share`` ≥
    ``MIX_SURE``, of ``own`` when ``share`` ≤ 1 - ``MIX_SURE``, none in between.
    """
    batch, n_concepts = share.shape
    target = torch.where(
        (share >= 0.5)[..., None], other.reshape(batch, n_concepts, -1), own.reshape(batch, n_concepts, -1)
    )
    sure = ((share >= MIX_SURE) | (share <= 1 - MIX_SURE)).to(u.dtype)
    cos = F.cosine_similarity(u.reshape(batch, n_concepts, -1), target, dim=-1)
    return ((1 - cos) * sure).sum() / sure.sum().clamp_min(1)


def bit_loss(u: torch.Tensor, hash_centres: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """L_bit (not in the paper): mean over images and bits of max(0, 1 - u * sign(o_y)), a margin of 1 on
    every bit towards the image's class centre (``u`` is batch-normalised, so 1 is about one std)."""
    return F.relu(1 - u * torch.sign(hash_centres[labels])).mean()
