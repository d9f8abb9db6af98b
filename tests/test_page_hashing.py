"""The two ConceptHash views: the plain helpers in ``lens.hashing`` against hand-made codes, and the
pages "Hash codes, bit by bit" and "Concept attention" through AppTest on the tiny bundles."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.concepthash.evaluate import subcode_values
from lens import counterfactual, hashing

# Five images, four bits, two concepts (c0 = columns 0-1, c1 = columns 2-3).
CODES = np.array(
    [
        [1, -1, 1, 1],  # 1011
        [-1, -1, 1, -1],  # 0010
        [1, -1, -1, 1],  # 1001
        [-1, -1, 1, -1],  # 0010 (same as #1)
        [-1, 1, -1, -1],  # 0100
    ],
    dtype=np.int8,
)
LABELS = np.array([0, 1, 0, 1, 1])


# --- plain helpers --------------------------------------------------------------------------------


def test_bit_labels_and_uneven_split():
    assert hashing.bit_labels(6, 3) == ["c0·b0", "c0·b1", "c1·b0", "c1·b1", "c2·b0", "c2·b1"]
    with pytest.raises(ValueError, match="7 bits cannot be split evenly over 3 concepts"):
        hashing.bit_labels(7, 3)


def test_bit_matrix_order_by_hand():
    assert hashing.bit_matrix_order(CODES, LABELS, "original").tolist() == [0, 1, 2, 3, 4]
    # code: 0010 (#1), 0010 (#3, tie keeps database order), 0100 (#4), 1001 (#2), 1011 (#0)
    assert hashing.bit_matrix_order(CODES, LABELS, "code").tolist() == [1, 3, 4, 2, 0]
    # class 0 = {#0 1011, #2 1001} -> #2, #0; class 1 = {#1 0010, #3 0010, #4 0100} -> #1, #3, #4
    assert hashing.bit_matrix_order(CODES, LABELS, "class").tolist() == [2, 0, 1, 3, 4]
    with pytest.raises(ValueError, match="Sort mode must be one of"):
        hashing.bit_matrix_order(CODES, LABELS, "random")
    with pytest.raises(ValueError, match="5 codes but 4 labels"):
        hashing.bit_matrix_order(CODES, LABELS[:4], "class")


def test_bit_matrix_order_matches_brute_force():
    rng = np.random.default_rng(3)
    codes = np.where(rng.random((60, 8)) > 0.5, 1, -1).astype(np.int8)
    labels = rng.integers(0, 5, 60)
    by_class = sorted(range(60), key=lambda i: (labels[i], tuple(codes[i]), i))
    by_code = sorted(range(60), key=lambda i: (tuple(codes[i]), i))
    assert hashing.bit_matrix_order(codes, labels, "class").tolist() == by_class
    assert hashing.bit_matrix_order(codes, labels, "code").tolist() == by_code


def test_images_by_bit_splits_on_and_off():
    on, off = hashing.images_by_bit(CODES, 2, n=10, seed=0)
    assert sorted(on.tolist()) == [0, 1, 3] and sorted(off.tolist()) == [2, 4]
    on, off = hashing.images_by_bit(CODES, 1, n=10, seed=0, labels=LABELS)
    assert on.tolist() == [4] and sorted(off.tolist()) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="Bit 4 does not exist"):
        hashing.images_by_bit(CODES, 4)


def test_images_by_bit_sample_follows_the_classes_and_is_seeded():
    codes = np.ones((12, 2), dtype=np.int8)
    labels = np.repeat([0, 1, 2], 4)
    for n, per_class in ((3, 1), (6, 2)):
        on, off = hashing.images_by_bit(codes, 0, n=n, seed=1, labels=labels)
        assert len(off) == 0 and len(set(on.tolist())) == n
        assert np.bincount(labels[on], minlength=3).tolist() == [per_class] * 3
    same = hashing.images_by_bit(codes, 0, n=6, seed=1, labels=labels)[0]
    assert same.tolist() == hashing.images_by_bit(codes, 0, n=6, seed=1, labels=labels)[0].tolist()
    draws = {tuple(hashing.images_by_bit(codes, 0, n=6, seed=s, labels=labels)[0]) for s in range(6)}
    assert len(draws) > 1, "another seed draws another sample"


def test_a_sample_shows_what_the_population_is():
    """220 images of class 0 and 20 of class 1: 12 drawn are 11 and 1 (a class-balanced sample gave 6 and 6,
    showing the outlier class as if it were half of them)."""
    labels = np.repeat([0, 1], [220, 20])
    for seed in range(5):
        sample = hashing.proportional_sample(np.arange(240), labels, 12, seed)
        assert np.bincount(labels[sample], minlength=2).tolist() == [11, 1]
        assert labels[sample[0]] == 0, "the larger class first"
        assert len(set(sample.tolist())) == 12
    # 1:1:1 with 4 to draw: one class gets the spare image, by largest remainder with ties at random
    labels = np.repeat([0, 1, 2], 5)
    counts = [
        np.bincount(labels[hashing.proportional_sample(np.arange(15), labels, 4, s)], minlength=3)
        for s in range(8)
    ]
    assert all(sorted(c.tolist()) == [1, 1, 2] for c in counts)
    assert len({int(np.argmax(c)) for c in counts}) > 1, "the spare image does not always go to one class"
    assert hashing.proportional_sample(np.arange(3), np.zeros(3, dtype=int), 10).tolist() != []
    assert len(hashing.proportional_sample(np.arange(3), np.zeros(3, dtype=int), 10)) == 3


def test_subcode_value_table_by_hand():
    # concept 1's bits (b0, b1) of CODES: #0 -> 3, #1 -> 1, #2 -> 2, #3 -> 1, #4 -> 0
    table = hashing.subcode_value_table(CODES, np.array([0, 1, 1, 0, 1]), 1, 2, ["red", "blue"])
    assert table["value"].tolist() == [1, 0, 2, 3], "most images first, then by value"
    first = table.iloc[0]
    assert (first["bits"], first["images"], first["classes"]) == ("10", 2, 2)
    assert first["share"] == pytest.approx(2 / 5) and first["majority share"] == pytest.approx(0.5)
    assert first["majority class"] == "red", "ties go to the lower class index"
    assert table.iloc[1]["majority class"] == "blue"
    assert hashing.subcode_value_label(first) == "value 1 · 10 · 2 images · mostly red (50%)"


def test_images_by_subcode_and_bit_strings():
    groups = hashing.images_by_subcode(CODES, 1, 2)
    # c1 bits (b0, b1): #0 (1,1)=3, #1 (1,0)=1, #2 (0,1)=2, #3 (1,0)=1, #4 (0,0)=0
    assert {v: g.tolist() for v, g in groups.items()} == {0: [4], 1: [1, 3], 2: [2], 3: [0]}
    assert list(groups) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="Concept 2 does not exist"):
        hashing.images_by_subcode(CODES, 2, 2)
    assert hashing.subcode_bits(2, 2) == "01" and hashing.subcode_bits(1, 3) == "100"
    with pytest.raises(ValueError, match="does not fit in 2 bits"):
        hashing.subcode_bits(4, 2)


def test_format_code_agrees_with_subcode_values():
    assert hashing.format_code(np.array([1, -1, -1, 1, 1, -1, 1, -1]), 2) == "c0: 1001  c1: 1010"
    rng = np.random.default_rng(0)
    codes = np.where(rng.random((40, 12)) > 0.5, 1, -1).astype(np.int8)
    values = subcode_values(codes, 3)
    for row, vals in zip(codes, values, strict=True):
        assert hashing.code_groups(row, 3) == [hashing.subcode_bits(int(v), 4) for v in vals]


def test_image_helpers():
    pixels = np.arange(6 * 10 * 3, dtype=np.uint8).reshape(6, 10, 3)
    square = hashing.center_square(Image.fromarray(pixels))
    assert np.array_equal(np.asarray(square), pixels[:, 2:8])
    assert hashing.display_image(Image.new("RGB", (32, 32)), 192).size == (192, 192)
    assert hashing.display_image(Image.new("RGB", (400, 300)), 192).size == (256, 192)
    mask = np.array([[True, False], [False, True]])
    assert hashing.resize_mask(mask, (4, 4)).tolist() == np.kron(mask, np.ones((2, 2), bool)).tolist()


def test_tables_from_metrics():
    metrics = {"subcode_part_nmi": {"parts": ["head", "tail"], "matrix": [[0.5, 0.1], [0.2, 0.9]]}}
    nmi = hashing.nmi_table(metrics)
    assert nmi.to_dict("list") == {"concept": ["c0", "c1"], "head": [0.5, 0.2], "tail": [0.1, 0.9]}
    assert hashing.nmi_table({}) is None and hashing.naming_table({}) is None


def test_bit_matrix_figure():
    order = hashing.bit_matrix_order(CODES, LABELS, "code")
    fig = hashing.bit_matrix_figure(CODES, LABELS, order, 2, ["a", "b"])
    heat = fig.data[0]
    assert np.array_equal(np.asarray(heat.z), (CODES[order] > 0).astype(int))
    assert list(heat.x) == ["c0·b0", "c0·b1", "c1·b0", "c1·b1"]
    assert [shape.x0 for shape in fig.layout.shapes] == [1.5]
    assert heat.showscale is not False and list(heat.colorbar.ticktext) == ["off (−1)", "on (+1)"]
    assert list(heat.y) == ["#1 b", "#3 b", "#4 b", "#2 a", "#0 a"]  # image and class name per row
    assert not fig.layout.annotations
    named = hashing.bit_matrix_figure(CODES, LABELS, order, 2, ["a", "b"], {0: "wing", 1: "head"})
    assert [(a.text, a.x) for a in named.layout.annotations] == [
        ("<b>c0 ≈ wing</b>", 0.5),
        ("<b>c1 ≈ head</b>", 2.5),
    ]


def test_bit_frequency_figure_by_hand():
    # CODES rows #0..#4, LABELS: class of each; bit 0 of class a (#0, #2) and b (#1, #3, #4)
    fig = hashing.bit_frequency_figure(CODES, LABELS, 2, ["a", "b"], {0: "wing"})
    heat = fig.data[0]
    labels = np.asarray(LABELS)
    expected = [(CODES[labels == c] > 0).mean(axis=0) for c in (0, 1)]
    assert np.allclose(np.asarray(heat.z), expected)
    assert list(heat.y) == ["a", "b"] and list(heat.x) == ["c0·b0", "c0·b1", "c1·b0", "c1·b1"]
    assert np.asarray(heat.customdata)[:, 0].tolist() == np.bincount(LABELS).tolist()
    assert [a.text for a in fig.layout.annotations] == ["<b>c0 ≈ wing</b>"]


def test_64_bit_codes_are_labelled_by_concept_and_classes_are_separated():
    rng = np.random.default_rng(0)
    codes = np.where(rng.random((30, 64)) < 0.5, 1, -1).astype(np.int8)
    labels = np.repeat([2, 0, 1], 10)
    order = hashing.bit_matrix_order(codes, labels, "class")
    fig = hashing.bit_matrix_figure(
        codes, labels, order, 8, ["a", "b", "c"], {3: "head"}, class_boundaries=True
    )
    axis = fig.layout.xaxis
    assert list(axis.ticktext) == ["c0", "c1", "c2", "c3 ≈ head", "c4", "c5", "c6", "c7"]
    assert list(axis.tickvals) == [3.5 + 8 * m for m in range(8)], "the middle of each 8-bit sub-code"
    assert not fig.layout.annotations, "no titles printed over the labels"
    lines = [shape for shape in fig.layout.shapes if shape.y0 == shape.y1]
    assert sorted(line.y0 for line in lines) == [9.5, 19.5], "one line between each pair of classes"
    unsorted = hashing.bit_matrix_figure(
        codes, labels, np.arange(30)[::-1], 8, ["a", "b", "c"], class_boundaries=True
    )
    assert len([s for s in unsorted.layout.shapes if s.y0 == s.y1]) == 2  # reversed blocks are still blocks
    mixed = hashing.bit_matrix_figure(
        codes,
        labels,
        hashing.bit_matrix_order(codes, labels, "code"),
        8,
        ["a", "b", "c"],
        class_boundaries=True,
    )
    assert not [s for s in mixed.layout.shapes if s.y0 == s.y1], (
        "rows that do not run class by class: no lines"
    )


# --- concept naming and the part-swap matrix ------------------------------------------------------

SWAP = {
    "parts": ["head", "wing", "body", "tail"],
    # parts x concepts: concept 0 follows the wing, 1 the body, 2 the head; the tail leaks into 2
    "matrix": [[0.05, 0.0, 0.9], [0.8, 0.1, 0.0], [0.0, 0.95, 0.02], [0.0, 0.0, 0.3]],
    "matched": [
        {"concept": 0, "part": "wing", "flip_rate": 0.8},
        {"concept": 1, "part": "body", "flip_rate": 0.95},
        {"concept": 2, "part": "head", "flip_rate": 0.9},
    ],
    "matched_flip_rate_mean": 0.8833,
    "matched_flip_rate_min": 0.8,
    "largest_off_diagonal": {"part": "tail", "concept": 2, "flip_rate": 0.3},
}
BY_COUNTERFACTUAL = {  # species-part repaints split by what they make (core.concepthash.evaluate)
    "trained_species": {
        "parts": ["head", "wing", "body"],
        "pairs": [5, 6, 7],
        "matrix": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        "matched_flip_rate_mean": 1.0,
        "largest_off_diagonal": {"part": "head", "concept": 1, "flip_rate": 0.0},
    },
    "new_combination": {
        "parts": ["head", "wing", "body"],
        "pairs": [20, 21, 22],
        "matrix": [[0.5, 0.7, 0.6], [0.6, 0.5, 0.6], [0.6, 0.6, 0.5]],
        "matched_flip_rate_mean": 0.55,
        "largest_off_diagonal": {"part": "head", "concept": 1, "flip_rate": 0.7},
    },
}
LOCALISED = {"localization": {"concepts": [{"concept": 0, "part": "head", "hit_rate": 0.5, "random": 0.1}]}}


def test_concepts_are_named_by_the_part_swap_matching_only():
    names, source = hashing.concept_names({"part_swap": SWAP, **LOCALISED})
    assert names == {0: "wing", 1: "body", 2: "head"} and source == "part swap"
    # a bundle evaluated before part_swap: nothing names its concepts (the localisation matching never does)
    assert hashing.concept_names(LOCALISED) == ({}, None)
    assert hashing.concept_names({"part_swap": {**SWAP, "matched": []}, **LOCALISED})[0] == names, (
        "the matching comes from the matrix"
    )
    assert hashing.concept_names({}) == ({}, None)
    # the CLS baseline has no concepts to name, whatever its metrics say
    assert hashing.concept_names({"part_swap": SWAP, **LOCALISED}, cls_baseline=True) == ({}, None)
    assert hashing.concept_label(1, names) == "concept 1 ≈ body"
    assert hashing.concept_label(1, names, short=True) == "c1 ≈ body"
    assert hashing.concept_label(3, names) == "concept 3"
    nmi = hashing.nmi_table({"subcode_part_nmi": {"parts": ["head"], "matrix": [[0.1], [0.2], [0.3]]}}, names)
    assert nmi["concept"].tolist() == ["c0 ≈ wing", "c1 ≈ body", "c2 ≈ head"]
    cls = {"part_swap": {"parts": SWAP["parts"], "matrix": [[0.7], [0.6], [0.8], [0.2]]}}
    assert hashing.naming_table(cls, cls_baseline=True)["concept"].tolist() == [hashing.WHOLE_CODE]
    assert hashing.naming_table({"part_swap": SWAP})["concept"].tolist() == [
        "c0 ≈ wing",
        "c1 ≈ body",
        "c2 ≈ head",
    ]


def test_part_swap_table_summary_and_figure():
    assert hashing.part_swap({}) is None and hashing.part_swap({"part_swap": {"parts": []}}) is None
    names, _ = hashing.concept_names({"part_swap": SWAP})
    table, matched = hashing.part_swap_table(hashing.part_swap({"part_swap": SWAP}), names)
    assert table.index.tolist() == ["head", "wing", "body", "tail"], "parts as rows, the tail included"
    assert table.columns.tolist() == ["concept 0 ≈ wing", "concept 1 ≈ body", "concept 2 ≈ head"]
    assert table.loc["tail", "concept 2 ≈ head"] == 0.3
    assert sorted(matched) == [(0, 2), (1, 0), (2, 1)]  # (part row, concept column)
    summary = hashing.part_swap_summary(SWAP, names)
    assert summary.startswith(
        "A matched sub-code flips on 88% of its part's colour swaps on average (lowest 80%)"
    )
    assert "largest unmatched flip rate is 30% (concept 2 ≈ head when the tail changes)" in summary
    assert hashing.part_swap_summary({"matrix": [[1]]}, names) == ""
    fig = hashing.part_swap_figure(table, matched)
    assert np.allclose(np.asarray(fig.data[0].z), SWAP["matrix"]) and len(fig.layout.shapes) == 3
    assert fig.layout.shapes[0].x0 == -0.5 and fig.layout.shapes[0].y0 == 0.5  # concept 0, wing row

    assert hashing.part_swap_split_table(SWAP) is None, "evaluated before the split"
    split = hashing.part_swap_split_table({**SWAP, "by_counterfactual": BY_COUNTERFACTUAL})
    assert split["repaints"].tolist() == [18, 63]
    assert split["matched sub-code flips"].tolist() == [1.0, 0.55]
    assert split["largest unmatched flip"].tolist() == [0.0, 0.7]
    assert split["the repaint"].str.contains("no species has").tolist() == [False, True]
    one_kind = {"trained_species": BY_COUNTERFACTUAL["trained_species"], "new_combination": {"matrix": None}}
    assert len(hashing.part_swap_split_table({**SWAP, "by_counterfactual": one_kind})) == 1

    cls = {"parts": SWAP["parts"], "matrix": [[0.9], [0.8], [0.7], [0.4]]}
    table, matched = hashing.part_swap_table(cls, {}, cls_baseline=True)
    assert table.columns.tolist() == ["whole code"] and matched == []
    with pytest.raises(ValueError, match="part-swap matrix has shape"):
        hashing.part_swap_table({"parts": ["head"], "matrix": [[0.1], [0.2]]}, {})


# --- counterfactual birds: which sub-codes flipped -------------------------------------------------

NAMES = {0: "head", 1: "wing", 2: "body"}


def code_boxes(html: str) -> list[tuple[str, bool]]:
    """(text, highlighted) of every sub-code box in the HTML of ``code_html``."""
    return [
        (text, "background:#ff7f0e" in style)
        for style, text in re.findall(r'<span style="([^"]*)">([^<]*)</span>', html)
    ]


def flipped(before: np.ndarray, after: np.ndarray, n_concepts: int) -> list[int]:
    return [c.concept for c in counterfactual.subcode_changes(before, after, n_concepts, {}) if c.flipped]


def test_flipped_subcodes_of_a_hand_made_pair():
    before = np.array([1, -1, 1, 1, -1, -1], dtype=np.int8)  # c0 10, c1 11, c2 00
    after = np.array([1, -1, -1, 1, -1, 1], dtype=np.int8)  # c0 10, c1 01, c2 01
    assert flipped(before, after, 3) == [1, 2]
    assert flipped(before, before, 3) == []
    assert flipped(before, after, 1) == [0], "one group: the whole code"
    with pytest.raises(ValueError, match="6 and 4 bits"):
        flipped(before, after[:4], 3)
    with pytest.raises(ValueError, match="cannot be split evenly"):
        flipped(before, after, 4)

    changes = counterfactual.subcode_changes(before, after, 3, NAMES)
    assert [(c.name, c.before, c.after, c.flipped) for c in changes] == [
        ("concept 0 ≈ head", "10", "10", False),
        ("concept 1 ≈ wing", "11", "01", True),
        ("concept 2 ≈ body", "00", "01", True),
    ]
    assert changes[1].flipped_bits == [0] and changes[2].flipped_bits == [1]
    assert code_boxes(counterfactual.code_html(changes, "after")) == [
        ("c0 ≈ head 10", False),
        ("c1 ≈ wing 01 ⟲ 1/2 bits", True),
        ("c2 ≈ body 01 ⟲ 1/2 bits", True),
    ]
    assert code_boxes(counterfactual.code_html(changes, "before")) == [
        ("c0 ≈ head 10", False),
        ("c1 ≈ wing 11", True),
        ("c2 ≈ body 00", True),
    ]
    with pytest.raises(ValueError, match="side must be"):
        counterfactual.code_html(changes, "left")
    table = counterfactual.changes_table(changes)
    assert table.values.tolist() == [
        ["concept 0 ≈ head", "head", "10", "10", ""],
        ["concept 1 ≈ wing", "wing", "11", "01", "b0"],
        ["concept 2 ≈ body", "body", "00", "01", "b1"],
    ]
    evil = counterfactual.subcode_changes(before, after, 3, {0: "<b>head</b>"})
    assert "<b>" not in counterfactual.code_html(evil, "after"), "part names are escaped"
    assert (
        counterfactual.flipped_line(changes)
        == "**Flipped: concept 1 ≈ wing (bit b0), concept 2 ≈ body (bit b1)**"
    )
    same = counterfactual.subcode_changes(before, before, 3, NAMES)
    assert counterfactual.flipped_line(same).startswith("**Flipped: nothing**")
    assert [flipped for _, flipped in code_boxes(counterfactual.code_html(same, "after"))] == [False] * 3

    whole = counterfactual.subcode_changes(before, after, 1, {}, cls_baseline=True)
    assert [(c.name, c.part, c.flipped_bits) for c in whole] == [("whole code", None, [2, 5])]


def test_verdict_says_whether_the_claim_held():
    def changes(before, after):
        return counterfactual.subcode_changes(np.array(before), np.array(after), 3, NAMES)

    base = [1, 1, 1, 1, 1, 1]
    wing_only = changes(base, [1, 1, -1, 1, 1, 1])
    assert counterfactual.verdict(wing_only, "wing") == (
        True,
        "Only concept 1 ≈ wing flipped: the sub-code of the wing followed the wing.",
    )
    held, sentence = counterfactual.verdict(wing_only, "head")
    assert not held and sentence == "Concept 0 ≈ head did not flip; concept 1 ≈ wing flipped instead."
    assert counterfactual.verdict(changes(base, base), "tail")[0] is True
    held, sentence = counterfactual.verdict(wing_only, "tail")
    assert not held and "not a species trait, yet concept 1 ≈ wing flipped" in sentence
    held, sentence = counterfactual.verdict(changes(base, [1, 1, -1, 1, -1, 1]), "wing")
    assert not held and sentence == "Concept 1 ≈ wing flipped, but so did concept 2 ≈ body."
    held, sentence = counterfactual.verdict(changes(base, base), "body")
    assert not held and sentence == "No sub-code flipped, not even concept 2 ≈ body."
    whole = counterfactual.subcode_changes(np.array(base), np.array([1, -1, 1, 1, 1, 1]), 1, {}, True)
    held, sentence = counterfactual.verdict(whole, "head", cls_baseline=True)
    assert held and sentence.startswith("The code changed (1 bit) when the head (a species part)")
    assert "≈" not in sentence


def test_colour_choices_and_species_line():
    from core.data.toybirds import (
        COLOURS,
        SPECIES_COLOURS,
        render_counterfactual,
        render_sample,
        species_with,
    )

    current = {"head": "red", "wing": "blue", "body": "green", "tail": "white"}
    assert counterfactual.colour_choices("head", current) == [c for c in SPECIES_COLOURS if c != "red"]
    assert counterfactual.colour_choices("tail", current) == [c for c in COLOURS if c != "white"]
    with pytest.raises(ValueError, match="Unknown part 'beak'"):
        counterfactual.colour_choices("beak", current)

    original = render_sample("train", 0, 0, 32)
    colours = original.part_values
    outcomes = {}
    for part in ("head", "wing", "body"):
        for value in counterfactual.colour_choices(part, colours):
            other = species_with({**colours, part: value})
            outcomes[other is None] = (part, value, other)
    assert set(outcomes) == {True, False}, "one repaint makes another species, one makes none"
    part, value, other = outcomes[False]
    line = counterfactual.species_line(original, render_counterfactual("train", 0, part, value, 0, 32), part)
    assert line == f"Another species: the redrawn bird is a *{other.name}*."
    part, value, _ = outcomes[True]
    line = counterfactual.species_line(original, render_counterfactual("train", 0, part, value, 0, 32), part)
    assert line.startswith("No species has these colours (head ") and f"{part} {value}" in line
    tail = counterfactual.colour_choices("tail", colours)[0]
    line = counterfactual.species_line(
        original, render_counterfactual("train", 0, "tail", tail, 0, 32), "tail"
    )
    assert line == f"Still a *{original.species.name}*: the tail is not a species trait."


# --- the model helpers on a tiny bundle -----------------------------------------------------------


@pytest.fixture(scope="module")
def loaded(tiny_bundles):
    from core.concepthash.bundle import load_concepthash

    return load_concepthash(tiny_bundles / "toy-hash-csd", device="cpu")


@pytest.fixture(scope="module")
def db_images(loaded):
    from core.data.spec import open_split

    split = open_split(loaded.data, "train")
    return [split.image(i) for i in range(4)]


def test_heatmaps_and_codes_of_database_images(loaded, db_images):
    last = hashing.heatmaps_for(loaded, db_images, "last", batch_size=3)
    rollout = hashing.heatmaps_for(loaded, db_images, "rollout")
    assert last.shape == rollout.shape == (4, 3, 32, 32)
    assert last.min() >= 0 and last.max() <= 1 and np.allclose(last.max(axis=(2, 3)), 1)
    assert not np.allclose(last, rollout)
    assert np.array_equal(last[1:2], hashing.heatmaps_for(loaded, db_images[1:2], "last"))
    assert np.array_equal(hashing.encode_images(loaded, db_images), loaded.arrays["db_codes"][:4])
    assert hashing.heatmaps_for(loaded, [], "last").shape == (0, 3, 32, 32)


def test_stored_database_heatmaps_match_the_model_and_need_no_model(loaded, db_images, tiny_bundles):
    """The bundle stores each concept's last-layer attention over the patch grid; heatmaps drawn from it match
    those the model computes (float16 storage), read from the arrays alone (no model)."""
    from types import SimpleNamespace

    from core.bundle import read_bundle_arrays
    from core.concepthash.arrays import ARRAYS, DB_ATTENTION

    arrays = read_bundle_arrays(tiny_bundles / "toy-hash-csd", ARRAYS)
    assert arrays[DB_ATTENTION].shape == (len(arrays["db_codes"]), 3, 4, 4)  # 32 px / 8 px patches
    light = SimpleNamespace(arrays=arrays, data=loaded.data)  # what a page has before loading the model
    stored = hashing.stored_heatmaps(light, [0, 1, 2, 3])
    assert stored.shape == (4, 3, 32, 32)
    np.testing.assert_allclose(stored, hashing.heatmaps_for(loaded, db_images, "last"), atol=2e-3)
    assert hashing.stored_heatmaps(SimpleNamespace(arrays={}, data=loaded.data), [0]) is None  # older bundle


def test_numpy_upsampling_is_torch_bilinear():
    import torch
    import torch.nn.functional as F

    from core.concepthash.codes import upsample_maps

    maps = torch.rand(2, 3, 4, 5)
    for size in (32, (7, 9), 4):
        shape = (size, size) if isinstance(size, int) else size
        up = F.interpolate(maps, size=shape, mode="bilinear", align_corners=False).flatten(2)
        low, high = up.min(-1, keepdim=True).values, up.max(-1, keepdim=True).values
        expected = ((up - low) / (high - low)).reshape(2, 3, *shape).numpy()
        np.testing.assert_allclose(upsample_maps(maps.numpy(), size), expected, atol=1e-5)


def test_no_figure_carries_a_streamlit_theme_placeholder_colour(dashboard):
    """Streamlit swaps #000001 … #000099 in a figure for theme colours: Magma's #000004 drew a 0 pink."""
    magma = hashing.plotly_colorscale("Magma")
    assert magma[0] == [0.0, "#000104"] and len(magma) == len(hashing.get_colorscale("Magma"))
    assert [c for _, c in magma[1:]] == [c for _, c in hashing.get_colorscale("Magma")[1:]]
    app = dashboard("hash_codes")
    specs = []
    for tab in (TAB_CODES, TAB_IMAGES, TAB_SWAP, TAB_PARTS):
        specs += [chart.proto.spec for chart in hash_tab(app, tab).get("plotly_chart")]
    assert len(specs) >= 3
    # the traces' colours (Streamlit's own template, under layout, is made of placeholders on purpose)
    traces = [json.dumps(json.loads(spec)["data"]) for spec in specs]
    assert [hashing.THEME_PLACEHOLDER.findall(data) for data in traces] == [[] for _ in traces]


