"""A vision-transformer forward that accepts extra tokens and returns attention.

ConceptHash appends M learned concept tokens *after* the positional embedding (they get no
position of their own) and *before* ``ln_pre``, as the authors' code does, and runs them through
every block with full attention. This module re-implements open_clip's ``VisionTransformer``
forward from its public parts so that it can

* append extra tokens after the patch tokens: sequence = [CLS, patches..., extras...];
* add two adapters to every block, as in the authors' code: each sub-layer's output ``a``
  (attention, then MLP) is added to the residual stream together with ``adapter(a)``:
  ``x + a + adapter_attn(a)``, then ``x + m + adapter_mlp(m)``;
* return every layer's attention probabilities (B, heads, T, T) and hidden states.

With no extra tokens and no adapters the pooled output equals ``model.encode_image``
(``tests/test_backbones.py`` checks this to float tolerance).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer
from torch import nn

AttentionLayers = Literal["none", "last", "all"]


@dataclass
class ViTOutput:
    """What :func:`vit_forward` returns.

    ``tokens`` are the final hidden states after ``ln_post`` for the whole sequence
    [CLS, patches, extras]; ``extra`` is the slice of the extra tokens. ``last_hidden`` is the
    last block's output for the whole sequence, before ``ln_post``.
    ``attentions[i]`` is (B, heads, T, T) for the i-th requested layer.
    """

    pooled: torch.Tensor
    tokens: torch.Tensor
    extra: torch.Tensor
    n_patches: int
    last_hidden: torch.Tensor | None = None
    attentions: list[torch.Tensor] = field(default_factory=list)
    hidden_states: list[torch.Tensor] = field(default_factory=list)


def check_supported(visual: nn.Module) -> None:
    """Raise a clear error for vision towers this forward does not reproduce."""
    if not isinstance(visual, VisionTransformer):
        raise ValueError(
            f"ConceptLens needs an open_clip VisionTransformer image tower, not {type(visual).__name__} "
            "(ResNet and timm towers have no tokens to extend)."
        )
    if visual.attn_pool is not None:
        raise ValueError("Vision towers with an attentional pooler are not supported.")
    for block in visual.transformer.resblocks:
        if not isinstance(block, ResidualAttentionBlock) or not isinstance(block.attn, nn.MultiheadAttention):
            raise ValueError("Only plain attention blocks (nn.MultiheadAttention) are supported.")


def patch_embeddings(visual: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """[CLS, patches] with positional embedding, as open_clip computes them (before ``ln_pre``)."""
    x = visual.conv1(images.to(visual.conv1.weight.dtype))
    x = x.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    return visual.patch_dropout(x)


BlockAdapters = tuple[nn.Module | None, nn.Module | None]


def block_forward(
    block: ResidualAttentionBlock,
    x: torch.Tensor,
    adapters: BlockAdapters | None = None,
    need_attention: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One pre-norm block with optional (attention, MLP) adapters; optionally its attention probabilities."""
    mha: nn.MultiheadAttention = block.attn
    batch, length, width = x.shape
    heads = mha.num_heads
    h = block.ln_1(x)
    qkv = F.linear(h, mha.in_proj_weight, mha.in_proj_bias)
    q, k, v = (t.reshape(batch, length, heads, width // heads).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
    if need_attention:
        probs = torch.softmax((q @ k.transpose(-2, -1)) / math.sqrt(width // heads), dim=-1)
        context = probs @ v
    else:
        probs = None
        context = F.scaled_dot_product_attention(q, k, v)
    context = context.transpose(1, 2).reshape(batch, length, width)
    after_attention, after_mlp = adapters if adapters is not None else (None, None)
    a = block.ls_1(mha.out_proj(context))
    x = x + a + (after_attention(a) if after_attention is not None else 0.0)
    m = block.ls_2(block.mlp(block.ln_2(x)))
    return x + m + (after_mlp(m) if after_mlp is not None else 0.0), probs


def vit_forward(
    visual: VisionTransformer,
    images: torch.Tensor,
    extra_tokens: torch.Tensor | None = None,
    adapters: Sequence[BlockAdapters] | None = None,
    attention_layers: AttentionLayers = "none",
    return_hidden_states: bool = False,
    extra_from_block: int = 0,
    keep_patches: torch.Tensor | None = None,
    depth: int | None = None,
) -> ViTOutput:
    """Run the vision tower with optional extra tokens (B, M, width) or (M, width) and per-block
    (attention, MLP) adapter pairs. The extra tokens join before block ``extra_from_block``
    (0: before ``ln_pre``, with the patches; k > 0: after block k - 1, through ``ln_pre``).

    ``keep_patches`` (B, k) indices into the patch grid keep only those patches (each with its
    own positional embedding) besides CLS: the tower then sees nothing else of the image.
    ``depth`` runs only the first ``depth`` blocks (None: all); everything returned, ``ln_post`` and
    the pooled output included, is then computed from the output of block ``depth - 1``."""
    check_supported(visual)
    blocks = visual.transformer.resblocks
    if adapters is not None and len(adapters) != len(blocks):
        raise ValueError(f"Got {len(adapters)} adapters for {len(blocks)} blocks.")
    if depth is not None and not 1 <= depth <= len(blocks):
        raise ValueError(f"depth must be in [1, {len(blocks)}], not {depth}.")
    blocks = blocks[:depth] if depth is not None else blocks
    if not 0 <= extra_from_block < len(blocks):
        raise ValueError(f"extra_from_block must be in [0, {len(blocks)}), not {extra_from_block}.")
    x = patch_embeddings(visual, images)
    if keep_patches is not None:
        index = (keep_patches + 1).unsqueeze(-1).expand(-1, -1, x.shape[-1])
        x = torch.cat([x[:, :1], torch.gather(x, 1, index)], dim=1)
    n_patches = x.shape[1] - 1
    extra = None
    if extra_tokens is not None:
        extra = (
            extra_tokens if extra_tokens.dim() == 3 else extra_tokens.unsqueeze(0).expand(x.shape[0], -1, -1)
        ).to(x.dtype)
        if extra_from_block == 0:
            x = torch.cat([x, extra], dim=1)
    x = visual.ln_pre(x)
    attentions, hidden = [], []
    for i, block in enumerate(blocks):
        if extra is not None and extra_from_block > 0 and i == extra_from_block:
            x = torch.cat([x, visual.ln_pre(extra)], dim=1)
        want = attention_layers == "all" or (attention_layers == "last" and i == len(blocks) - 1)
        x, probs = block_forward(block, x, adapters[i] if adapters is not None else None, want)
        if probs is not None:
            attentions.append(probs)
        if return_hidden_states:
            hidden.append(x)
    tokens = visual.ln_post(x)
    image_part = tokens[:, : n_patches + 1]
    if visual.final_ln_after_pool:
        raw = x[:, : n_patches + 1]
        pooled = visual.ln_post(raw[:, 0] if visual.pool_type == "tok" else raw[:, 1:].mean(dim=1))
    else:
        pooled = image_part[:, 0] if visual.pool_type == "tok" else image_part[:, 1:].mean(dim=1)
    if visual.proj is not None:
        pooled = pooled @ visual.proj
    return ViTOutput(pooled, tokens, tokens[:, n_patches + 1 :], n_patches, x, attentions, hidden)


def attention_rollout(attentions: Sequence[torch.Tensor], residual_weight: float = 0.5) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema, 2020): head-averaged attention with the residual
    path added, row-normalised and multiplied through the layers. Returns (B, T, T) over the tokens
    of the last layer.

    Tokens may join the sequence late (ConceptHash's ``concept_blocks``: the concept tokens are appended
    after the CLS and patch tokens before a later block), so a layer may see more tokens than the one
    before it; new tokens are always the last ones. Rule: a token that joins at layer k starts as itself,
    so the rollout through layers 0 .. k-1 gets an identity row and column for it (it carries nothing of
    the image yet, and no earlier token carries anything of it). From layer k on, its attention to the
    patches brings in their rollout so far, exactly as for the tokens that were there from the start.
    This equals the plain rollout of layers in which the late tokens had been present all along, attending
    only to themselves and attended by no one.
    """
    rollout = None
    for probs in attentions:
        a = probs.mean(dim=1)
        tokens = a.shape[-1]
        eye = torch.eye(tokens, dtype=a.dtype, device=a.device)
        a = residual_weight * eye + (1.0 - residual_weight) * a
        a = a / a.sum(dim=-1, keepdim=True)
        if rollout is not None and rollout.shape[-1] != tokens:
            rollout = _with_new_tokens(rollout, tokens)
        rollout = a if rollout is None else a @ rollout
    if rollout is None:
        raise ValueError("Attention rollout needs at least one layer of attention.")
    return rollout


def _with_new_tokens(rollout: torch.Tensor, tokens: int) -> torch.Tensor:
    """The (B, T, T) rollout grown to (B, tokens, tokens): identity rows and columns for the new tokens."""
    before = rollout.shape[-1]
    if tokens < before:
        raise ValueError(
            f"A layer's attention covers {tokens} tokens after one that covered {before}; "
            "tokens may join the sequence, never leave it."
        )
    grown = torch.eye(tokens, dtype=rollout.dtype, device=rollout.device).repeat(rollout.shape[0], 1, 1)
    grown[:, :before, :before] = rollout
    return grown
