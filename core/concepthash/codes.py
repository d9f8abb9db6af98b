"""Reading ConceptHash codes and attention without PyTorch: signs, sub-code values, heatmaps from stored maps.

The dashboard draws a bundle's database from its stored arrays with these, before (or without) importing the
model's code; ``core.concepthash.evaluate`` and ``core.concepthash.attention`` use the same functions.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from core.concepthash.config import bits_per_concept


def sign_codes(u: Any) -> np.ndarray:
    """{-1, +1} int8 codes from continuous codes (a tensor or an array; 0 -> +1)."""
    values = u.numpy() if hasattr(u, "numpy") else np.asarray(u)
    return np.where(values >= 0, 1, -1).astype(np.int8)


def subcode_values(codes: np.ndarray, n_concepts: int) -> np.ndarray:
    """(N, M) integer value of every concept's sub-code (its bits, +1 -> 1, read little-endian)."""
    n, bits = codes.shape
    per = bits_per_concept(bits, n_concepts)
    binary = (codes.reshape(n, n_concepts, per) > 0).astype(np.int64)
    return (binary << np.arange(per)).sum(axis=-1)


def value_codes(values: np.ndarray, bits_per: int) -> np.ndarray:
    """(N, M * bits_per) ±1 codes whose sub-codes hold ``values`` (N, M), little-endian: the inverse of
    :func:`subcode_values`."""
    values = np.asarray(values, dtype=np.int64)
    if values.min(initial=0) < 0 or values.max(initial=0) >= 2**bits_per:
        raise ValueError(f"Sub-code values must be in [0, {2**bits_per}), the range of {bits_per} bits.")
    bits = (values[..., None] >> np.arange(bits_per)) & 1
    return np.where(bits > 0, 1, -1).astype(np.int8).reshape(len(values), -1)


def combination_values(n_values: int, n_concepts: int) -> np.ndarray:
    """(V^M, M) every combination of M sub-code values below ``n_values``; row i holds the digits of i in
    base V, concept 0 first (so :func:`combination_index` is its inverse)."""
    rows = np.arange(n_values**n_concepts)[:, None]
    return (rows // n_values ** np.arange(n_concepts)) % n_values


def combination_index(values: Any, n_values: int) -> Any:
    """Row of :func:`combination_values` holding ``values`` (..., M): sum of value_m * V^m (arrays or
    tensors)."""
    weights = n_values ** np.arange(values.shape[-1])
    if hasattr(values, "new_tensor"):
        return (values * values.new_tensor(weights)).sum(-1)
    return (np.asarray(values) * weights).sum(-1)


def per_part_codes(bits: int, n_concepts: int) -> np.ndarray:
    """(24, bits) {-1, +1} per-part codes, one row per ToyBirds species (row = species id): the oracle.

    Concept m < 3 spells the colour index (in ``SPECIES_COLOURS``) of species part m in its bits/M
    bits, little-endian; a value needing more bits than that keeps only its low bits (so colours
    collide). Concepts from the fourth on are constant (all -1).
    """
    from core.data.toybirds import species_part_values

    per = bits // n_concepts
    low_bits = (1 << min(per, 62)) - 1  # colour indices are < 4: wider sub-codes keep them whole
    return value_codes(species_part_values(n_concepts) & low_bits, per)


def _linear_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of 1-D linear resampling with half-pixel centres (align_corners=False)."""
    position = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, None)
    low = np.minimum(np.floor(position).astype(int), n_in - 1)
    high = np.minimum(low + 1, n_in - 1)
    frac = position - low
    weights = np.zeros((n_out, n_in))
    np.add.at(weights, (np.arange(n_out), low), 1 - frac)
    np.add.at(weights, (np.arange(n_out), high), frac)
    return weights


def upsample_maps(maps: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of (B, M, gh, gw) maps to image size (as torch's ``F.interpolate`` with
    ``align_corners=False``), each map min-max scaled to [0, 1]; float32."""
    maps = np.asarray(maps, dtype=np.float64)
    height, width = (size, size) if isinstance(size, int) else size
    rows, cols = _linear_weights(maps.shape[-2], height), _linear_weights(maps.shape[-1], width)
    up = np.einsum("hi,bmij,wj->bmhw", rows, maps, cols)
    flat = up.reshape(*up.shape[:2], -1)
    low, high = flat.min(axis=-1, keepdims=True), flat.max(axis=-1, keepdims=True)
    scaled = (flat - low) / np.maximum(high - low, 1e-12)
    return scaled.reshape(up.shape).astype(np.float32)
