"""Concept banks: parsing, reading, writing, the CEIR filters, the shipped banks and ToyBirds ground truth."""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from core.ceir import concept_bank as cb
from core.ceir.bank_filters import (
    activation_lift,
    class_spread,
    filter_by_fidelity,
    filter_by_length,
    filter_class_irrelevant,
    filter_close_to_classes,
    filter_near_duplicates,
    filter_never_activated,
    relative_cutoff,
    relative_duplicate_threshold,
)
from core.ceir.concept_bank import (
    MAX_CONCEPT_CHARS,
    RAW_TEMPLATE,
    SHIPPED_BANKS,
    ConceptBank,
    ConceptBankError,
    check_template,
    load_bank,
    parse_concepts,
    read_concept_file,
    write_concept_file,
)
from core.data import toybirds
from core.data.toybirds_concepts import toybirds_concept_parts, toybirds_concept_truth

# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------


def test_parse_comments_blanks_and_whitespace():
    text = "# header\n\nred head   # trailing note\n   striped\t wings  \n#only comment\n\n  \nforked tail"
    bank = parse_concepts(text)
    assert bank.concepts == ["red head", "striped wings", "forked tail"]
    assert bank.source == "inline"
    assert bank.issues == []
    assert len(bank) == 3


def test_parse_reports_case_insensitive_duplicates_keeping_first_spelling():
    bank = parse_concepts("Red Head\nblue wings\nred head\nBLUE  WINGS\n", source="mine.txt")
    assert bank.concepts == ["Red Head", "blue wings"]
    assert bank.source == "mine.txt"
    assert len(bank.issues) == 2
    assert bank.issues[0].startswith("line 3:") and "'Red Head' (line 1)" in bank.issues[0]
    assert bank.issues[1].startswith("line 4:") and "'blue wings' (line 2)" in bank.issues[1]


def test_parse_drops_and_reports_over_long_concepts():
    long = "x" * (MAX_CONCEPT_CHARS + 1)
    exact = "y" * MAX_CONCEPT_CHARS
    bank = parse_concepts(f"short\n{long}\n{exact}\n")
    assert bank.concepts == ["short", exact]
    assert (
        len(bank.issues) == 1 and bank.issues[0].startswith("line 2:") and "61 characters" in bank.issues[0]
    )
    assert parse_concepts("abcd\nabcdef", max_chars=4).concepts == ["abcd"]


def test_parse_bom_crlf_and_lone_cr():
    bank = parse_concepts("\ufeffred head\r\nblue wings\r\rforked tail\r\n")
    assert bank.concepts == ["red head", "blue wings", "forked tail"]
    assert bank.issues == []


def test_parse_reports_control_characters():
    bank = parse_concepts("good one\nbad\x00one\nalso\x1bbad\nzero\u200bwidth\nfine")
    assert bank.concepts == ["good one", "fine"]
    assert [issue.split(":")[0] for issue in bank.issues] == ["line 2", "line 3", "line 4"]
    assert "U+0000" in bank.issues[0] and "U+001B" in bank.issues[1] and "U+200B" in bank.issues[2]


def test_parse_control_character_inside_a_comment_is_ignored():
    assert parse_concepts("ok # note \x07 bell").concepts == ["ok"]


@pytest.mark.parametrize("text", ["", "\n\n  \n", "# only\n# comments\n", "\ufeff"])
def test_parse_empty_raises(text):
    with pytest.raises(ConceptBankError, match=r"^Concept bank empty\.txt contains no concepts\.$"):
        parse_concepts(text, source="empty.txt")


def test_parse_unicode_duplicates_after_nfc():
    composed, decomposed = "caf\u00e9 table", "cafe\u0301 table"
    bank = parse_concepts(f"{composed}\n{decomposed}")
    assert bank.concepts == [composed]
    assert len(bank.issues) == 1


# ---------------------------------------------------------------------------------------------
# Reading files
# ---------------------------------------------------------------------------------------------


def test_read_file_utf8_bom_crlf(tmp_path):
    path = tmp_path / "bank.txt"
    path.write_bytes("\ufeff# header\r\nrot\u00e9 head\r\nblue wings\r\n".encode())
    bank = read_concept_file(path)
    assert bank.concepts == ["rot\u00e9 head", "blue wings"]
    assert bank.source == str(path)