def test_hash_codes_page_draws_from_the_arrays_without_loading_the_model(dashboard, monkeypatch):
    """A bundle whose attention is stored: the page (overlays on) never asks for the model."""
    from lens import bundles

    def refuse(path, mtime):
        raise AssertionError("the hash-codes page loaded the model")

    monkeypatch.setitem(
        bundles.KIND_VIEWS,
        "concepthash",
        bundles.KIND_VIEWS["concepthash"].__class__(
            **{**vars(bundles.KIND_VIEWS["concepthash"]), "load": refuse}
        ),
    )
    app = dashboard("hash_codes")
    for tab in (TAB_CODES, TAB_SWAP, TAB_PARTS, TAB_IMAGES):
        hash_tab(app, tab)
        assert not app.error, [e.value for e in app.error]
    assert colour_scales(app) == 1 and images(app)  # overlays drawn


def count_model_asks(monkeypatch) -> list[str]:
    """The path of every ConceptHash model pages ask for from now on, once per ask (lens.bundles' loader,
    which loads each model once per process); results that earlier tests left in st.cache_data are dropped,
    so no page skips the model by finding them there."""
    import dataclasses

    import streamlit as st

    from lens import bundles

    view = bundles.KIND_VIEWS["concepthash"]
    asks: list[str] = []

    def counting(path: str, mtime: float):
        asks.append(path)
        return view.load(path, mtime)

    monkeypatch.setitem(bundles.KIND_VIEWS, "concepthash", dataclasses.replace(view, load=counting))
    st.cache_data.clear()
    return asks


