"""Clustering and its scores: k-means on a representation, then ACC, NMI and ARI against labels.

CEIR clusters the VAE's latent means with k-means and compares them with the same k-means on
its baselines (raw CLIP image embeddings, concept vectors). The protocol here is the same for
every representation: fit k-means on the train features, assign the test features to the nearest
centre, score the assignment against the test labels.

* ACC: best one-to-one matching of clusters to classes (Hungarian algorithm on the contingency
  matrix), as a fraction of samples. With more clusters than classes the unmatched clusters count
  as wrong; with fewer, the unmatched classes do.
* NMI: normalised mutual information (arithmetic mean normalisation, scikit-learn's default).
* ARI: adjusted Rand index.

k-means runs its restarts in batches (about :data:`REPORTS_PER_FIT` per fit, one generator shared by all
batches, the best kept with scikit-learn's own rule) so that a fit of hundreds of restarts reports progress;
the starts and the result are those of one ``KMeans(n_init=restarts)`` call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from core.progress import Progress, no_progress

_CHUNK_ELEMENTS = 2**22  # rows x centres x dims handled at once in the distance computation


def _labels(values, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of labels, got shape {array.shape}.")
    return array


def _label_pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    true, pred = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if true.shape != pred.shape:
        raise ValueError(f"y_true has {true.size} labels but y_pred has {pred.size}; they must match.")
    return true, pred


def cluster_accuracy(y_true, y_pred) -> float:
    """Clustering accuracy: the fraction of samples right under the best cluster -> class matching.

    Labels of either kind may be any values (they are remapped to 0..K-1), and the number of
    clusters need not equal the number of classes.
    """
    true, pred = _label_pair(y_true, y_pred)
    _, true_idx = np.unique(true, return_inverse=True)
    _, pred_idx = np.unique(pred, return_inverse=True)
    contingency = np.zeros((pred_idx.max() + 1, true_idx.max() + 1), dtype=np.int64)
    np.add.at(contingency, (pred_idx, true_idx), 1)
    rows, cols = linear_sum_assignment(contingency, maximize=True)
    return float(contingency[rows, cols].sum() / true.size)


def clustering_scores(y_true, y_pred) -> dict[str, float]:
    """{"acc", "nmi", "ari"} of a clustering ``y_pred`` against ground-truth classes ``y_true``."""
    true, pred = _label_pair(y_true, y_pred)
    return {
        "acc": cluster_accuracy(true, pred),
        "nmi": float(normalized_mutual_info_score(true, pred)),
        "ari": float(adjusted_rand_score(true, pred)),
    }


@dataclass
class KMeansResult:
    """What a k-means fit found on its training features."""

    labels: np.ndarray  # (N,) cluster of each training sample
    centers: np.ndarray  # (k, D)
    inertia: float  # sum of squared distances to the nearest centre


def _features(x, name: str) -> np.ndarray:
    array = np.asarray(x, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D feature array (N, D), got shape {array.shape}.")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values.")
    return array


REPORTS_PER_FIT = 30  # a fit with many restarts reports progress about this many times


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two labellings split the samples the same way, whatever the cluster numbers."""
    pairs = np.unique(np.stack([a, b], axis=1), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def fit_kmeans(
    x: np.ndarray, k: int, seed: int = 0, n_init: int = 10, progress: Progress = no_progress
) -> tuple[KMeans, KMeansResult]:
    """Fit scikit-learn k-means (k-means++ starts, ``n_init`` restarts, seeded) on ``x`` (N, D).

    ``progress(done, n_init)`` hears the restarts done, a batch of them at a time. Every batch draws its
    starts from one generator seeded with ``seed``, so the starts are those of ``KMeans(n_init=n_init,
    random_state=seed)``; a later batch's best replaces the best so far, as scikit-learn decides between
    restarts, only when its inertia is lower and its clustering differs.
    """
    features = _features(x, "x")
    if not 1 <= int(k) <= len(features):
        raise ValueError(f"k-means needs 1 <= k <= number of samples, got k={k} for {len(features)} samples.")
    if int(n_init) < 1:
        raise ValueError(f"k-means needs at least one restart, got n_init={n_init}.")
    generator = np.random.RandomState(seed)
    per_batch = max(1, math.ceil(n_init / REPORTS_PER_FIT))
    best: KMeans | None = None
    done = 0
    while done < n_init:
        batch = min(per_batch, n_init - done)
        model = KMeans(n_clusters=int(k), random_state=generator, n_init=batch).fit(features)
        if best is None or (
            model.inertia_ < best.inertia_ and not _same_partition(model.labels_, best.labels_)
        ):
            best = model
        done += batch
        progress(done, n_init)
    best.random_state = seed  # the generator it drew from is spent; the seed says how to draw it again
    best.n_init = n_init
    result = KMeansResult(
        labels=np.asarray(best.labels_, dtype=np.int64),
        centers=np.asarray(best.cluster_centers_),
        inertia=float(best.inertia_),
    )
    return best, result


def _squared_distances(x, centers) -> np.ndarray:
    """(N, k) squared Euclidean distances, summed per element so equal distances compare equal."""
    points, centres = _features(x, "x"), _features(centers, "centers")
    if points.shape[1] != centres.shape[1]:
        raise ValueError(
            f"x has {points.shape[1]} dimensions but the centres have {centres.shape[1]}; they must match."
        )
    rows = max(1, _CHUNK_ELEMENTS // (centres.shape[0] * centres.shape[1]))
    parts = [
        ((points[start : start + rows, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
        for start in range(0, len(points), rows)
    ]
    return np.concatenate(parts)


def assign_clusters(x, centers) -> np.ndarray:
    """Index of the nearest centre for each row of ``x`` (squared Euclidean); ties go to the lower index."""
    return np.argmin(_squared_distances(x, centers), axis=1).astype(np.int64)


def distances_to_centers(x, centers) -> np.ndarray:
    """(N, k) Euclidean distances from each row of ``x`` to each centre."""
    return np.sqrt(_squared_distances(x, centers))


def evaluate_clusterings(
    features: dict[str, tuple[np.ndarray, np.ndarray]],
    y_test: np.ndarray,
    k: int,
    seed: int = 0,
    restarts: int = 10,
    progress: Progress = no_progress,
) -> dict[str, dict[str, float]]:
    """Score k-means on several representations side by side.

    ``features`` maps a name (e.g. "ceir", "clip_embedding", "concepts") to (train features,
    test features). For each, k-means is fitted on the train features, the test features go to
    their nearest centre, and ACC / NMI / ARI are computed against ``y_test``. k-means keeps the best of
    ``restarts`` k-means++ starts; ``progress`` counts the restarts of all the fits together.
    """
    labels = _labels(y_test, "y_test")
    scores: dict[str, dict[str, float]] = {}
    total = restarts * len(features)
    for i, (name, (train, test)) in enumerate(features.items()):
        test_features = _features(test, f"The '{name}' test features")
        if len(test_features) != len(labels):
            raise ValueError(
                f"The '{name}' test features have {len(test_features)} rows but y_test has {len(labels)}."
            )
        _, fit = fit_kmeans(
            _features(train, f"The '{name}' train features"),
            k,
            seed=seed,
            n_init=restarts,
            progress=offset_progress(progress, i * restarts, total),
        )
        scores[name] = clustering_scores(labels, assign_clusters(test_features, fit.centers))
    return scores


def offset_progress(progress: Progress, before: int, total: int) -> Progress:
    """A callback for one part of a longer count: ``(done, _)`` reaches ``progress`` as ``(before + done,
    total)``."""
    return lambda done, _total: progress(before + done, total)
