"""Which concepts become an image's labels: the evidence rule by hand, for banks of 13 and 400 concepts."""

from __future__ import annotations

import numpy as np
import pytest

from core.ceir.labels import EVEN_SHARE_FACTOR, MIN_SHARE, NO_LABELS, label_share, labels_by_share


def labelled(concepts, vectors, contributions, top_k=5, **rule):
    """(concept, score) pairs of each image, scores rounded to 6 places."""
    result = labels_by_share(
        concepts, np.asarray(vectors), np.asarray(contributions), np.zeros(len(vectors), int), top_k, **rule
    )
    return [[(label.concept, round(label.score, 6)) for label in labels] for labels, _ in result]


def test_the_share_a_label_needs_follows_the_concepts_that_carry_evidence():
    assert (MIN_SHARE, EVEN_SHARE_FACTOR) == (0.1, 2)
    assert label_share(7) == 0.1  # few concepts: the fixed 10 %
    assert label_share(20) == 0.1  # 2 / 20 is 10 % too
    assert label_share(21) == pytest.approx(2 / 21)  # from here on, twice an even share
    assert label_share(200) == pytest.approx(0.01)
    assert label_share(0) == 0.1  # no positive evidence: nothing can reach any share anyway
    assert "either 10% of the evidence" in NO_LABELS and "twice an even share of it (2/n" in NO_LABELS


def big_bank_image() -> tuple[list[str], np.ndarray, np.ndarray]:
    """One image over 400 concepts whose positive evidence sums to 200, spread over 183 concepts.

    concept 0-3: 6, 5, 4, 3 (shown: activation above the mean); concept 4: 3, but "NOT" (activation below the
    mean); concept 5: 2; concepts 6-182: 1 each (177 of them); concepts 183-399: -0.5 each (evidence against).
    """
    concepts = [f"concept {i}" for i in range(400)]
    contribution = np.full(400, -0.5)
    contribution[:6] = [6, 5, 4, 3, 3, 2]
    contribution[6:183] = 1.0
    activation = np.ones(400)
    activation[4] = -1.0
    assert contribution[contribution > 0].sum() == 200 and (contribution > 0).sum() == 183
    return concepts, activation[None], contribution[None]


def test_a_400_concept_bank_gets_the_concepts_that_stand_out():
    concepts, activation, contribution = big_bank_image()
    # the old rule, a fixed 10 %: the strongest concept carries 6 / 200 = 3 %, so no label at all
    assert labelled(concepts, activation, contribution, factor=np.inf) == [[]]
    # the new one: 183 concepts carry evidence, an even share is 1/183, a label needs 2/183 = 1.09 %.
    # Concepts 0-3 carry 3 %, 2.5 %, 2 % and 1.5 %; concept 4 (1.5 %) is a NOT and no label; concept 5 carries
    # exactly 1 %, under 1.09 %; the rest 0.5 %.
    assert labelled(concepts, activation, contribution) == [
        [("concept 0", 0.03), ("concept 1", 0.025), ("concept 2", 0.02), ("concept 3", 0.015)]
    ]
    assert labelled(concepts, activation, contribution, top_k=2) == [
        [("concept 0", 0.03), ("concept 1", 0.025)]
    ]


def test_evidence_split_evenly_over_400_concepts_gives_no_label():
    """Nothing stands out when every concept carries the same share: 1/400 is under 2/400."""
    concepts = [f"concept {i}" for i in range(400)]
    assert labelled(concepts, np.ones((1, 400)), np.ones((1, 400))) == [[]]


def test_a_small_bank_keeps_the_fixed_ten_percent():
    """13 concepts, 7 of them with positive evidence summing to 10: a label needs min(10 %, 2/7) = 10 %."""
    concepts = [f"c{i}" for i in range(13)]
    contribution = np.array([[4.0, 3.0, 1.5, 0.9, 0.3, 0.2, 0.1, -1.0, -0.5, -0.3, -0.2, -0.1, 0.0]])
    activation = np.ones((1, 13))
    activation[0, 1] = -0.5  # c1 carries 30 %, but the image shows less of it than an average one: no label
    # shares 40 %, (30 %), 15 %, then 9 % (under 10 %: no label), 3 %, 2 %, 1 %
    expected = [[("c0", 0.4), ("c2", 0.15)]]
    assert labelled(concepts, activation, contribution) == expected
    assert labelled(concepts, activation, contribution, factor=np.inf) == expected  # the old rule: the same
    # with 20 positive concepts the rule is still 10 %; with 21 it is 2/21 = 9.5 %, and 9.6 % becomes a label
    many = np.array([[50.0, 9.6] + [40.4 / 19] * 19])
    assert labelled([f"c{i}" for i in range(21)], np.ones((1, 21)), many) == [[("c0", 0.5), ("c1", 0.096)]]
    fewer = np.array([[50.0, 9.6] + [40.4 / 18] * 18])
    assert labelled([f"c{i}" for i in range(20)], np.ones((1, 20)), fewer) == [[("c0", 0.5)]]