def test_concept_attention_page_draws_a_database_image_without_the_model(dashboard, loaded, monkeypatch):
    """The first draw (a database image, last layer) comes from the bundle's arrays; rollout and the repaint
    panel, once asked for, load the model and still work."""
    asks = count_model_asks(monkeypatch)
    app = dashboard("concept_attention")
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error, [e.value for e in app.error]
    assert asks == [], "the first draw loaded the model"
    assert len(overlays(app)) == 3 and colour_scales(app) == 1
    assert f"`{hashing.format_code(loaded.arrays['db_codes'][0], 3)}`" in markdown_text(app)
    assert "Repaint one part of this bird: which sub-code flips?" in [h.value for h in app.subheader]
    assert "attn_cf_go" in [b.key for b in app.button] and "**Flipped" not in markdown_text(app)

    app.radio(key="attn_method").set_value("Rollout").run()
    assert not app.exception, [e.value for e in app.exception]
    assert asks, "rollout runs the model"
    assert len(overlays(app)) == 3

    app.radio(key="attn_method").set_value("Last layer").run()
    app.button(key="attn_cf_go").click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert "**Flipped" in markdown_text(app) and any(c.startswith("after · ") for c, _ in images(app))
    app.radio(key="attn_cf_part").set_value("tail").run()
    assert "attn_cf_go" not in [b.key for b in app.button], "asked once, the panel follows every pick"
    assert "**Flipped" in markdown_text(app)


