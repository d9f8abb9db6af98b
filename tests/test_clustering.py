"""CEIR clustering metrics and k-means helpers, checked against hand-worked values and brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from core.ceir.clustering import (
    assign_clusters,
    cluster_accuracy,
    clustering_scores,
    distances_to_centers,
    evaluate_clusterings,
    fit_kmeans,
)


def brute_force_accuracy(y_true, y_pred) -> float:
    """Try every one-to-one matching of clusters to classes (padded square) and keep the best."""
    classes, clusters = sorted(set(y_true)), sorted(set(y_pred))
    size = max(len(classes), len(clusters))
    best = 0
    for perm in itertools.permutations(range(size)):
        mapping = {cluster: perm[i] for i, cluster in enumerate(clusters)}
        hits = sum(
            1
            for t, p in zip(y_true, y_pred, strict=True)
            if mapping[p] < len(classes) and classes[mapping[p]] == t
        )
        best = max(best, hits)
    return best / len(y_true)


# ---- ACC / NMI / ARI ----------------------------------------------------------------------------


def test_permuted_labelling_is_perfect():
    y_true = [0, 0, 1, 1, 2, 2, 2]
    y_pred = [2, 2, 0, 0, 1, 1, 1]
    assert clustering_scores(y_true, y_pred) == pytest.approx({"acc": 1.0, "nmi": 1.0, "ari": 1.0})


def test_hand_worked_contingency_example():
    y_true = [0, 0, 0, 1, 1, 1]
    y_pred = [1, 1, 0, 0, 0, 0]
    # Contingency (rows = clusters, columns = classes):
    #   cluster 0: class 0 -> 1 (sample 2), class 1 -> 3 (samples 3, 4, 5)
    #   cluster 1: class 0 -> 2 (samples 0, 1), class 1 -> 0
    # Matching {0->0, 1->1} gets 1 + 0 = 1; matching {0->1, 1->0} gets 3 + 2 = 5. Best = 5, ACC = 5/6.
    assert cluster_accuracy(y_true, y_pred) == pytest.approx(5 / 6)
    # ARI by hand: sum C(n_ij, 2) = C(3,2) + C(2,2) = 4; cluster sizes 4, 2 -> 6 + 1 = 7;
    # class sizes 3, 3 -> 3 + 3 = 6; C(6, 2) = 15; expected = 7 * 6 / 15 = 2.8; max = (7 + 6) / 2 = 6.5.
    # ARI = (4 - 2.8) / (6.5 - 2.8) = 12 / 37.
    scores = clustering_scores(y_true, y_pred)
    assert scores["ari"] == pytest.approx(12 / 37)
    # NMI by hand (natural logs; arithmetic-mean normalisation):
    # MI = 1/6 ln((1/6)/(4/6*1/2)) + 3/6 ln((3/6)/(4/6*1/2)) + 2/6 ln((2/6)/(2/6*1/2))
    mutual = (1 / 6) * math.log(0.5) + 0.5 * math.log(1.5) + (1 / 3) * math.log(2)
    h_true = math.log(2)
    h_pred = -(2 / 3) * math.log(2 / 3) - (1 / 3) * math.log(1 / 3)
    assert scores["nmi"] == pytest.approx(mutual / ((h_true + h_pred) / 2))


def test_more_clusters_than_classes():
    # Clusters 0 and 1 both hold class 0, but only one of them can be matched: 1 + 2 = 3 of 4 right.
    assert cluster_accuracy([0, 0, 1, 1], [0, 1, 2, 2]) == pytest.approx(3 / 4)


def test_fewer_clusters_than_classes():
    # Cluster 0 holds one sample each of classes 0 and 1; cluster 1 holds both of class 2: 1 + 2 = 3 of 4.
    assert cluster_accuracy([0, 1, 2, 2], [0, 0, 1, 1]) == pytest.approx(3 / 4)


def test_non_contiguous_and_string_labels():
    y_true = np.array([10, 10, 42, 42, 7, 7])
    y_pred = np.array([-3, -3, 100, 100, 5, 9])
    assert cluster_accuracy(y_true, y_pred) == pytest.approx(5 / 6)
    names = ["cat", "cat", "dog", "dog", "eel", "eel"]
    assert cluster_accuracy(names, y_pred) == pytest.approx(5 / 6)
    contiguous = clustering_scores([1, 1, 2, 2, 0, 0], [0, 0, 1, 1, 2, 3])
    assert clustering_scores(y_true, y_pred) == pytest.approx(contiguous)


@pytest.mark.parametrize("seed", range(6))
def test_accuracy_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n_classes, n_clusters = rng.integers(2, 5), rng.integers(2, 6)
    y_true = rng.integers(0, n_classes, size=25).tolist()
    y_pred = (rng.integers(0, n_clusters, size=25) * 3 + 1).tolist()
    assert cluster_accuracy(y_true, y_pred) == pytest.approx(brute_force_accuracy(y_true, y_pred))


def test_bad_labels_are_rejected():
    with pytest.raises(ValueError, match="must match"):
        cluster_accuracy([0, 1, 1], [0, 1])
    with pytest.raises(ValueError, match="non-empty 1-D"):
        clustering_scores([], [])


# ---- k-means helpers ----------------------------------------------------------------------------


def test_assign_clusters_matches_brute_force():
    rng = np.random.default_rng(0)
    x, centers = rng.normal(size=(60, 3)), rng.normal(size=(5, 3))
    expected = [
        min(range(len(centers)), key=lambda j, p=p: sum((p[d] - centers[j][d]) ** 2 for d in range(3)))
        for p in x.tolist()
    ]
    assert assign_clusters(x, centers).tolist() == expected
    assert np.allclose(distances_to_centers(x, centers), cdist(x, centers))


def test_assign_clusters_breaks_ties_to_lower_index():
    x = np.array([[1.0, 0.0], [1.0, 5.0]])
    # (1, 0) is exactly 1 away from both centres; (1, 5) too (both at distance sqrt(26)).
    assert assign_clusters(x, np.array([[0.0, 0.0], [2.0, 0.0]])).tolist() == [0, 0]
    assert assign_clusters(x, np.array([[2.0, 0.0], [0.0, 0.0], [0.0, 0.0]])).tolist() == [0, 0]
    assert distances_to_centers(x, np.array([[0.0, 0.0], [2.0, 0.0]]))[0].tolist() == [1.0, 1.0]


def test_assign_clusters_rejects_dimension_mismatch():
    with pytest.raises(ValueError, match="dimensions"):
        assign_clusters(np.zeros((3, 2)), np.zeros((2, 3)))


def test_fit_kmeans_labels_are_nearest_centres_and_inertia_adds_up():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(80, 4))
    _, result = fit_kmeans(x, 3, seed=0)
    assert result.centers.shape == (3, 4)
    assert result.labels.tolist() == assign_clusters(x, result.centers).tolist()
    assert result.inertia == pytest.approx((distances_to_centers(x, result.centers).min(axis=1) ** 2).sum())


def test_more_restarts_reach_the_best_objective_from_every_seed():
    """Twelve blobs: one k-means++ start lands in a worse local optimum from some seeds; the best of 50 starts
    reaches the same lowest objective from every seed, and never a higher one than a single start."""
    rng = np.random.default_rng(0)
    x = np.concatenate([c + rng.normal(scale=0.5, size=(15, 2)) for c in rng.normal(size=(12, 2)) * 4])
    one = np.array([fit_kmeans(x, 12, seed=s, n_init=1)[1].inertia for s in range(10)])
    many = np.array([fit_kmeans(x, 12, seed=s, n_init=50)[1].inertia for s in range(10)])
    assert (one > many.min() * 1.01).any()
    np.testing.assert_allclose(many, many.min())
    assert (many <= one + 1e-9).all()
    labels = np.repeat(np.arange(12), 15)
    scores = [evaluate_clusterings({"x": (x, x)}, labels, 12, seed=s, restarts=50)["x"] for s in range(3)]
    assert scores[1] == pytest.approx(scores[0]) and scores[2] == pytest.approx(scores[0])


@pytest.mark.parametrize("k", [0, 11])
def test_fit_kmeans_rejects_bad_k(k):
    with pytest.raises(ValueError, match=f"k={k} for 10 samples"):
        fit_kmeans(np.zeros((10, 2)), k)


def test_evaluate_clusterings_informative_vs_noise():
    rng = np.random.default_rng(2)
    k, dims = 3, 5
    means = np.eye(k, dims) * 20.0

    def blobs(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, k, size=n)
        return means[labels] + rng.normal(size=(n, dims)), labels

    (train, _), (test, y_test) = blobs(150), blobs(300)
    noise_train, noise_test = rng.normal(size=(150, dims)), rng.normal(size=(300, dims))
    scores = evaluate_clusterings(
        {"blobs": (train, test), "noise": (noise_train, noise_test)}, y_test, k=k, seed=0
    )
    assert scores["blobs"] == pytest.approx({"acc": 1.0, "nmi": 1.0, "ari": 1.0})
    # Chance ACC for 3 balanced classes is 1/3 (a little more after the best matching).
    assert scores["noise"]["acc"] < 0.45
    assert scores["noise"]["nmi"] < 0.05
    assert abs(scores["noise"]["ari"]) < 0.05


def test_evaluate_clusterings_rejects_mismatched_test_rows():
    with pytest.raises(ValueError, match="'ceir' test features have 4 rows but y_test has 5"):
        evaluate_clusterings({"ceir": (np.zeros((6, 2)), np.zeros((4, 2)))}, np.zeros(5), k=2)
