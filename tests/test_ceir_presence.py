"""Presence thresholds: Otsu's cut of each concept's training scores, never below the training mean."""

import numpy as np
import pytest

from core.ceir.presence import otsu_threshold, presence_thresholds, present_concepts


def between_group_variance(x: np.ndarray, threshold: float) -> float:
    low, high = x[x <= threshold], x[x > threshold]
    w = len(low) / len(x)
    return w * (1 - w) * (low.mean() - high.mean()) ** 2


def test_otsu_by_hand():
    # two groups: {0, 1} and {9, 10}; the cut between 1 and 9 separates them, its midpoint is 5
    assert otsu_threshold([10, 0, 9, 1]) == pytest.approx(5.0)
    # by hand for 0, 0, 1, 3: cut after the zeros gives 0.5 * 0.5 * (0 - 2)^2 = 1, after the 1 gives
    # 0.75 * 0.25 * (1/3 - 3)^2 = 4/3 (the best), so the threshold is (1 + 3) / 2
    assert otsu_threshold([0, 0, 1, 3]) == pytest.approx(2.0)
    assert otsu_threshold([4, 4, 4]) == 4.0  # constant: nothing lies above
    with pytest.raises(ValueError, match="finite"):
        otsu_threshold([1.0, np.nan])
    with pytest.raises(ValueError, match="non-empty"):
        otsu_threshold([])


def test_otsu_beats_every_other_cut():
    """Against brute force over every cut of random data."""
    x = np.random.default_rng(3).normal(size=60) ** 3
    best = otsu_threshold(x)
    values = np.sort(x)
    cuts = (values[1:] + values[:-1]) / 2
    assert between_group_variance(x, best) == pytest.approx(max(between_group_variance(x, c) for c in cuts))


def test_presence_thresholds_split_a_minority_concept_and_never_go_below_the_mean():
    rng = np.random.default_rng(0)
    present = rng.random(2000) < 0.25  # a concept true of a quarter of the images
    minority = np.where(present, rng.normal(1.6, 0.3, 2000), rng.normal(-0.55, 0.3, 2000))
    majority = -minority  # true of three quarters: Otsu's cut lies below the mean
    flat = rng.normal(size=2000)
    thresholds = presence_thresholds(np.stack([minority, majority, flat], axis=1))
    assert 0.3 < thresholds[0] < 1.0  # between the groups, above the mean
    assert ((minority > thresholds[0]) == present).mean() > 0.99
    assert thresholds[1] == 0.0  # floored at the training mean
    assert thresholds[2] >= 0.0
    with pytest.raises(ValueError, match="images x concepts"):
        presence_thresholds(np.zeros(5))


def test_present_concepts_highest_first():
    concepts = ["a", "b", "c", "d"]
    assert present_concepts([2.0, 0.5, 3.0, 0.1], [1.0, 0.6, 2.5, 0.0], concepts) == ["c", "a", "d"]
    assert present_concepts([0.0, 0.0, 0.0, 0.0], [0.5] * 4, concepts) == []