def test_concept_attention_page_for_a_bundle_saved_without_stored_attention(
    dashboard, tiny_bundles, tmp_path, monkeypatch
):
    """An older bundle (no db_attention) is drawn through the model, as before bundles stored it."""
    import shutil

    from core.bundle import read_bundle_arrays, update_bundle_arrays
    from core.concepthash.arrays import ARRAYS, DB_ATTENTION

    path = Path(shutil.copytree(tiny_bundles / "toy-hash-csd", tmp_path / "old-hash"))
    arrays = read_bundle_arrays(path, ARRAYS)
    (path / "arrays.safetensors").unlink()
    update_bundle_arrays(path, {name: a for name, a in arrays.items() if name != DB_ATTENTION})
    monkeypatch.setenv("CONCEPTLENS_BUNDLES", str(tmp_path))
    asks = count_model_asks(monkeypatch)
    app = dashboard("concept_attention")
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error, [e.value for e in app.error]
    assert set(asks) == {str(path)}
    assert len(overlays(app)) == 3 and colour_scales(app) == 1


# --- pages through AppTest ------------------------------------------------------------------------


def images(app) -> list[tuple[str, str]]:
    """(caption, url) of every captioned image on the page (not the colour scale); the url names its bytes."""
    return [
        (caption, url)
        for element in app.get("image")
        if any(element.captions)
        for caption, url in zip(element.captions, element.value, strict=True)
    ]


