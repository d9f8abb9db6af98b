"""When is a concept present in an image? A zero point for each concept, learnt from the training images.

A CEIR concept vector is z-scored: 0 is the training mean, so a "positive" concept is one that scores above
the average training image. For a concept that is true of a minority of images (a red head on a quarter of
the birds) the average sits between the two groups, and images that only share the colour elsewhere land
above it. The presence threshold puts the zero point where the concept's own training scores split into
two groups: Otsu's threshold (the cut that maximises the variance between the groups below and above it),
never below the training mean, so a present concept is always also a positive one. It needs no labels and
no constant tuned to one backbone. PyTorch-free, so the dashboard uses it on the bundle's stored arrays.
"""

from __future__ import annotations

import numpy as np


def otsu_threshold(values) -> float:
    """Otsu's threshold of 1-D ``values``, exact over the sorted values (no histogram bins).

    The cut maximises w_low * w_high * (mean_low - mean_high)^2 over every place where the sorted values
    change; the threshold is the midpoint of the two values either side of it, so the high group is the
    values strictly above it. Constant values give that value (nothing lies above it).
    """
    x = np.sort(np.asarray(values, dtype=np.float64).ravel())
    if x.size == 0 or not np.isfinite(x).all():
        raise ValueError("Otsu's threshold needs a non-empty array of finite values.")
    cuts = np.flatnonzero(x[1:] > x[:-1])  # the low group is x[: i + 1]
    if cuts.size == 0:
        return float(x[0])
    n, total = x.size, x.sum()
    low_n = cuts + 1.0
    low_sum = np.cumsum(x)[cuts]
    between = (low_n / n) * (1 - low_n / n) * (low_sum / low_n - (total - low_sum) / (n - low_n)) ** 2
    best = cuts[int(np.argmax(between))]
    return float((x[best] + x[best + 1]) / 2)


def presence_thresholds(train_vectors) -> np.ndarray:
    """(C,) each concept's presence threshold: Otsu's threshold of its scores on the training images
    (``train_vectors``, N x C z-scored concept vectors), or 0 (the training mean) where Otsu's is lower."""
    vectors = np.asarray(train_vectors, dtype=np.float64)
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise ValueError(f"Presence thresholds need an (images x concepts) array, got shape {vectors.shape}.")
    return np.array([max(0.0, otsu_threshold(vectors[:, j])) for j in range(vectors.shape[1])])


def present_concepts(vector, thresholds, concepts: list[str]) -> list[str]:
    """The concepts present in one image's ``vector`` (above their thresholds), highest score first."""
    scores = np.asarray(vector, dtype=np.float64)
    above = scores > np.asarray(thresholds, dtype=np.float64)
    return [concepts[j] for j in np.argsort(-scores, kind="stable") if above[j]]
