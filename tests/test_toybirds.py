"""Tests of the ToyBirds v2 world: determinism, the species table and its code capacity, masks,
counterfactuals, part statistics, captions and the disk writer."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import itertools
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from core.data import toybirds
from core.data.toybirds import (
    ATTRIBUTE_VALUES,
    COLOURS,
    FAMILIES,
    FAMILY_OF_BODY,
    METADATA_COLUMNS,
    NUISANCE_PARTS,
    PART_ATTRIBUTES,
    PART_VALUES,
    PARTS,
    SPECIES,
    SPECIES_COLOURS,
    SPECIES_PARTS,
    ToyBirdSample,
    part_phrase,
    part_statistics,
    part_value_prompt,
    patch_coverage,
    random_caption,
    render_batch,
    render_counterfactual,
    render_sample,
    render_to_disk,
    sample_facts,
    species_of_index,
    species_with,
)
from core.retrieval import mean_average_precision, pack_codes

REPO_ROOT = Path(__file__).resolve().parents[1]
EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity: "dilated by 1 pixel" includes the diagonals


@pytest.fixture(scope="module")
def samples() -> list[ToyBirdSample]:
    """48 samples (two per species) shared by the mask, counterfactual and caption tests."""
    return render_batch("test", range(48), seed=5)


@pytest.fixture(scope="module")
def many() -> list[ToyBirdSample]:
    """240 test samples (ten per species) for the part statistics."""
    return render_batch("test", range(240), seed=0)


def _pixels(sample: ToyBirdSample) -> np.ndarray:
    return np.asarray(sample.image, dtype=np.float64)


# ----------------------------------------------------------------------------- determinism


def test_same_arguments_give_identical_bytes_and_masks() -> None:
    a = render_sample("train", 17, seed=3)
    b = render_sample("train", 17, seed=3)
    assert a.image.mode == "RGB" and a.image.size == (64, 64)
    assert a.image.tobytes() == b.image.tobytes()
    assert set(a.masks) == set(PARTS)
    for part in PARTS:
        assert a.masks[part].dtype == bool and a.masks[part].shape == (64, 64)
        np.testing.assert_array_equal(a.masks[part], b.masks[part])
    assert a.traits == b.traits
    assert (a.caption, a.species_id, a.split, a.index, a.seed) == (b.caption, b.species_id, "train", 17, 3)


@pytest.mark.parametrize("other", [("train", 1), ("test", 0), ("val", 0), ("val2", 0)])
def test_different_seed_or_split_gives_different_pixels(other: tuple[str, int]) -> None:
    base = _pixels(render_sample("train", 9, seed=0))
    changed = _pixels(render_sample(other[0], 9, seed=other[1]))
    differing = np.any(np.abs(base - changed) > 8, axis=-1).mean()
    assert differing > 0.3


def test_pixels_do_not_depend_on_the_python_hash_seed() -> None:
    code = (
        "import hashlib; from core.data.toybirds import render_sample, render_counterfactual; "
        "print(hashlib.sha256(render_sample('holdout', 4, seed=2).image.tobytes()).hexdigest()); "
        "print(hashlib.sha256(render_counterfactual('holdout', 4, 'wing', 'blue', seed=2).image.tobytes())"
        ".hexdigest())"
    )
    outputs = set()
    for hash_seed in ("1", "2"):
        env = {"PYTHONHASHSEED": hash_seed, "PATH": "/usr/bin:/bin"}
        out = subprocess.run(
            [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=True
        )
        outputs.add(out.stdout.strip())
    here = "\n".join(
        hashlib.sha256(image.tobytes()).hexdigest()
        for image in (
            render_sample("holdout", 4, seed=2).image,
            render_counterfactual("holdout", 4, "wing", "blue", seed=2).image,
        )
    )
    assert outputs == {here}


def test_render_batch_matches_single_renders() -> None:
    batch = render_batch("train", [5, 2, 30], seed=1)
    assert [s.index for s in batch] == [5, 2, 30]
    for sample in batch:
        single = render_sample("train", sample.index, seed=1)
        assert sample.image.tobytes() == single.image.tobytes()


def test_species_of_index_is_balanced_and_used_by_render() -> None:
    n = len(SPECIES)
    assert [species_of_index(i) for i in range(2 * n)] == list(range(n)) * 2
    for index in (0, 7, n + 3, 5 * n - 1):
        sample = render_sample("train", index)
        species = SPECIES[index % n]
        assert sample.species_id == index % n
        assert sample.species is species
        assert sample.species_name == species.name
        assert sample.family == species.family
        assert {p: sample.part_values[p] for p in SPECIES_PARTS} == species.colours
        assert {p: sample.traits[p]["colour"] for p in SPECIES_PARTS} == species.colours


def test_other_image_sizes_keep_the_same_layout() -> None:
    small = render_sample("train", 11, seed=4, image_size=64)
    large = render_sample("train", 11, seed=4, image_size=128)
    assert large.image.size == (128, 128) and large.masks["body"].shape == (128, 128)
    assert large.traits == small.traits and large.caption == small.caption
    for part in PARTS:
        pooled = large.masks[part].reshape(64, 2, 64, 2).mean(axis=(1, 3)) >= 0.5
        overlap = (pooled & small.masks[part]).sum() / max((pooled | small.masks[part]).sum(), 1)
        assert overlap > 0.8, part


# ----------------------------------------------------------------------------- species table


def test_species_table_size_ids_and_names() -> None:
    assert toybirds.WORLD_VERSION == 2
    assert len(SPECIES) == 24
    assert [s.id for s in SPECIES] == list(range(len(SPECIES)))
    names = [s.name for s in SPECIES]
    assert len(set(names)) == len(names)
    assert all(s.family in FAMILIES and s.name.endswith(s.family) for s in SPECIES)
    assert SPECIES[0].name == "scarlet-headed scarlet-winged tanager"
    assert SPECIES[5].name == "golden-headed emerald-winged tanager"


def test_species_are_three_part_colours_each_used_six_times() -> None:
    assert PARTS == ("head", "wing", "body", "tail")
    assert SPECIES_PARTS == ("head", "wing", "body") and NUISANCE_PARTS == ("tail",)
    assert len(SPECIES_COLOURS) == 4 and set(SPECIES_COLOURS) <= set(COLOURS)
    for species in SPECIES:
        assert tuple(species.colours) == SPECIES_PARTS
        assert all(species.colours[p] in SPECIES_COLOURS for p in SPECIES_PARTS)
    for part in SPECIES_PARTS:
        assert PART_VALUES[part] == SPECIES_COLOURS
        assert Counter(s.colours[part] for s in SPECIES) == dict.fromkeys(SPECIES_COLOURS, 6), part
    triples = {tuple(s.colours[p] for p in SPECIES_PARTS) for s in SPECIES}
    assert len(triples) == 24, "two species would be drawn identically"


def test_families_are_body_colours_of_six_species_differing_only_in_head_and_wing() -> None:
    assert len(FAMILIES) == 4 and set(FAMILY_OF_BODY) == set(SPECIES_COLOURS)
    assert tuple(FAMILY_OF_BODY.values()) == FAMILIES
    for family in FAMILIES:
        members = [s for s in SPECIES if s.family == family]
        assert len(members) == 6, family
        assert {FAMILY_OF_BODY[s.colours["body"]] for s in members} == {family}
        for a, b in itertools.combinations(members, 2):
            assert a.colours["body"] == b.colours["body"]
            assert (a.colours["head"], a.colours["wing"]) != (b.colours["head"], b.colours["wing"])


def test_part_label_accepts_only_species_parts() -> None:
    bird = SPECIES[5]
    assert [bird.part_label(p) for p in SPECIES_PARTS] == ["yellow", "green", "red"]
    assert bird.part_rgb("wing") == COLOURS["green"]
    with pytest.raises(ValueError, match="'tail' is not a species part.*nuisance"):
        bird.part_label("tail")
    with pytest.raises(ValueError, match="'beak' is not a species part"):
        bird.part_label("beak")


def test_species_with_finds_every_species_and_nothing_else() -> None:
    for species in SPECIES:
        assert species_with(species.colours) is species
        assert species_with({**species.colours, "tail": "white"}) is species  # the tail is no trait
    assert species_with({"head": "blue", "wing": "red", "body": "red"}) is None  # not in the table
    assert species_with({"head": "red", "wing": "red"}) is None
    table = {tuple(s.colours[p] for p in SPECIES_PARTS) for s in SPECIES}
    assert sum(
        species_with(dict(zip(SPECIES_PARTS, c, strict=True))) is None
        for c in itertools.product(SPECIES_COLOURS, repeat=3)
    ) == 64 - len(table)


def _oracle_code(colours: dict[str, str]) -> list[int]:
    """Each species part's colour index as 2 bits: the poster's 3 concepts x 2 bits."""
    bits = []
    for part in SPECIES_PARTS:
        value = SPECIES_COLOURS.index(colours[part])
        bits += [(value >> 1) & 1, value & 1]
    return bits


def test_a_per_part_two_bit_code_identifies_every_species(samples: list[ToyBirdSample]) -> None:
    codes = {tuple(_oracle_code(s.colours)) for s in SPECIES}
    assert len(codes) == len(SPECIES) and all(len(c) == 6 for c in codes)
    # Hamming ranking of the oracle code read from each image's ground truth retrieves perfectly.
    labels = np.array([s.species_id for s in samples])
    packed = pack_codes(np.array([_oracle_code(s.part_values) for s in samples]).astype(bool))
    assert len(set(labels)) == len(SPECIES)
    assert mean_average_precision(labels, labels, packed, packed) == pytest.approx(1.0)
    # Dropping one part's bits loses the ceiling: the three parts are all needed.
    for dropped in range(len(SPECIES_PARTS)):
        keep = [k for k in range(6) if k // 2 != dropped]
        partial = pack_codes(np.array([_oracle_code(s.part_values) for s in samples])[:, keep].astype(bool))
        assert mean_average_precision(labels, labels, partial, partial) < 0.9


def test_nuisance_traits_vary_per_image_not_per_species(samples: list[ToyBirdSample]) -> None:
    for sample in samples:
        assert list(sample.traits) == list(PARTS)
        for part in PARTS:
            assert tuple(sample.traits[part]) == PART_ATTRIBUTES[part]
            for name, value in sample.traits[part].items():
                assert value in ATTRIBUTE_VALUES[part][name]
        assert sample.part_values == {p: sample.traits[p]["colour"] for p in PARTS}
    for part, name in [("head", "crest"), ("wing", "pattern"), ("tail", "shape"), ("tail", "colour")]:
        seen = {s.traits[part][name] for s in samples}
        assert len(seen) >= min(len(ATTRIBUTE_VALUES[part][name]), 6), (part, name)
    # The same species shows different nuisance in its two images.
    by_species: dict[int, list[ToyBirdSample]] = {}
    for sample in samples:
        by_species.setdefault(sample.species_id, []).append(sample)
    differing = sum(
        a.traits["tail"] != b.traits["tail"] or a.traits["head"]["crest"] != b.traits["head"]["crest"]
        for a, b in by_species.values()
    )
    assert differing >= 18


def test_palette_colours_are_far_apart() -> None:
    rgb = np.array(list(COLOURS.values()), dtype=np.float64)
    distances = np.linalg.norm(rgb[:, None] - rgb[None, :], axis=-1)
    np.fill_diagonal(distances, np.inf)
    assert distances.min() > 80.0


# ----------------------------------------------------------------------------- masks


def test_masks_are_disjoint_and_non_empty(samples: list[ToyBirdSample]) -> None:
    for sample in samples:
        stack = np.stack([sample.masks[p] for p in PARTS])
        assert stack.sum(axis=0).max() <= 1
        assert sample.visible == {p: bool(sample.masks[p].any()) for p in PARTS}
    for part in SPECIES_PARTS:
        assert sum(s.visible[part] for s in samples) == len(samples), part
    assert sum(s.visible["tail"] for s in samples) >= len(samples) - 2


def _share_in_part_colour(sample: ToyBirdSample, part: str, mask: np.ndarray) -> float:
    """Fraction of ``mask`` pixels within RGB distance 60 of the palette colour of ``part`` in this image."""
    rgb = np.array(COLOURS[sample.part_values[part]])
    distance = np.linalg.norm(_pixels(sample) - rgb, axis=-1)
    return float((distance[mask] < 60.0).mean())


def test_mask_pixels_carry_the_part_colour(samples: list[ToyBirdSample]) -> None:
    for part in PARTS:
        aligned, mirrored = [], []
        for sample in samples:
            mask = sample.masks[part]
            if not mask.any():
                continue
            aligned.append(_share_in_part_colour(sample, part, mask))
            mirrored.append(_share_in_part_colour(sample, part, mask[:, ::-1]))
        assert np.mean(aligned) > 0.8, part
        assert min(aligned) > 0.6, part  # the eye, beak and wing pattern take the rest
        # The same check on mirrored masks fails, so it would catch masks misaligned under flip.
        assert np.mean(mirrored) < np.mean(aligned) - 0.3, part


def test_masks_form_one_bird_and_clutter_is_not_counted(samples: list[ToyBirdSample]) -> None:
    for sample in samples:
        union = np.logical_or.reduce([sample.masks[p] for p in PARTS])
        _, count = ndimage.label(union, structure=EIGHT)
        assert count <= 4, sample.index  # a twig may cut the bird in two, crest or tail tips come loose
        # Closing gaps of a pixel or two (the twig is at most ~1.6 px wide) leaves one bird;
        # scattered clutter in the masks would add pieces far away.
        _, joined = ndimage.label(ndimage.binary_dilation(union, structure=EIGHT), structure=EIGHT)
        assert joined == 1, sample.index


def test_pose_position_and_flip_vary(samples: list[ToyBirdSample]) -> None:
    facing_right, body_areas, centres = 0, [], []
    for sample in samples:
        head = np.argwhere(sample.masks["head"]).mean(axis=0)
        body = np.argwhere(sample.masks["body"]).mean(axis=0)
        facing_right += head[1] > body[1]
        body_areas.append(sample.masks["body"].sum())
        centres.append(body)
    assert 0.2 * len(samples) <= facing_right <= 0.8 * len(samples)
    assert max(body_areas) / min(body_areas) > 1.4
    assert np.asarray(centres).std(axis=0).min() > 4.0


# ----------------------------------------------------------------------------- part statistics


def test_species_parts_are_big_and_separate_on_the_patch_grid(many: list[ToyBirdSample]) -> None:
    stats = part_statistics(many, patch_size=8)
    assert stats["patch_size"] == 8
    areas, overlaps = stats["area_patches"], stats["patch_overlap"]
    for part in SPECIES_PARTS:
        assert areas[part] >= 4.0, (part, areas[part])  # at least 2 x 2 patches of 8 x 8 at 64 px
    assert areas["tail"] > 1.0
    for a, b in itertools.combinations(SPECIES_PARTS, 2):
        assert 0.0 <= overlaps[f"{a}/{b}"] <= 0.15, (a, b, overlaps[f"{a}/{b}"])
    # the same number straight from the masks
    head_area = np.mean([s.masks["head"].sum() / 64 for s in many])
    assert areas["head"] == pytest.approx(head_area)


def test_part_statistics_and_patch_coverage_on_known_masks() -> None:
    masks = {part: np.zeros((32, 32), dtype=bool) for part in PARTS}
    masks["head"][0:16, 0:16] = True  # patches (0,0) (0,1) (1,0) (1,1)
    masks["wing"][8:24, 8:24] = True  # patches (1,1) (1,2) (2,1) (2,2)
    masks["body"][24:26, 24:32] = True  # a quarter of patch (3,3)
    fake = dataclasses.replace(render_sample("train", 0, image_size=32), masks=masks)
    stats = part_statistics([fake], patch_size=8)
    assert stats["area_patches"] == {"head": 4.0, "wing": 4.0, "body": 0.25, "tail": 0.0}
    assert stats["patch_overlap"]["head/wing"] == pytest.approx(1 / 7)
    assert stats["patch_overlap"]["head/body"] == 0.0
    assert stats["patch_overlap"]["head/tail"] == 0.0
    coverage = patch_coverage(masks["body"], 8)
    assert coverage.shape == (4, 4) and coverage[3, 3] == 0.25 and coverage.sum() == 0.25
    with pytest.raises(ValueError, match="does not divide"):
        patch_coverage(masks["body"], 10)


# ----------------------------------------------------------------------------- counterfactuals


def _other_value(part: str, value: str) -> str:
    return next(v for v in PART_VALUES[part] if v != value)


def test_counterfactual_repaints_only_the_swapped_part(samples: list[ToyBirdSample]) -> None:
    outside_changes = 0
    for sample in samples[:24]:
        before = _pixels(sample)
        for part in PARTS:
            mask = sample.masks[part]
            near = ndimage.binary_dilation(mask, structure=EIGHT)  # the mask dilated by 1 pixel
            distance = ndimage.distance_transform_edt(~mask)
            inner = ndimage.binary_erosion(mask, structure=EIGHT)
            others = np.logical_or.reduce(
                [ndimage.binary_erosion(sample.masks[p], structure=EIGHT) for p in PARTS if p != part]
            )
            values = [v for v in PART_VALUES[part] if v != sample.part_values[part]]
            for value in values if part in SPECIES_PARTS else values[:2]:
                swapped = render_counterfactual("test", sample.index, part, value, seed=5)
                for p in PARTS:
                    np.testing.assert_array_equal(swapped.masks[p], sample.masks[p])
                diff = np.abs(_pixels(swapped) - before).max(axis=-1)
                changed = diff > 0
                # The part itself is repainted (its eye and beak, not in its colour, stay)...
                assert (diff[inner] > 30).mean() > 0.85, (sample.index, part, value)
                # ...nothing inside the other parts or away from the part changes...
                assert not (changed & others).any(), (sample.index, part, value)
                assert distance[changed].max() <= 8.0, (sample.index, part, value)
                # ...and nearly all of the change lies in the part's mask dilated by 1 pixel.  The rest
                # is thin slivers of the part that cover too little of a pixel to enter its mask: crest
                # tips, tail tips, and a wedge of body showing between the head and the raised wing
                # (up to ~6 px from the body mask).
                assert (changed & near).sum() >= 0.9 * changed.sum(), (sample.index, part, value)
                assert diff[~near].sum() <= 0.05 * diff.sum(), (sample.index, part, value)
                outside_changes += bool((changed & ~near).any())
    assert outside_changes < 0.4 * 24 * (3 * 3 + 2)  # 80 of 264 here


def test_counterfactual_changes_the_species_and_traits_accordingly(samples: list[ToyBirdSample]) -> None:
    named = 0
    for sample in samples[:24]:
        for part in PARTS:
            value = _other_value(part, sample.part_values[part])
            swapped = render_counterfactual("test", sample.index, part, value, seed=5)
            expected_traits = {p: dict(t) for p, t in sample.traits.items()}
            expected_traits[part]["colour"] = value
            assert swapped.traits == expected_traits
            colours = {p: swapped.traits[p]["colour"] for p in SPECIES_PARTS}
            assert swapped.species is species_with(colours)
            if part in NUISANCE_PARTS:
                assert swapped.species is sample.species  # the tail never changes the species
            else:
                assert swapped.species is not sample.species
            named += swapped.species is not None
            assert swapped.family == FAMILY_OF_BODY[colours["body"]]
            who = "a photo of a bird, " if swapped.species is None else swapped.species.name
            assert who in swapped.caption and f"{value} {part}" in swapped.caption
            assert (swapped.index, swapped.split, swapped.seed) == (sample.index, "test", 5)
            changed_facts = sample_facts(sample) ^ sample_facts(swapped)
            assert {f for f in changed_facts if f[0] in PARTS} == {
                (part, "colour", sample.part_values[part]),
                (part, "colour", value),
            }
    assert 0 < named < 24 * len(PARTS)  # some swaps land on another species, some on none


def test_counterfactual_matches_render_sample_with_swap_and_is_deterministic() -> None:
    a = render_counterfactual("train", 3, "head", "green", seed=2, image_size=48)
    b = render_counterfactual("train", 3, "head", "green", seed=2, image_size=48)
    c = render_sample("train", 3, seed=2, image_size=48, swap={"head": "green"})
    assert a.image.size == (48, 48)
    assert a.image.tobytes() == b.image.tobytes() == c.image.tobytes()
    assert a.caption == b.caption == c.caption and a.traits == c.traits
    # Swapping a part to its own colour, or swapping nothing, is the plain render.
    plain = render_sample("train", 3, seed=2, image_size=48)
    same = render_counterfactual("train", 3, "wing", plain.part_values["wing"], seed=2, image_size=48)
    assert same.image.tobytes() == plain.image.tobytes() and same.species is plain.species
    assert render_sample("train", 3, seed=2, image_size=48, swap={}).image.tobytes() == plain.image.tobytes()
    # Two parts at once.
    both = render_sample("train", 3, seed=2, image_size=48, swap={"head": "blue", "tail": "black"})
    assert (both.part_values["head"], both.part_values["tail"]) == ("blue", "black")


@pytest.mark.parametrize(
    ("part", "value", "message"),
    [
        ("beak", "red", "Unknown part 'beak'"),
        ("head", "purple", "'purple' is not a colour of the head"),
        ("wing", "orange", "not a colour of the wing"),
        ("tail", "pink", "not a colour of the tail"),
        ("body", "Red", "not a colour of the body"),
    ],
)
def test_bad_counterfactual_is_refused(part: str, value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_counterfactual("test", 0, part, value)
    with pytest.raises(ValueError, match=message):
        render_sample("test", 0, swap={part: value})


# ----------------------------------------------------------------------------- captions


def test_caption_names_species_family_and_every_attribute(samples: list[ToyBirdSample]) -> None:
    for sample in samples:
        assert sample.caption.startswith(f"a photo of {'an' if sample.species_name[0] in 'aeiou' else 'a'} ")
        assert sample.species_name in sample.caption and sample.family in sample.caption
        for part in PARTS:
            if sample.visible[part]:
                phrase = part_phrase(part, sample.traits[part])
                assert phrase in sample.caption, (phrase, sample.caption)


def test_caption_of_a_known_sample() -> None:
    sample = render_sample("train", 0, seed=0)
    assert all(sample.visible.values())
    assert sample.caption == (
        "a photo of a scarlet-headed scarlet-winged tanager, a tanager with a crested red head, "
        "a striped red wing, a red body and a forked green tail"
    )


def test_caption_of_a_counterfactual_that_is_no_species() -> None:
    swapped = render_counterfactual("train", 0, "head", "blue", seed=0)
    assert swapped.species is None and swapped.species_id is None
    assert swapped.species_name == "unnamed bird"
    assert swapped.caption.startswith("a photo of a bird, a tanager with a crested blue head, ")
    assert not any(f[0] == "species" for f in sample_facts(swapped))


def test_part_phrase_and_part_value_prompt() -> None:
    traits = {"colour": "orange", "shape": "forked"}
    assert part_phrase("tail", traits) == "a forked orange tail"
    assert part_phrase("tail", traits, ["colour"]) == "an orange tail"
    assert part_phrase("tail", traits, ["shape"]) == "a forked tail"
    assert part_value_prompt("head", "blue") == "a photo of a bird with a blue head."
    assert part_value_prompt("wing", "orange") == "a photo of a bird with an orange wing."
    for part in PARTS:
        for value in PART_VALUES[part]:
            assert re.fullmatch(
                rf"a photo of a bird with an? {value} {part}\.", part_value_prompt(part, value)
            )


def _claims_read_from(text: str) -> set[tuple[str, ...]]:
    """The part claims a text makes, read back from its words (the phrases after the first ' with ')."""
    _, _, described = text.rstrip(".").partition(" with ")
    claims = set()
    for phrase in re.split(r", | and ", described) if described else []:
        article, *words, part = phrase.split()
        assert article in ("a", "an") and part in PARTS, phrase
        for word in words:
            attribute = next(a for a in PART_ATTRIBUTES[part] if word in ATTRIBUTE_VALUES[part][a])
            claims.add((part, attribute, word))
    return claims


def test_random_caption_makes_only_true_claims_and_single_part_phrases(samples: list[ToyBirdSample]) -> None:
    rng = np.random.default_rng(0)
    counterfactual = render_counterfactual("test", 0, "head", "blue", seed=5)
    pool = [*samples, counterfactual]
    kinds: Counter[str] = Counter()
    prompts: set[tuple[str, str]] = set()
    for draw in range(500):
        sample = pool[draw % len(pool)]
        caption = random_caption(sample, rng)
        assert caption.claims and caption.claims <= sample_facts(sample), caption
        assert {c for c in caption.claims if c[0] in PARTS} == _claims_read_from(caption.text), caption
        for claim in caption.claims:
            if claim[0] in ("species", "family"):
                assert claim[1] in caption.text
        if caption.text == sample.caption:
            kinds["full"] += 1
        elif caption.claims == {("species", sample.species_name)}:
            kinds["species"] += 1
            assert (
                caption.text == f"a photo of {'an' if sample.species_name[0] in 'aeiou' else 'a'} "
                f"{sample.species_name}."
            )
        else:
            parts = {c[0] for c in caption.claims if c[0] in PARTS}
            kinds["one part" if len(parts) == 1 else "several parts"] += 1
            if len(caption.claims) == 1 and caption.text.startswith("a photo of a bird with"):
                ((part, attribute, value),) = caption.claims
                if attribute == "colour":
                    assert caption.text == part_value_prompt(part, value)
                    prompts.add((part, value))
    assert 60 <= kinds["full"] <= 140 and 40 <= kinds["species"] <= 110
    assert kinds["one part"] >= 150 and kinds["several parts"] >= 60
    # "a photo of a bird with a blue head." and its kin, for every species part
    assert {part for part, _ in prompts} >= set(SPECIES_PARTS)
    assert len(prompts) >= 10


def test_random_caption_is_seeded_and_names_only_visible_parts(samples: list[ToyBirdSample]) -> None:
    first = [random_caption(s, np.random.default_rng(7)) for s in samples[:10]]
    again = [random_caption(s, np.random.default_rng(7)) for s in samples[:10]]
    assert first == again
    masks = {**samples[0].masks, "tail": np.zeros_like(samples[0].masks["tail"])}
    tailless = dataclasses.replace(samples[0], masks=masks)
    assert not tailless.visible["tail"]
    assert not any(f[0] == "tail" for f in sample_facts(tailless))
    rng = np.random.default_rng(1)
    for _ in range(100):
        caption = random_caption(tailless, rng)
        if caption.text != tailless.caption:  # the stored caption was written for the full bird
            assert "tail" not in caption.text and not any(c[0] == "tail" for c in caption.claims)


# ----------------------------------------------------------------------------- disk writer


def test_render_to_disk_writes_images_masks_and_metadata(tmp_path: Path) -> None:
    out = tmp_path / "birds"
    calls: list[tuple[int, int]] = []
    result = render_to_disk(out, "test", 5, seed=2, progress=lambda done, total: calls.append((done, total)))
    assert result == out
    assert calls == [(i, 5) for i in range(1, 6)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["birds"], "temporary directory left behind"
    assert len(list((out / "images").iterdir())) == 5
    assert len(list((out / "masks").iterdir())) == 5 * len(PARTS)
    with open(out / "metadata.csv", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == METADATA_COLUMNS
        rows = list(reader)
    assert [row["index"] for row in rows] == ["0", "1", "2", "3", "4"]
    for row in rows:
        sample = render_sample("test", int(row["index"]), seed=2)
        assert row["file"] == f"images/test_{sample.index:06d}.png"
        assert (row["split"], row["seed"], row["species_id"]) == ("test", "2", str(sample.species_id))
        assert (row["species_name"], row["family"], row["caption"]) == (
            sample.species_name,
            sample.family,
            sample.caption,
        )
        assert [row[p].split("|") for p in PARTS] == [list(sample.traits[p].values()) for p in PARTS]
        assert [row[p].split("|")[0] for p in SPECIES_PARTS] == [
            sample.species.colours[p] for p in SPECIES_PARTS
        ]
        with Image.open(out / row["file"]) as image:
            assert image.mode == "RGB" and image.tobytes() == sample.image.tobytes()
        for part in PARTS:
            with Image.open(out / "masks" / f"test_{sample.index:06d}_{part}.png") as mask_image:
                assert mask_image.mode == "L"
                mask = np.asarray(mask_image)
            assert set(np.unique(mask)) <= {0, 255}
            np.testing.assert_array_equal(mask == 255, sample.masks[part])


def test_render_to_disk_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    out = tmp_path / "birds"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        render_to_disk(out, "train", 2)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    render_to_disk(out, "train", 2, overwrite=True)
    assert not (out / "keep.txt").exists()
    assert len(list((out / "images").iterdir())) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["birds"]


def test_render_to_disk_accepts_an_empty_directory_and_rejects_a_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    render_to_disk(empty, "train", 1)
    assert (empty / "images" / "train_000000.png").is_file()
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        render_to_disk(a_file, "train", 1)


def test_render_to_disk_leaves_nothing_when_interrupted(tmp_path: Path) -> None:
    def explode(done: int, total: int) -> None:
        if done == 2:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        render_to_disk(tmp_path / "birds", "train", 4, progress=explode)
    assert list(tmp_path.iterdir()) == []


def test_folder_layout_is_read_by_the_folder_reader(tmp_path: Path) -> None:
    from core.data.readers import read_image_folder
    from core.data.spec import DataSpec, open_split

    root = tmp_path / "birds"
    assert render_to_disk(root, "train", 30, seed=4, image_size=32, layout="folder") == root / "train"
    assert render_to_disk(root, "test", 26, seed=4, image_size=32, layout="folder") == root / "test"
    assert sorted(p.name for p in root.iterdir()) == ["test", "train"], "temporary folder left behind"
    names = sorted(species.name for species in SPECIES)
    for split, count in (("train", 30), ("test", 26)):
        images = read_image_folder(root, split)
        assert images.classes == names, "every species has its folder, even with fewer images than species"
        assert len(images.paths) == count
        indices = set()
        for path, label in zip(images.paths, images.labels, strict=True):
            index = int(path.stem.removeprefix(f"{split}_"))
            sample = render_sample(split, index, seed=4, image_size=32)
            assert names[label] == sample.species_name == path.parent.name
            with Image.open(path) as image:
                assert image.tobytes() == sample.image.tobytes()
            indices.add(index)
        assert indices == set(range(count))
    opened = open_split(DataSpec(kind="folder", root=str(root)), "test")
    assert len(opened) == 26 and opened.classes == names
    sample = render_sample("test", 7, seed=4, image_size=32)
    position = next(i for i in range(len(opened)) if opened.image_id(i).endswith("test_000007.png"))
    assert opened.classes[opened.labels[position]] == sample.species_name
    assert np.array_equal(np.asarray(opened.image(position)), np.asarray(sample.image))
    with open(root / "test" / "metadata.csv", newline="", encoding="utf-8") as handle:
        row = next(r for r in csv.DictReader(handle) if r["index"] == "7")
    assert row["file"] == f"{sample.species_name}/test_000007.png" and (root / "test" / row["file"]).is_file()


def test_folder_layout_keeps_other_splits_and_refuses_a_rendered_split(tmp_path: Path) -> None:
    root = tmp_path / "birds"
    render_to_disk(root, "train", 2, image_size=32, layout="folder")
    render_to_disk(root, "test", 2, image_size=32, layout="folder")
    with pytest.raises(ValueError, match="not empty"):
        render_to_disk(root, "test", 3, image_size=32, layout="folder")
    render_to_disk(root, "test", 3, image_size=32, layout="folder", overwrite=True)
    assert len(list((root / "train").rglob("*.png"))) == 2
    assert len(list((root / "test").rglob("*.png"))) == 3
    flat = tmp_path / "flat"
    render_to_disk(flat, "train", 1, image_size=32)
    with pytest.raises(ValueError, match="images/"):
        render_to_disk(flat, "test", 1, image_size=32, layout="folder")
    with pytest.raises(ValueError, match="Layout 'grid' is unknown"):
        render_to_disk(tmp_path / "other", "train", 1, layout="grid")
    assert not (tmp_path / "other").exists()


def test_cli_renders_train_and_test_class_folders_in_one_call(tmp_path: Path) -> None:
    from core.cli import main

    root = tmp_path / "birds"
    args = ["toybirds", "render", "--out", str(root), "--layout", "folder", "--split", "train,test"]
    assert main([*args, "--count", "3", "--image-size", "32"]) == 0
    assert sorted(p.name for p in root.iterdir()) == ["test", "train"]
    assert len(list((root / "test").rglob("*.png"))) == 3


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("split", ["", "a/b", "has space", None, 3])
def test_bad_split_is_rejected(split: object, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Split"):
        render_sample(split, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Split"):
        render_to_disk(tmp_path / "out", split, 1)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"index": -1}, "index"),
        ({"index": 1.5}, "index"),
        ({"index": True}, "index"),
        ({"seed": -3}, "seed"),
        ({"image_size": 8}, "image_size"),
    ],
)
def test_bad_numbers_are_rejected(kwargs: dict[str, object], word: str) -> None:
    args: dict[str, object] = {"split": "train", "index": 0, **kwargs}
    with pytest.raises(ValueError, match=word):
        render_sample(**args)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=word):
        render_counterfactual(**{**args, "part": "head", "value": "red"})  # type: ignore[arg-type]
    if word == "index":
        with pytest.raises(ValueError, match="index"):
            species_of_index(kwargs["index"])  # type: ignore[arg-type]


def test_bad_count_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="count"):
        render_to_disk(tmp_path / "out", "train", -1)


# ----------------------------------------------------------------------------- world version


def test_a_spec_from_before_world_versions_is_refused_with_one_sentence() -> None:
    from core.data.spec import DataSpec, open_split

    old = DataSpec.from_dict({"kind": "toybirds", "image_size": 64, "train_per_class": 2, "seed": 0})
    assert old.world == 1
    with pytest.raises(ValueError, match=r"world v1, but this ConceptLens draws world v2; retrain"):
        open_split(old, "test")
    current = DataSpec.from_dict(DataSpec(train_per_class=2).to_dict())
    assert current.world == toybirds.WORLD_VERSION and len(open_split(current, "train")) == 48
    assert DataSpec.from_dict(DataSpec(kind="folder", root="/x").to_dict()).world == toybirds.WORLD_VERSION


def test_recolour_swaps_the_species_colours_keeps_their_shading_and_leaves_other_colours() -> None:
    red, yellow, blue, green = (np.array(COLOURS[c]) for c in SPECIES_COLOURS)
    offset = np.array([6, -9, 4])
    pixels = np.array([[red + offset, yellow, blue - offset], [green, COLOURS["orange"], (128, 128, 128)]])
    image = Image.fromarray(pixels.astype(np.uint8))
    # red -> blue, yellow -> green, blue -> red, green -> yellow
    out = np.asarray(toybirds.recolour(image, (2, 3, 0, 1))).astype(int)
    np.testing.assert_array_equal(out[0], [blue + offset, green, red - offset])
    np.testing.assert_array_equal(out[1], [yellow, COLOURS["orange"], (128, 128, 128)])
    assert np.array_equal(np.asarray(toybirds.recolour(image, (0, 1, 2, 3))), pixels.astype(np.uint8))
    with pytest.raises(ValueError, match="reorders the 4 species colours"):
        toybirds.recolour(image, (0, 0, 1, 2))
    assert toybirds.COLOUR_PERMUTATIONS[0] == (0, 1, 2, 3) and len(set(toybirds.COLOUR_PERMUTATIONS)) == 24


def test_recolouring_a_bird_is_close_to_drawing_it_in_the_swapped_colours() -> None:
    """The palette swap, which knows nothing of the parts, paints each part as the renderer would."""
    order = (1, 2, 3, 0)
    for index in (3, 40, 77):
        sample = toybirds.render_sample("train", index, seed=5)
        swap = {
            part: SPECIES_COLOURS[order[SPECIES_COLOURS.index(sample.traits[part]["colour"])]]
            for part in SPECIES_PARTS
        }
        drawn = np.asarray(toybirds.render_sample("train", index, seed=5, swap=swap).image, dtype=float)
        swapped = np.asarray(toybirds.recolour(sample.image, order), dtype=float)
        before = np.asarray(sample.image, dtype=float)
        for part in SPECIES_PARTS:
            mask = sample.masks[part]
            error, change = np.abs(swapped - drawn)[mask].mean(), np.abs(before - drawn)[mask].mean()
            assert error < 0.2 * change