def colour_scales(app) -> int:
    """How many uncaptioned images (the heatmap colour scale) the page shows."""
    return sum(not any(element.captions) for element in app.get("image"))


def chart_z(chart) -> np.ndarray:
    """The z matrix of a plotly chart's first trace (plotly sends numpy arrays as base64 'bdata')."""
    z = json.loads(chart.proto.spec)["data"][0]["z"]
    if isinstance(z, dict):
        shape = tuple(int(n) for n in z["shape"].split(","))
        return np.frombuffer(base64.b64decode(z["bdata"]), dtype=z["dtype"]).reshape(shape)
    return np.array(z)


def markdown_text(app) -> str:
    return "\n".join(m.value for m in app.markdown)


# The hash-codes page's tabs; each is drawn only when open ("Code and parts" for the CLS baseline).
TAB_CODES, TAB_IMAGES = "Codes", "Images that turn it on"
TAB_SWAP, TAB_PARTS = "Part swap", "Sub-codes and parts"


def hash_tab(app, label: str):
    """Open one of the hash-codes page's tabs, as a click on it does (the page reruns); the app."""
    app.session_state["hash_tab"] = label
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def test_hash_codes_page(dashboard, loaded):
    codes, labels = loaded.arrays["db_codes"], loaded.arrays["db_labels"]
    app = dashboard("hash_codes")
    assert not app.exception, [e.value for e in app.exception]
    assert [t.label for t in app.tabs] == [TAB_CODES, TAB_IMAGES, TAB_SWAP, TAB_PARTS]
    charts = app.get("plotly_chart")
    assert len(charts) == 1, "the first tab only: the bit matrix"
    order = hashing.bit_matrix_order(codes, labels, "class")
    assert np.array_equal(chart_z(charts[0]), codes[order] > 0)
    assert json.loads(charts[0].proto.spec)["data"][0]["colorbar"]["ticktext"] == ["off (−1)", "on (+1)"]
    assert "Download bit-matrix (HTML)" in {b.label for b in app.get("download_button")}

    swap = hashing.part_swap(loaded.metrics)
    hash_tab(app, TAB_SWAP)
    assert len(app.get("plotly_chart")) == (1 if swap else 0), "the part swap, when evaluated"
    if swap is None:
        assert any(
            "predates the part-swap metric" in i.value and "conceptlens eval" in i.value for i in app.info
        )
    hash_tab(app, TAB_PARTS)
    assert np.allclose(chart_z(app.get("plotly_chart")[0]), loaded.metrics["subcode_part_nmi"]["matrix"])
    if swap is None:
        assert any("No concept is named" in i.value for i in app.info)
    else:  # the concepts' names with both scores, read at the part-swap matching
        from core.concepthash.naming import concept_parts

        local = next(frame.value for frame in app.dataframe if "hit rate" in frame.value.columns)
        named = concept_parts(loaded.metrics)
        assert local["matched part"].tolist() == [c.part for c in named]
        assert local["hit rate"].tolist() == pytest.approx([c.hit_rate for c in named], abs=5e-4)
        assert local["flip rate"].tolist() == pytest.approx([c.flip_rate for c in named], abs=5e-4)
    assert {b.label for b in app.get("download_button")} >= {
        "Download subcode-part-nmi (CSV)",
        "Download subcode-part-nmi (HTML)",
    }
    hash_tab(app, TAB_IMAGES)
    # (the tiny model may have bit 0 on everywhere: no "off" grid)
    assert "Download bit-0-on-sample0 (PNG)" in {b.label for b in app.get("download_button")}
    assert colour_scales(app) == 1, "the overlays' colour scale"

    # bit c0·b0: 12 + 12 images (48 in the database, both sides have more than 12)
    n_on = int((codes[:, 0] > 0).sum())
    assert f"c0·b0 on (+1)** — {n_on} of 48 images" in markdown_text(app)
    shown = images(app)
    assert len(shown) == min(12, n_on) + min(12, 48 - n_on)

    hash_tab(app, TAB_CODES)
    app.radio(key="hash_sort").set_value("code").run()
    by_code = hashing.bit_matrix_order(codes, labels, "code")
    assert not np.array_equal(by_code, order)
    assert np.array_equal(chart_z(app.get("plotly_chart")[0]), codes[by_code] > 0)

    hash_tab(app, TAB_IMAGES)
    app.checkbox(key="hash_overlay").uncheck().run()
    plain = images(app)
    assert [c for c, _ in plain] == [c for c, _ in shown] and [u for _, u in plain] != [u for _, u in shown]
    assert colour_scales(app) == 0, "no colour scale without overlays"

    app.radio(key="hash_pick").set_value("Sub-code").run()
    app.selectbox(key="hash_subcode").set_value(2).run()
    assert not app.exception, [e.value for e in app.exception]
    groups = hashing.images_by_subcode(codes, 2, 3)
    table = hashing.subcode_value_table(codes, labels, 2, 3, loaded.config["classes"])
    picker = app.multiselect(key="hash_values_2")
    assert picker.options == [hashing.subcode_value_label(row) for _, row in table.iterrows()]
    assert len(picker.options) == len(groups), "only the values some image has"
    text = markdown_text(app)
    for value, members in groups.items():
        assert f"**value {value}** · bits `{hashing.subcode_bits(value, 2)}` · {len(members)} image" in text
    assert len(images(app)) == sum(min(6, len(m)) for m in groups.values())
    assert "on (+1)" not in text


