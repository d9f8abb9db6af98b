"""Samples that show what a population is: drawn in proportion to its classes (galleries, the CEIR map)."""

from __future__ import annotations

import numpy as np


def proportional_sample(indices: np.ndarray, labels: np.ndarray | None, n: int, seed: int = 0) -> np.ndarray:
    """Up to ``n`` of ``indices``, each class in proportion to its share of them, so a sample shows what the
    whole group is: a class of 230 in 240 fills nearly all of it, one of 3 rarely appears.

    Each class gets ``n`` × its share, rounded by largest remainders (equal remainders in random order);
    images are drawn at random within a class, and the sample lists the larger classes first. Seeded: the same
    ``seed`` gives the same sample. ``labels`` is indexed by image index; without labels the sample is
    uniform."""
    indices = np.asarray(indices, dtype=np.int64)
    rng = np.random.default_rng(seed)
    if n <= 0 or len(indices) == 0:
        return np.zeros(0, dtype=np.int64)
    if labels is None:
        return rng.permutation(indices)[:n]
    of_index = np.asarray(labels)[indices]
    classes, counts = np.unique(of_index, return_counts=True)
    n = min(n, len(indices))
    quota = counts * n / len(indices)
    take = np.floor(quota).astype(np.int64)
    by_remainder = np.lexsort((rng.random(len(classes)), -(quota - take)))
    take[by_remainder[: n - int(take.sum())]] += 1
    larger_first = np.argsort(-counts, kind="stable")
    picked = [rng.permutation(indices[of_index == classes[c]])[: take[c]] for c in larger_first]
    return np.concatenate(picked).astype(np.int64)