def test_read_file_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("red head\ncaf\u00e9\n".encode("latin-1"))
    with pytest.raises(ConceptBankError, match=re.escape(str(path)) + r" is not UTF-8.*offset 12"):
        read_concept_file(path)


def test_read_file_empty_and_comment_only(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    comments = tmp_path / "comments.txt"
    comments.write_text("# nothing\n   # here\n", encoding="utf-8")
    for path in (empty, comments):
        with pytest.raises(ConceptBankError, match=re.escape(str(path)) + " contains no concepts"):
            read_concept_file(path)


def test_read_file_missing_directory_and_too_big(tmp_path):
    with pytest.raises(ConceptBankError, match="does not exist"):
        read_concept_file(tmp_path / "nope.txt")
    with pytest.raises(ConceptBankError, match="is a directory"):
        read_concept_file(tmp_path)
    big = tmp_path / "big.txt"
    big.write_bytes(b"a\n" * (cb.MAX_BANK_BYTES // 2 + 1))
    with pytest.raises(ConceptBankError, match=r"big\.txt is 1000002 bytes"):
        read_concept_file(big)


def test_load_bank_by_name_path_and_unknown(tmp_path):
    bank = load_bank("toybirds")
    assert bank.source == "shipped:toybirds"
    assert load_bank("shipped:toybirds").concepts == bank.concepts
    path = tmp_path / "mine.txt"
    path.write_text("alpha\nbeta\n", encoding="utf-8")
    assert load_bank(str(path)).concepts == ["alpha", "beta"]
    assert load_bank(path).concepts == ["alpha", "beta"]
    with pytest.raises(ConceptBankError, match="toybirds, cifar10, cub200, general"):
        load_bank("imagenet")
    with pytest.raises(ConceptBankError, match="neither a shipped bank"):
        load_bank("shipped:nope")


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def test_write_then_read_round_trip_exact_bytes(tmp_path):
    path = tmp_path / "out.txt"
    write_concept_file(path, ["red head", "  blue   wings "], header="made by a test\nsecond line")
    assert path.read_bytes() == b"# made by a test\n# second line\nred head\nblue wings\n"
    assert read_concept_file(path).concepts == ["red head", "blue wings"]
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]  # no temporary file left behind


def test_write_replaces_existing_file(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old\n", encoding="utf-8")
    write_concept_file(path, ["new"])
    assert path.read_text(encoding="utf-8") == "new\n"


@pytest.mark.parametrize(
    "concepts, message",
    [
        ([], "at least one concept"),
        (["a # b"], "cannot be written"),
        (["a\nb"], "cannot be written"),
        (["ok", "OK"], "appears twice"),
        (["x" * (MAX_CONCEPT_CHARS + 1)], "1 to 60 characters"),
        (["   "], "1 to 60 characters"),
        ([3], "not text"),
    ],
)
def test_write_rejects_unreadable_concepts_and_leaves_old_file(tmp_path, concepts, message):
    path = tmp_path / "out.txt"
    path.write_text("old\n", encoding="utf-8")
    with pytest.raises(ConceptBankError, match=message):
        write_concept_file(path, concepts)
    assert path.read_text(encoding="utf-8") == "old\n"
    assert len(list(tmp_path.iterdir())) == 1


def test_write_into_missing_folder_raises(tmp_path):
    with pytest.raises(ConceptBankError, match="does not exist"):
        write_concept_file(tmp_path / "no" / "out.txt", ["a"])


def test_write_failure_during_replace_cleans_temporary(tmp_path, monkeypatch):
    path = tmp_path / "out.txt"

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        write_concept_file(path, ["a"])
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------------------------


def test_filter_by_length():
    concepts = ["a", "ok", "one two three four five six", "one two three four five six seven", "z" * 61]
    kept, removed = filter_by_length(concepts)
    assert kept == ["ok", "one two three four five six"]
    assert removed == {
        "a": "shorter than 2 characters",
        "one two three four five six seven": "more than 6 words (7)",
        "z" * 61: "longer than 60 characters (61)",
    }
    kept, _ = filter_by_length(concepts, min_chars=1, max_chars=100, max_words=10)
    assert kept == concepts
    with pytest.raises(ValueError, match="min_chars"):
        filter_by_length(concepts, min_chars=5, max_chars=3)


def test_filters_reject_duplicate_or_non_string_concepts():
    with pytest.raises(ValueError, match="'a' appears more than once"):
        filter_by_length(["a", "b", "a"])
    with pytest.raises(ValueError, match="must be strings"):
        filter_by_length(["a", 1])


def test_filter_near_duplicates_greedy_in_order():
    # a and b: cosine 0.99 (b dropped); c orthogonal; d equals c up to scale (dropped); e is close to b only,
    # but b was dropped, so e is compared with a (cosine 0.8) and kept.
    theta_b = np.arccos(0.99)
    emb = np.array(
        [
            [1.0, 0.0, 0.0],
            [np.cos(theta_b), np.sin(theta_b), 0.0],
            [0.0, 0.0, 2.0],
            [0.0, 0.0, 5.0],
            [0.8, 0.6, 0.0],
        ]
    )
    concepts = ["a", "b", "c", "d", "e"]
    kept, removed = filter_near_duplicates(concepts, emb, threshold=0.95)
    assert kept == ["a", "c", "e"]
    assert set(removed) == {"b", "d"}
    assert "'a'" in removed["b"] and "0.990" in removed["b"]
    assert "'c'" in removed["d"] and "1.000" in removed["d"]
    # threshold inclusive: cosine exactly 0.8 with threshold 0.8 drops e
    kept, removed = filter_near_duplicates(concepts, emb, threshold=0.8)
    assert kept == ["a", "c"]
    # brute-force reference over random embeddings
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(40, 3))
    names = [f"c{i}" for i in range(40)]
    kept, _ = filter_near_duplicates(names, emb, threshold=0.9)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    expected: list[int] = []
    for i in range(40):
        if all(unit[i] @ unit[j] < 0.9 for j in expected):
            expected.append(i)
    assert kept == [names[i] for i in expected]


def test_filter_near_duplicates_shapes():
    with pytest.raises(ValueError, match=r"shape \(2, D\)"):
        filter_near_duplicates(["a", "b"], np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"shape \(2, D\)"):
        filter_near_duplicates(["a", "b"], np.zeros(2))
    with pytest.raises(ValueError, match="NaN"):
        filter_near_duplicates(["a", "b"], np.array([[1.0, np.nan], [0.0, 1.0]]))
    # zero rows are kept (cosine 0 to everything)
    kept, _ = filter_near_duplicates(["a", "b"], np.zeros((2, 3)))
    assert kept == ["a", "b"]


def test_filter_close_to_classes_by_embedding_and_text():
    concepts = ["whiskers", "feline", "a cat's ear", "two cats", "scattered light", "Dog collar", "runway"]
    concept_emb = np.array(
        [
            [0.6, 0.8, 0.0],  # cosine 0.6 to cat: kept
            [0.9, np.sqrt(1 - 0.81), 0.0],  # cosine 0.9 to cat: dropped
            [0.0, 0.0, 1.0],  # text: contains "cat"
            [0.0, 0.0, 1.0],  # text: plural "cats"
            [0.0, 0.0, 1.0],  # "scattered" is not the word "cat": kept
            [0.0, 0.0, 1.0],  # text: "Dog" (case-insensitive)
            [0.0, 0.3, 0.0],
        ]
    )
    class_emb = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    kept, removed = filter_close_to_classes(concepts, concept_emb, ["cat", "dog"], class_emb, threshold=0.85)
    assert kept == ["whiskers", "scattered light", "runway"]
    assert removed["feline"].startswith("too close to the class 'cat' (cosine 0.900")
    assert removed["a cat's ear"] == "names the class 'cat'"
    assert removed["two cats"] == "names the class 'cat'"
    assert removed["Dog collar"] == "names the class 'dog'"
    # text-only mode
    kept, _ = filter_close_to_classes(concepts, None, ["cat", "dog"], None)
    assert kept == ["whiskers", "feline", "scattered light", "runway"]
    # multi-word class names match across whitespace
    kept, _ = filter_close_to_classes(["a big  Fire Engine", "fire"], None, ["fire engine"], None)
    assert kept == ["fire"]


def test_filter_close_to_classes_shapes():
    with pytest.raises(ValueError, match="both"):
        filter_close_to_classes(["a"], np.ones((1, 2)), ["cat"], None)
    with pytest.raises(ValueError, match=r"class_embeddings must have shape \(2, D\)"):
        filter_close_to_classes(["a"], np.ones((1, 2)), ["cat", "dog"], np.ones((1, 2)))
    with pytest.raises(ValueError, match="2 dimensions but class_embeddings 3"):
        filter_close_to_classes(["a"], np.ones((1, 2)), ["cat"], np.ones((1, 3)))
    with pytest.raises(ValueError, match="non-empty"):
        filter_close_to_classes(["a"], None, [], None)


def test_filter_never_activated_is_relative_to_the_bank():
    """A planted concept no image shows (flat column) goes; the verdicts do not change when every
    similarity is scaled and shifted, as another backbone's cosines would be."""
    rng = np.random.default_rng(0)
    shown = rng.random((50, 4)) * 0.1
    shown[:5, :] += 0.5  # five images show each real concept strongly
    flat = 0.3 + rng.random((50, 1)) * 0.01  # the planted concept: high offset, no image stands out
    activations = np.hstack([shown, flat])
    concepts = ["a", "b", "c", "d", "never"]
    kept, removed = filter_never_activated(concepts, activations, fraction=0.5, top_k=5)
    assert kept == ["a", "b", "c", "d"]
    assert removed["never"].startswith("never activated (its top-5 images score")
    assert filter_never_activated(concepts, 0.1 * activations + 0.2, fraction=0.5)[0] == kept
    # the lift by hand: top-5 mean minus median, and the cut-off half the 90th percentile of the lifts
    lift = activation_lift(activations, top_k=5)
    column = activations[:, 0]
    assert lift[0] == pytest.approx(np.sort(column)[-5:].mean() - np.median(column))
    assert relative_cutoff(lift, 0.5) == pytest.approx(0.5 * np.percentile(lift, 90))
    # fraction 0 keeps everything; top_k beyond N uses every image
    assert filter_never_activated(concepts, activations, fraction=0.0)[0] == concepts
    assert activation_lift(activations, top_k=500)[0] == pytest.approx(column.mean() - np.median(column))


def test_filter_class_irrelevant_keeps_concepts_tied_to_some_classes():
    class_emb = np.eye(4)  # four class names along the axes
    concept_emb = np.array(
        [
            [1.0, 0.0, 0.0, 0.0],  # close to class 0 only: spread high
            [0.0, 1.0, 1.0, 0.0],  # two classes: spread high
            [1.0, 1.0, 1.0, 1.0],  # all classes alike: spread 0
            [0.0, 0.0, 0.0, 1.0],
        ]
    )
    kept, removed = filter_class_irrelevant(["one", "two", "all", "four"], concept_emb, class_emb, 0.5)
    assert kept == ["one", "two", "four"]
    assert "says little about the class" in removed["all"]
    np.testing.assert_allclose(class_spread(concept_emb, class_emb)[2], 0.0, atol=1e-12)
    assert class_spread(concept_emb, class_emb)[0] == pytest.approx(np.std([1, 0, 0, 0]))


def test_relative_duplicate_threshold_scales_with_the_bank():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(30, 8))
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    cos = unit @ unit.T
    median_distance = np.median(1 - cos[np.triu_indices(30, 1)])
    assert relative_duplicate_threshold(emb, 0.1) == pytest.approx(1 - 0.1 * median_distance)
    assert relative_duplicate_threshold(emb[:1], 0.1) == 1.0


def test_filter_never_activated_shapes():
    with pytest.raises(ValueError, match=r"shape \(N images, 2\)"):
        filter_never_activated(["a", "b"], np.zeros((4, 3)), 0.1)
    with pytest.raises(ValueError, match=r"shape \(N images, 2\)"):
        filter_never_activated(["a", "b"], np.zeros((0, 2)), 0.1)
    with pytest.raises(ValueError, match="NaN"):
        filter_never_activated(["a"], np.array([[np.inf]]), 0.1)
    with pytest.raises(ValueError, match="top_k"):
        filter_never_activated(["a"], np.zeros((1, 1)), 0.1, top_k=0)


def test_filter_by_fidelity():
    concepts = ["good", "edge", "bad", "constant"]
    kept, removed = filter_by_fidelity(concepts, np.array([0.9, 0.45, 0.44, np.nan]))
    assert kept == ["good", "edge"]
    assert removed == {"bad": "low fidelity (0.440 < 0.45)", "constant": "fidelity undefined (NaN)"}
    kept, _ = filter_by_fidelity(concepts, [0.9, 0.45, 0.44, 0.0], cutoff=0.0)
    assert kept == concepts
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        filter_by_fidelity(concepts, np.zeros((4, 1)))


# ---------------------------------------------------------------------------------------------
# Shipped banks
# ---------------------------------------------------------------------------------------------

MIN_SIZES = {"toybirds": 28 + 20, "cifar10": 100, "cub200": 200, "general": 300}
MAX_SIZES = {"cifar10": 150, "cub200": 300}


@pytest.mark.parametrize("name", SHIPPED_BANKS)
def test_shipped_bank_is_clean(name):
    bank = load_bank(name)
    assert isinstance(bank, ConceptBank)
    assert bank.issues == []  # no duplicates, over-long entries or control characters in the file
    assert MIN_SIZES[name] <= len(bank) <= MAX_SIZES.get(name, 10_000)
    folded = [c.casefold() for c in bank.concepts]
    assert len(set(folded)) == len(folded)
    # also no trivial plural twins ("wing" / "wings")
    stems = [re.sub(r"e?s$", "", c) for c in folded]
    assert len(set(stems)) == len(stems), sorted(
        {c for c, s in zip(folded, stems, strict=True) if stems.count(s) > 1}
    )
    assert all(2 <= len(c) <= MAX_CONCEPT_CHARS for c in bank.concepts)
    assert all(len(c.split()) <= 6 for c in bank.concepts)
    assert all(c == c.lower() for c in bank.concepts)
    path = cb.resources.files("core.ceir").joinpath("banks", f"{name}.txt")
    assert path.read_text(encoding="utf-8").startswith("# ConceptLens concept bank")


def test_cifar10_bank_leaves_out_class_names():
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    kept, removed = filter_close_to_classes(load_bank("cifar10").concepts, None, classes, None)
    assert removed == {}


def _world_concepts(parts: tuple[str, ...], nuisance: bool) -> set[str]:
    """Concepts "<value> <part>": the species-part colours, or with ``nuisance`` every nuisance value."""
    return {
        f"{value} {part}"
        for part in parts
        for attribute in toybirds.PART_ATTRIBUTES[part]
        if (attribute != "colour" or part in toybirds.NUISANCE_PARTS) == nuisance
        for value in toybirds.ATTRIBUTE_VALUES[part][attribute]
    }


def test_a_template_line_sets_the_caption_every_concept_is_read_in():
    text = "# a comment\n#  template:  a photo of  a {}.\nred head\nblue wing # template: not this\n"
    bank = parse_concepts(text)
    assert bank.concepts == ["red head", "blue wing"]
    assert bank.template == "a photo of a {}."  # whitespace collapsed like a concept's
    assert bank.prompts() == ["a photo of a red head.", "a photo of a blue wing."]
    plain = parse_concepts("red head\n# templates are optional\n")
    assert plain.template == RAW_TEMPLATE and plain.prompts() == ["red head"]


BAD_TEMPLATES = ["a photo of a bird", "{} and {}", "a {x} {}", "a {} }", "x" * 200 + " {}"]


@pytest.mark.parametrize("template", BAD_TEMPLATES)
def test_a_bad_template_is_refused_naming_the_line(template):
    with pytest.raises(ConceptBankError, match="line 2: the template .* exactly once"):
        parse_concepts(f"red head\n# template: {template}\nblue wing\n", source="bank.txt")
    with pytest.raises(ConceptBankError, match="exactly once"):
        check_template(template)


def test_toybirds_bank_reads_its_concepts_as_the_clip_was_taught():
    """The shipped ToyBirds bank puts a species attribute in the same caption as the CLIP's part prompts."""
    bank = load_bank("toybirds")
    prompts = dict(zip(bank.concepts, bank.prompts(), strict=True))
    for part in toybirds.SPECIES_PARTS:
        for colour in toybirds.PART_VALUES[part]:
            assert prompts[f"{colour} {part}"] == toybirds.part_value_prompt(part, colour)
    assert all(load_bank(name).template == RAW_TEMPLATE for name in SHIPPED_BANKS if name != "toybirds")


def test_toybirds_bank_covers_every_part_value_pair():
    concepts = load_bank("toybirds").concepts
    species = _world_concepts(toybirds.PARTS, nuisance=False)
    nuisance = _world_concepts(toybirds.PARTS, nuisance=True)
    assert species == {
        f"{c} {p}" for p in ("head", "wing", "body") for c in ("red", "yellow", "blue", "green")
    }
    assert "crested head" in nuisance and "striped wing" in nuisance and "purple tail" in nuisance
    assert len(nuisance) == 2 + 3 + 8 + 3
    assert species | nuisance <= set(concepts)
    # the species attributes come first, then the nuisance section, then the distractors
    assert set(concepts[:12]) == species and set(concepts[12:28]) == nuisance
    distractors = set(concepts) - species - nuisance
    assert len(distractors) >= 20
    # distractors are not about the world's attributes
    assert all(toybirds_concept_parts(c) is None for c in distractors)
    header = cb.resources.files("core.ceir").joinpath("banks", "toybirds.txt").read_text(encoding="utf-8")
    assert "Species attributes" in header and "Nuisance" in header and "Distractors" in header


# ---------------------------------------------------------------------------------------------
# ToyBirds ground truth
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("species", toybirds.SPECIES, ids=lambda s: s.name)
def test_toybirds_concept_truth_matches_species_colours(species):
    true_concepts = []
    for concept in load_bank("toybirds").concepts:
        truth = toybirds_concept_truth(concept, species)
        value, _, part = concept.partition(" ")
        if part in toybirds.SPECIES_PARTS and value in toybirds.SPECIES_COLOURS:
            assert truth is (species.colours[part] == value), concept
        else:  # nuisance (crest, wing pattern, the tail) and distractors say nothing about a species
            assert truth is None, concept
        if truth:
            true_concepts.append(concept)
    # exactly one true colour per species part, spelt as in the captions
    assert true_concepts == [f"{species.colours[p]} {p}" for p in toybirds.SPECIES_PARTS]


def test_toybirds_concept_truth_variants():
    bird = toybirds.SPECIES[5]  # yellow head, green wing, red body
    assert bird.colours == {"head": "yellow", "wing": "green", "body": "red"}
    assert toybirds_concept_truth("Yellow  Head", bird) is True
    assert toybirds_concept_truth("green wing", bird) is True
    assert toybirds_concept_truth("green wings", bird) is True  # the plural still reads as the wing
    assert toybirds_concept_truth("red body", bird) is True
    assert toybirds_concept_truth("blue wing", bird) is False
    assert toybirds_concept_truth("red head", bird) is False
    assert toybirds_concept_truth("yellow body", bird) is False
    # nuisance: per image, so a species neither has nor lacks it
    assert toybirds_concept_truth("crested head", bird) is None
    assert toybirds_concept_truth("yellow crested head", bird) is None
    assert toybirds_concept_truth("striped wing", bird) is None
    assert toybirds_concept_truth("red tail", bird) is None
    assert toybirds_concept_truth("forked tail", bird) is None
    # not about the world
    assert toybirds_concept_truth("purple head", bird) is None  # no species part is purple
    assert toybirds_concept_truth("yellow yellow head", bird) is None  # two colours for one attribute
    assert toybirds_concept_truth("striped head", bird) is None  # the world has no head patterns
    assert toybirds_concept_truth("round body", bird) is None  # v1 body shapes are gone
    assert toybirds_concept_truth("webbed feet", bird) is None
    assert toybirds_concept_truth("long tail", bird) is None
    assert toybirds_concept_truth("head", bird) is None
    assert toybirds_concept_truth("yellow head", 5) is True
    assert toybirds_concept_truth("yellow head", bird.name) is True
    with pytest.raises(ValueError, match="not a ToyBirds species"):
        toybirds_concept_truth("red head", 999)


def test_toybirds_concept_parts_reads_species_and_nuisance_attributes():
    assert toybirds_concept_parts("red crested head") == ("head", {"colour": "red", "crest": "crested"})
    assert toybirds_concept_parts("Blue Spotted Wings") == (
        "wing",
        {"colour": "blue", "pattern": "spotted"},
    )
    assert toybirds_concept_parts("purple forked tail") == (
        "tail",
        {"colour": "purple", "shape": "forked"},
    )
    assert toybirds_concept_parts("purple head") is None
    assert toybirds_concept_parts("red crested body") is None


def test_general_bank_has_the_everyday_categories():
    """A photo of a bird could not be called 'bird' before: the categories a person names first are there."""
    concepts = set(load_bank("general").concepts)
    assert {"bird", "person", "animal", "vehicle", "plant", "building", "food", "dog", "cat"} <= concepts