@pytest.mark.parametrize(
    ("index", "name"),
    [(488, "azure sparrow"), (499, "ebony pipit"), (3, "x"), (12345, "very long species name"), (7, "")],
)
def test_tile_caption_fits_a_narrow_tile(index, name):
    caption = hashing.tile_caption(index, name)
    assert len(caption) <= hashing.TILE_CAPTION_CHARS, caption
    assert caption.startswith(f"#{index}")
    if len(f"#{index} {name}") <= hashing.TILE_CAPTION_CHARS:
        assert caption == f"#{index} {name}".rstrip()
    else:
        assert caption.endswith("…")
    assert hashing.tile_caption(488, "azure sparrow") == "#488 azur…"
    assert len(hashing.tile_caption(1234567890123, "azure sparrow")) <= hashing.TILE_CAPTION_CHARS


def test_bit_view_tiles_have_short_captions_and_full_names_below(dashboard, loaded):
    """At a 1400 px window six tiles sit in half the page: long captions ran into their neighbours."""
    labels = loaded.arrays["db_labels"]
    names = list(loaded.config.get("classes") or [])
    app = hash_tab(dashboard("hash_codes"), TAB_IMAGES)
    captions = [c for c, _ in images(app) if c.startswith("#")]
    assert captions, "the bit view shows database tiles"
    assert all(len(c) <= hashing.TILE_CAPTION_CHARS for c in captions), captions
    notes = " ".join(c.value for c in app.caption)
    for caption in captions:
        index = int(caption[1:].split()[0])
        full = names[int(labels[index])] if int(labels[index]) < len(names) else str(int(labels[index]))
        if caption.endswith("…"):
            assert f"#{index} {full}" in notes, (caption, full)


def overlays(app) -> list[tuple[str, str]]:
    return [(c, u) for c, u in images(app) if c.startswith("concept ")]


def test_concept_attention_page_database_image(dashboard, loaded):
    codes, labels = loaded.arrays["db_codes"], loaded.arrays["db_labels"]
    app = dashboard("concept_attention")
    assert not app.exception, [e.value for e in app.exception]
    first = overlays(app)
    assert len(first) == 3, "one overlay per concept"
    assert f"`{hashing.format_code(codes[0], 3)}`" in markdown_text(app)
    captions = [c for c, _ in images(app)]
    start = captions.index("head")
    assert captions[start : start + 4] == ["head", "wing", "body", "tail"], "the part masks"
    buttons = [b.label for b in app.get("download_button")]
    assert buttons[:2] == ["Download the overlays (PNG)", "Download the part masks (PNG)"]
    assert colour_scales(app) == 1

    app.radio(key="attn_method").set_value("Rollout").run()
    rollout = overlays(app)
    assert len(rollout) == 3 and {u for _, u in rollout}.isdisjoint({u for _, u in first})
    app.slider(key="attn_opacity").set_value(0.9).run()
    assert {u for _, u in overlays(app)}.isdisjoint({u for _, u in rollout})

    cls = loaded.config["classes"][5]
    app.selectbox(key="attn_class").set_value(cls).run()
    members = np.flatnonzero(labels == 5).tolist()
    ids = loaded.arrays["db_ids"]
    assert app.selectbox(key="attn_index").options == [f"#{i} · #{str(ids[i])[-6:]}" for i in members]
    app.selectbox(key="attn_index").set_value(members[-1]).run()
    assert not app.exception, [e.value for e in app.exception]
    code = hashing.format_code(codes[members[-1]], 3)
    assert f"**#{members[-1]} · {cls}** — code `{code}`" in markdown_text(app)


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_concept_attention_page_uploads(dashboard, loaded):
    from skimage import data

    photo = Image.fromarray(data.chelsea())
    app = dashboard("concept_attention")
    app.radio(key="attn_source").set_value("Upload").run()
    assert not app.exception and not overlays(app)

    app.file_uploader(key="attn_upload").set_value(("chelsea.jpg", jpeg_bytes(photo), "image/jpeg")).run()
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error
    assert len(overlays(app)) == 3
    assert "head" not in [c for c, _ in images(app)], "no part masks for an upload"
    from core.data.images import load_image

    expected = hashing.encode_images(loaded, [hashing.center_square(load_image(jpeg_bytes(photo)))])[0]
    assert f"**chelsea.jpg** — code `{hashing.format_code(expected, 3)}`" in markdown_text(app)

    broken = jpeg_bytes(photo)[:2000]
    for name, content in (("broken.jpg", broken), ("notes.png", b"just some text, not an image\n")):
        app.file_uploader(key="attn_upload").set_value((name, content, "image/png")).run()
        assert not app.exception, [e.value for e in app.exception]
        assert len(app.error) == 1 and name in app.error[0].value
        assert not overlays(app)


def test_pages_without_part_annotations(dashboard, monkeypatch):
    from core.data.spec import DataSpec

    monkeypatch.setattr(DataSpec, "has_parts", property(lambda self: False))
    app = dashboard("hash_codes")
    assert not app.exception, [e.value for e in app.exception]
    assert len(app.get("plotly_chart")) == 1, "the bit matrix"
    hash_tab(app, TAB_PARTS)
    assert app.get("plotly_chart") == [], "no NMI chart"
    assert any("needs data with part annotations" in i.value for i in app.info)
    hash_tab(app, TAB_SWAP)
    assert app.get("plotly_chart") == [] and any("needs ToyBirds" in i.value for i in app.info)
    app = dashboard("concept_attention")
    assert not app.exception, [e.value for e in app.exception]
    assert len(overlays(app)) == 3 and "head" not in [c for c, _ in images(app)]


# --- part swap, counterfactual birds and the CLS baseline through AppTest -------------------------


def _quiet(*_args) -> None:
    pass


def write_part_swap(bundle: Path, tiny_bundles: Path, swap: dict | None) -> None:
    """Put a hand-made ``part_swap`` metric into a bundle's config, or drop it when ``swap`` is None
    (a bundle evaluated before the metric existed); the backbone path is made absolute."""
    config = json.loads((bundle / "config.json").read_text(encoding="utf-8"))
    config["metrics"].pop("part_swap", None)
    if swap is not None:
        config["metrics"]["part_swap"] = swap
    if "bundle" in config.get("backbone", {}):
        config["backbone"]["bundle"] = str(tiny_bundles / "toy-clip")
    (bundle / "config.json").write_text(json.dumps(config), encoding="utf-8")


@pytest.fixture(scope="module")
def swap_bundles(tiny_bundles, tmp_path_factory) -> tuple[Path, tuple[str, ...]]:
    """A copy of toy-hash-csd whose part_swap matching (returned, by concept) differs from its
    localisation matching, so the pages can only name concepts this way by reading part_swap; its stored
    hit rates are set so that each concept also points at its matched part more often than chance."""
    import itertools
    import shutil

    root = tmp_path_factory.mktemp("swap")
    shutil.copytree(tiny_bundles / "toy-hash-csd", root / "toy-hash-csd")
    config = json.loads((root / "toy-hash-csd" / "config.json").read_text(encoding="utf-8"))
    localised = {int(c["concept"]): c["part"] for c in config["metrics"]["localization"]["concepts"]}
    matched = next(p for p in itertools.permutations(("head", "wing", "body")) if p[0] != localised.get(0))
    parts = ["head", "wing", "body", "tail"]
    config["metrics"]["localization"] |= {
        "parts": parts,
        "hit_rates": [[0.5 if matched[m] == part else 0.0 for part in parts] for m in range(3)],
        "random_rates": [0.1] * len(parts),
    }
    (root / "toy-hash-csd" / "config.json").write_text(json.dumps(config), encoding="utf-8")
    matrix = [[0.9 if matched[m] == part else 0.1 * (m + 1) for m in range(3)] for part in parts]
    swap = {
        "parts": parts,
        "matrix": matrix,
        "matched": [{"concept": m, "part": part, "flip_rate": 0.9} for m, part in enumerate(matched)],
        "matched_flip_rate_mean": 0.9,
        "matched_flip_rate_min": 0.9,
        "largest_off_diagonal": {"part": "tail", "concept": 2, "flip_rate": 0.3},
        "by_counterfactual": BY_COUNTERFACTUAL,
        "leaks_name_the_new_colour": {
            "flips": 14,
            "named_new_colour": 0.5,
            "by_pair": {
                "wing -> concept 0 (head)": {"flips": 10, "named_new_colour": 0.6},
                "body -> concept 0 (head)": {"flips": 4, "named_new_colour": 0.25},
                "head -> concept 1 (wing)": {"flips": 0, "named_new_colour": None},
            },
        },
    }
    write_part_swap(root / "toy-hash-csd", tiny_bundles, swap)
    return root, matched


@pytest.fixture(scope="module")
def cls_bundles(tiny_bundles, tmp_path_factory) -> Path:
    """A tiny CLS-baseline bundle (one 6-bit code, no concept tokens), with a part_swap metric that
    even has a 'matched' entry: the pages must still not name any concept."""
    from core.concepthash.model import ConceptHashConfig
    from core.concepthash.train import TrainConfig, train_concepthash
    from core.data.spec import DataSpec

    root = tmp_path_factory.mktemp("cls")
    train_concepthash(
        str(tiny_bundles / "toy-clip"),
        DataSpec(image_size=32, train_per_class=2, test_per_class=1),
        ConceptHashConfig(bits=6, n_concepts=3, mode="cls"),
        TrainConfig(epochs=1, batch_size=16, device="cpu"),
        root / "toy-hash-cls",
        log=_quiet,
    )
    swap = {
        "parts": ["head", "wing", "body", "tail"],
        "matrix": [[0.7], [0.6], [0.8], [0.2]],
        "matched": [{"concept": 0, "part": "body", "flip_rate": 0.8}],
    }
    write_part_swap(root / "toy-hash-cls", tiny_bundles, swap)
    return root


def chart_spec(chart) -> dict:
    return json.loads(chart.proto.spec)["data"][0]


def page_text(app) -> list[str]:
    """Every piece of text a person reads on the page: markdown, captions, notes, options, image captions."""
    texts = [
        e.value
        for kind in ("markdown", "caption", "info", "success", "warning", "subheader")
        for e in app.get(kind)
    ]
    texts += [str(option) for box in app.selectbox for option in box.options]
    texts += [c for c, _ in images(app)]
    return texts


def test_hash_codes_page_names_concepts_by_part_swap(dashboard, swap_bundles, monkeypatch):
    root, matched = swap_bundles
    monkeypatch.setenv("CONCEPTLENS_BUNDLES", str(root))
    app = dashboard("hash_codes")
    assert not app.exception, [e.value for e in app.exception]
    named = [f"concept {m} ≈ {part}" for m, part in enumerate(matched)]
    assert any(", ".join(named) in c.value and "*Part swap* tab" in c.value for c in app.caption)

    hash_tab(app, TAB_SWAP)
    (chart,) = app.get("plotly_chart")
    swap = chart_spec(chart)
    assert list(swap["y"]) == ["head", "wing", "body", "tail"], "parts as rows, the nuisance tail included"
    assert list(swap["x"]) == named
    assert np.allclose(
        chart_z(chart),
        [
            [0.9 if matched[m] == p else 0.1 * (m + 1) for m in range(3)]
            for p in ("head", "wing", "body", "tail")
        ],
    )
    assert any(("probability that the concept's sub-code flips" in c.value) for c in app.caption)
    assert (
        "A matched sub-code flips on 90% of its part's colour swaps on average (lowest 90%)"
        in markdown_text(app)
    )
    assert "Download part-swap (CSV)" in {b.label for b in app.get("download_button")}
    split = next(frame.value for frame in app.dataframe if "the repaint" in frame.value.columns)
    assert split["largest unmatched flip"].tolist() == [0.0, 0.7]
    leaks = next(frame.value for frame in app.dataframe if "leak" in frame.value.columns)
    assert leaks.to_dict("list") == {  # a pair with no leaked flip has nothing to read
        "leak": ["wing → concept 0 (head)", "body → concept 0 (head)"],
        "flips": [10, 4],
        "share naming the new colour": [0.6, 0.25],
    }
    assert any("about a third of the time" in c.value for c in app.caption)
    hash_tab(app, TAB_PARTS)
    (chart,) = app.get("plotly_chart")
    assert list(chart_spec(chart)["y"]) == [f"c{m} ≈ {part}" for m, part in enumerate(matched)]
    local = next(frame.value for frame in app.dataframe if "concept" in frame.value.columns)
    assert local["concept"].tolist() == [
        f"c{c['concept']} ≈ {matched[c['concept']]}" for c in loaded_metrics(root)["localization"]["concepts"]
    ]

    hash_tab(app, TAB_IMAGES)
    assert app.selectbox(key="hash_bit").options[0] == f"c0·b0 ({named[0]})"
    app.radio(key="hash_pick").set_value("Sub-code").run()
    assert app.selectbox(key="hash_subcode").options == [
        f"{name} (bits c{m}·b0 … c{m}·b1)" for m, name in enumerate(named)
    ]
    app.selectbox(key="hash_subcode").set_value(1).run()
    assert not app.exception, [e.value for e in app.exception]
    assert f"**Concept 1 ≈ {matched[1]}**:" in markdown_text(app)


def loaded_metrics(root: Path) -> dict:
    return json.loads((root / "toy-hash-csd" / "config.json").read_text(encoding="utf-8"))["metrics"]


def first_flipping_repaint(loaded) -> tuple[int, str, str]:
    """The first (database image, species part, colour) whose repaint flips a sub-code, found off the
    page: every repaint of every database bird encoded in one batch and compared to the stored codes."""
    from core.data.spec import open_split
    from core.data.toybirds import SPECIES_PARTS, render_counterfactual

    split, codes, data = open_split(loaded.data, "train"), loaded.arrays["db_codes"], loaded.data
    repaints = [
        (i, part, value)
        for i in range(len(split))
        for part in SPECIES_PARTS
        for value in counterfactual.colour_choices(part, split.sample(i).part_values)
    ]
    images = [
        render_counterfactual("train", i, p, v, data.seed, data.image_size).image for i, p, v in repaints
    ]
    after = hashing.encode_images(loaded, images)
    flipping = [r for r, code in zip(repaints, after, strict=True) if (code != codes[r[0]]).any()]
    assert flipping, "no repaint of any database bird changes the tiny model's code"
    return flipping[0]


def test_hash_codes_page_for_a_bundle_that_predates_part_swap(dashboard, tiny_bundles, tmp_path, monkeypatch):
    import shutil

    shutil.copytree(tiny_bundles / "toy-hash-csd", tmp_path / "old-hash")
    write_part_swap(tmp_path / "old-hash", tiny_bundles, None)
    monkeypatch.setenv("CONCEPTLENS_BUNDLES", str(tmp_path))
    app = dashboard("hash_codes")
    assert not app.exception, [e.value for e in app.exception]
    hash_tab(app, TAB_SWAP)
    notes = [i.value for i in app.info if "predates the part-swap metric" in i.value]
    assert len(notes) == 1 and f"conceptlens eval {tmp_path / 'old-hash'} --store" in notes[0]
    assert app.get("plotly_chart") == [], "no part-swap chart"
    assert len(hash_tab(app, TAB_PARTS).get("plotly_chart")) == 1, "the NMI chart"
    # only the part swap names concepts: none is named here, not even by the localisation matching
    assert any("No concept is named" in i.value and "--store" in i.value for i in app.info)
    assert not [c.value for c in app.caption if "≈" in c.value]


def test_concept_attention_counterfactual_panel(dashboard, swap_bundles, loaded, monkeypatch):
    from core.data.spec import open_split
    from core.data.toybirds import render_counterfactual

    root, matched = swap_bundles
    monkeypatch.setenv("CONCEPTLENS_BUNDLES", str(root))
    names = dict(enumerate(matched))
    split = open_split(loaded.data, "train")
    app = dashboard("concept_attention")
    assert not app.exception, [e.value for e in app.exception]
    assert "Repaint one part of this bird: which sub-code flips?" in [h.value for h in app.subheader]
    assert [c for c, _ in overlays(app)][0].startswith(f"concept 0 ≈ {matched[0]} = ")
    app.button(key="attn_cf_go").click().run()  # the panel runs the model once asked

    def check(index: int, part: str, value: str) -> list:
        """The panel shows this repaint: both birds, both codes, what flipped and the verdict."""
        assert not app.exception, [e.value for e in app.exception]
        original = split.sample(index)
        redrawn = render_counterfactual("train", index, part, value, loaded.data.seed, loaded.data.image_size)
        cf = counterfactual.counterfactual(loaded, index, part, value)
        changes = counterfactual.subcode_changes(cf.before, cf.after, 3, names)
        text = markdown_text(app)
        assert counterfactual.code_html(changes, "before") in text
        assert counterfactual.code_html(changes, "after") in text
        assert counterfactual.flipped_line(changes) in text
        assert counterfactual.species_line(original, redrawn, part) in text
        held, sentence = counterfactual.verdict(changes, part)
        assert [e.value for e in (app.success if held else app.warning)] == [sentence]
        shown = next(frame.value for frame in app.dataframe if "flipped bits" in frame.value.columns)
        assert shown.equals(counterfactual.changes_table(changes)), "the verdict per concept"
        captions = [c for c, _ in images(app)]
        assert f"Original · {original.species_name}" in captions
        assert f"Redrawn: {part} {original.part_values[part]} → {value} · {redrawn.species_name}" in captions
        after = [c for c in captions if c.startswith("after · ")]
        assert after == [
            f"after · concept {m} ≈ {matched[m]}" + (" · ⟲ flipped" if c.flipped else "")
            for m, c in enumerate(changes)
        ]
        return changes

    current = split.sample(0).part_values
    first = counterfactual.colour_choices("head", current)[0]
    assert app.selectbox(key="attn_cf_colour_0_head").options == [
        c for c in counterfactual.colour_choices("head", current)
    ]
    check(0, "head", first)

    # a repaint that flips a sub-code ...
    index, part, value = first_flipping_repaint(loaded)
    if index != 0:
        app.selectbox(key="attn_index").set_value(index).run()
    app.radio(key="attn_cf_part").set_value(part).run()
    app.selectbox(key=f"attn_cf_colour_{index}_{part}").set_value(value).run()
    changes = check(index, part, value)
    highlighted = [
        b for line in markdown_text(app).splitlines() for b, flipped in code_boxes(line) if flipped
    ]
    assert len(highlighted) == 2 * sum(c.flipped for c in changes) > 0, (
        "flipped sub-codes highlighted, both sides"
    )
    assert "**Flipped: concept" in markdown_text(app)
    assert any(c.endswith("⟲ flipped") for c, _ in images(app))

    # ... and the nuisance tail, repainted: the bird stays its species
    tail = counterfactual.colour_choices("tail", split.sample(index).part_values)[-1]
    app.radio(key="attn_cf_part").set_value("tail").run()
    app.selectbox(key=f"attn_cf_colour_{index}_tail").set_value(tail).run()
    check(index, "tail", tail)
    assert f"Still a *{split.sample(index).species_name}*" in markdown_text(app)
    assert changes is not None


def test_no_counterfactual_for_uploads(dashboard, swap_bundles, monkeypatch):
    root, _ = swap_bundles
    monkeypatch.setenv("CONCEPTLENS_BUNDLES", str(root))
    app = dashboard("concept_attention")
    app.radio(key="attn_source").set_value("Upload").run()
    app.file_uploader(key="attn_upload").set_value(
        ("bird.png", jpeg_bytes(Image.new("RGB", (40, 40), "red")), "image/jpeg")
    ).run()
    assert not app.exception, [e.value for e in app.exception]
    assert "Repaint one part of this bird: which sub-code flips?" not in [h.value for h in app.subheader]


def test_cls_baseline_is_not_shown_as_concepts(dashboard, cls_bundles, monkeypatch):
    monkeypatch.setenv("CONCEPTLENS_BUNDLES", str(cls_bundles))
    app = dashboard("hash_codes")
    assert not app.exception, [e.value for e in app.exception]
    assert any("**CLS baseline**" in c.value and "no concept tokens" in c.value for c in app.caption)
    assert [t.label for t in app.tabs] == [TAB_CODES, TAB_IMAGES, TAB_SWAP, "Code and parts"]
    assert not [t for t in page_text(app) if "≈" in t], "no concept is named"
    hash_tab(app, TAB_SWAP)
    assert not [t for t in page_text(app) if "≈" in t], "no concept is named"
    assert list(chart_spec(app.get("plotly_chart")[0])["x"]) == ["whole code"]
    hash_tab(app, "Code and parts")
    assert not [t for t in page_text(app) if "≈" in t], "no concept is named"
    assert list(chart_spec(app.get("plotly_chart")[0])["y"]) == ["whole code"]
    assert app.dataframe[0].value["concept"].tolist() == [hashing.WHOLE_CODE]  # its scores, named nothing
    hash_tab(app, TAB_IMAGES)
    assert not [t for t in page_text(app) if "≈" in t], "no concept is named"
    assert "hash_pick" not in [r.key for r in app.radio], "no sub-codes to look at"
    assert app.selectbox(key="hash_bit").options[:2] == ["b0", "b1"]

    app = dashboard("concept_attention")
    assert not app.exception, [e.value for e in app.exception]
    assert not [t for t in page_text(app) if "≈" in t or t.startswith("concept ")]
    assert [c for c, _ in images(app) if c.startswith("CLS token = ")]
    app.button(key="attn_cf_go").click().run()
    assert not app.exception, [e.value for e in app.exception]
    text = markdown_text(app)
    assert "whole code" in text and "**Flipped: " in text
    assert any("one code, no concepts" in e.value for e in [*app.success, *app.warning])


def test_codes_table_is_the_bit_matrix_as_csv_rows():
    codes = np.array([[1, -1, 1], [-1, -1, 1], [1, 1, -1]], dtype=np.int8)
    labels = np.array([2, 0, 1])
    order, ids = np.array([1, 2, 0]), ["i0", "i1", "i2"]
    table = hashing.codes_table(codes, labels, order, ["a", "b", "c"], ["x", "y", "z"], ids)
    assert table.columns.tolist() == ["index", "image", "class", "x", "y", "z"]
    assert table.to_dict("records")[0] == {"index": 1, "image": "i1", "class": "a", "x": 0, "y": 0, "z": 1}
    assert table["index"].tolist() == [1, 2, 0]
    with pytest.raises(ValueError, match="3 bits but 2 bit names"):
        hashing.codes_table(codes, labels, np.arange(3), ["a", "b", "c"], ["x", "y"])


def test_hash_page_offers_the_codes_as_csv(dashboard):
    app = dashboard("hash_codes")
    assert not app.exception, [e.value for e in app.exception]
    labels = [b.label for b in app.get("download_button")]
    assert "Download database_codes (CSV)" in labels
