"""ConceptHash evaluation that can fail: each metric on hand-made codes, masks and attention maps."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from core.backbones.clip import load_backbone
from core.concepthash.codes import per_part_codes, value_codes
from core.concepthash.evaluate import (
    centre_rule,
    centre_sharing,
    colour_codes,
    encode_with_attention,
    evaluate_model,
    family_conditional_nmi_matrix,
    flip_invariance,
    leaks_name_the_new_colour,
    localisation_metrics,
    overlap_rule,
    part_swap_flip_rates,
    part_swap_metrics,
    per_part_capacity_ceiling,
    subcode_part_nmi,
    swap_colour,
)
from core.concepthash.model import ConceptHash, ConceptHashConfig
from core.data.spec import DataSpec, open_split
from core.data.toybirds import (
    COLOURS,
    PART_VALUES,
    PARTS,
    SPECIES,
    SPECIES_COLOURS,
    SPECIES_PARTS,
)

# ---- part swap --------------------------------------------------------------------------------


def random_colours(n: int, seed: int = 0) -> list[dict[str, str]]:
    """n images' part colours: species parts from the four species colours, the tail from the palette."""
    rng = np.random.default_rng(seed)
    return [{part: str(rng.choice(PART_VALUES[part])) for part in PARTS} for _ in range(n)]


def swapped_colours(colours: list[dict[str, str]]) -> list[list[dict[str, str]]]:
    """Per part, every image's colours after the evaluator's colour swap of that part."""

    def repaint(i: int, c: dict[str, str], p: int, part: str) -> dict[str, str]:
        return c | {part: swap_colour(i, p, c[part])}

    return [[repaint(i, c, p, part) for i, c in enumerate(colours)] for p, part in enumerate(PARTS)]


def swapped_values(colours: list[dict[str, str]], code) -> tuple[np.ndarray, np.ndarray]:
    """Original (N, M) sub-code values and, per part, those after the evaluator's colour swap."""
    original = np.array([code(c) for c in colours])
    swapped = np.array([[code(c) for c in row] for row in swapped_colours(colours)])
    return original, swapped


TRAINED_SPECIES = {tuple(s.colours[part] for part in SPECIES_PARTS) for s in SPECIES}


def is_species(colours: dict[str, str]) -> bool:
    return tuple(colours[part] for part in SPECIES_PARTS) in TRAINED_SPECIES


def species_colours(n: int, seed: int = 0) -> list[dict[str, str]]:
    """n images of trained species (species parts from the table, any tail)."""
    rng = np.random.default_rng(seed)
    species = [SPECIES[int(rng.integers(len(SPECIES)))] for _ in range(n)]
    return [dict(s.colours) | {"tail": str(rng.choice(PART_VALUES["tail"]))} for s in species]


def species_lookup_code(colours: dict[str, str]) -> list[int]:
    """Per-part code for a trained species, the same fixed code for any other combination: part-specific
    on swaps that give a trained species, not on swaps that give a new combination."""
    return part_code(colours) if is_species(colours) else [0, 0, 0]


def part_code(colours: dict[str, str]) -> list[int]:
    """Sub-code m = colour index of species part m."""
    return [SPECIES_COLOURS.index(colours[part]) for part in SPECIES_PARTS]


def family_code(colours: dict[str, str]) -> list[int]:
    """Every sub-code = the family (body colour)."""
    return [SPECIES_COLOURS.index(colours["body"])] * 3


def test_swap_colour_is_another_value_of_the_part_and_deterministic():
    for i in range(40):
        for p, part in enumerate(PARTS):
            current = PART_VALUES[part][i % len(PART_VALUES[part])]
            value = swap_colour(i, p, current)
            assert value != current and value in PART_VALUES[part]
            assert swap_colour(i, p, current) == value
    assert {swap_colour(i, 3, "red") for i in range(200)} == set(COLOURS) - {"red"}
    assert {swap_colour(i, 0, "red") for i in range(200)} == set(SPECIES_COLOURS) - {"red"}


def test_part_swap_of_a_per_part_code_is_the_identity_pattern():
    result = part_swap_metrics(*swapped_values(random_colours(60), part_code))
    expected = np.vstack([np.eye(3), np.zeros((1, 3))])  # rows: head, wing, body, tail
    np.testing.assert_array_equal(result["matrix"], expected)
    assert result["parts"] == list(PARTS)
    assert result["matched"] == [
        {"concept": m, "part": part, "flip_rate": 1.0} for m, part in enumerate(SPECIES_PARTS)
    ]
    assert result["matched_flip_rate_mean"] == result["matched_flip_rate_min"] == 1.0
    assert result["largest_off_diagonal"]["flip_rate"] == 0.0


def test_part_swap_of_a_family_code_fails():
    result = part_swap_metrics(*swapped_values(random_colours(60), family_code))
    expected = np.zeros((4, 3))
    expected[PARTS.index("body")] = 1.0  # only a body swap changes anything, and then every sub-code
    np.testing.assert_array_equal(result["matrix"], expected)
    assert result["matched_flip_rate_mean"] == pytest.approx(1 / 3)
    assert result["matched_flip_rate_min"] == 0.0
    assert result["largest_off_diagonal"]["flip_rate"] == 1.0
    assert result["largest_off_diagonal"]["part"] == "body"


def test_part_swap_split_by_counterfactual_tells_a_species_lookup_from_a_part_code():
    colours = species_colours(400)
    new = np.array([[not is_species(c) for c in row] for row in swapped_colours(colours)])
    assert new[PARTS.index("tail")].sum() == 0 and 0 < new[:3].mean() < 1
    lookup = part_swap_metrics(*swapped_values(colours, species_lookup_code), new)["by_counterfactual"]
    trained, novel = lookup["trained_species"], lookup["new_combination"]
    np.testing.assert_array_equal(trained["matrix"], np.eye(3))
    assert trained["largest_off_diagonal"]["flip_rate"] == 0.0
    assert novel["largest_off_diagonal"]["flip_rate"] > 0.5  # leaving the table scrambles every sub-code
    assert trained["pairs"] == (~new[:3]).sum(axis=1).tolist()
    assert novel["pairs"] == new[:3].sum(axis=1).tolist()
    part = part_swap_metrics(*swapped_values(colours, part_code), new)["by_counterfactual"]
    for subset in part.values():  # a real part code is the identity on both
        np.testing.assert_array_equal(subset["matrix"], np.eye(3))
    no_novel = part_swap_metrics(*swapped_values(colours, part_code), np.zeros_like(new))
    assert no_novel["by_counterfactual"]["new_combination"]["matrix"] is None


def leak_inputs(code, bits_per: int, n: int = 200):
    """±1 codes of ``n`` random images and of their species-part repaints under ``code`` (colours -> M
    values), and the colours each repaint painted."""
    colours = random_colours(n)
    original, swapped = swapped_values(colours, code)
    repaints = swapped_colours(colours)
    painted = [[repaints[p][i][part] for i in range(n)] for p, part in enumerate(SPECIES_PARTS)]
    swapped_codes = np.stack([value_codes(values, bits_per) for values in swapped[:3]])
    return value_codes(original, bits_per), swapped_codes, painted, colours


def test_a_head_that_reads_the_wing_names_the_new_colour_every_time():
    def head_reads_wing(c):
        return [
            SPECIES_COLOURS.index(c["wing"]),
            SPECIES_COLOURS.index(c["wing"]),
            SPECIES_COLOURS.index(c["body"]),
        ]

    original, swapped, painted, colours = leak_inputs(head_reads_wing, 3)
    centres = per_part_codes(9, 3)
    assert {m: part for m, (part, _) in colour_codes(centres, 3).items()} == dict(enumerate(SPECIES_PARTS))
    result = leaks_name_the_new_colour(original, swapped, painted, centres, 3)
    assert result["by_pair"]["wing -> concept 0 (head)"] == {"flips": len(colours), "named_new_colour": 1.0}
    assert result["by_pair"]["body -> concept 0 (head)"]["flips"] == 0
    assert result["named_new_colour"] == 1.0 and result["flips"] == len(colours)


def test_a_leak_to_a_value_no_colour_has_names_nothing():
    def head_breaks(c):  # follows the wing, but in values 4-7, which are no colour's code (3 bits)
        return [4 + SPECIES_COLOURS.index(c["wing"]), SPECIES_COLOURS.index(c["wing"]), 0]

    original, swapped, painted, colours = leak_inputs(head_breaks, 3)
    result = leaks_name_the_new_colour(original, swapped, painted, per_part_codes(9, 3), 3)
    assert result["by_pair"]["wing -> concept 0 (head)"] == {"flips": len(colours), "named_new_colour": 0.0}
    assert result["named_new_colour"] == 0.0
    clean = leaks_name_the_new_colour(*leak_inputs(part_code, 3)[:3], per_part_codes(9, 3), 3)
    assert clean["flips"] == 0 and clean["named_new_colour"] is None
    json.dumps(clean, allow_nan=False)  # bundles store strict JSON: a pair with no leak must not be NaN


def test_centres_that_code_no_part_colour_give_no_leak_reading():
    ids = np.array([[s.id % 4, (s.id // 4) % 4, s.id % 3] for s in SPECIES])  # a species number, not colours
    centres = value_codes(ids, 2)
    assert colour_codes(centres, 3) == {}
    assert leaks_name_the_new_colour(*leak_inputs(part_code, 2)[:3], centres, 3) is None


def test_part_swap_compares_sub_codes_bit_by_bit_and_works_for_one_concept():
    original = np.array([[[1, -1]], [[1, 1]]])  # (N=2, M=1, bits=2)
    swapped = np.array([[[[1, -1]], [[1, -1]]]] * 4)  # every part: image 1 changes one bit
    swapped[3] = original  # the tail changes nothing
    np.testing.assert_array_equal(part_swap_flip_rates(original, swapped), [[0.5], [0.5], [0.5], [0.0]])
    result = part_swap_metrics(original, swapped)
    assert len(result["matched"]) == 1 and result["largest_off_diagonal"]["flip_rate"] == 0.5


# ---- localisation -----------------------------------------------------------------------------


def mask(*regions: tuple[slice | int, slice | int], size: int = 8) -> np.ndarray:
    """A size x size mask covering the given (rows, cols) regions (a single pixel: two ints)."""
    out = np.zeros((size, size), dtype=bool)
    for rows, cols in regions:
        out[rows, cols] = True
    return out


# 8 x 8 masks on a 2 x 2 grid of 4-pixel patches (0 = top left, 1 = top right, 2/3 = bottom);
# patch centres are the pixels (2, 2), (2, 6), (6, 2), (6, 6).
TOP_LEFT, TOP_RIGHT, BOTTOM = (
    (slice(0, 4), slice(0, 4)),
    (slice(0, 4), slice(4, 8)),
    (slice(4, 8), slice(None)),
)
HAND_MASKS = [  # image 0: a one-pixel head; image 1: a one-pixel wing and a one-pixel tail
    {"head": mask((0, 0)), "wing": mask(TOP_RIGHT), "body": mask(BOTTOM), "tail": mask()},
    {"head": mask(TOP_LEFT), "wing": mask((1, 6)), "body": mask(BOTTOM), "tail": mask((7, 7))},
]
# concept 0 looks at the top-left patch, concept 1 at the top right, concept 2 at the bottom left
HAND_ATTENTION = np.tile(np.eye(4)[None, :3], (2, 1, 1))


def test_centre_rule_with_a_tiny_part_that_covers_no_patch_centre():
    result = localisation_metrics(HAND_ATTENTION, HAND_MASKS, (2, 2), "centre")
    assert result["rule"] == "centre"
    assert [(c["concept"], c["part"]) for c in result["concepts"]] == [(0, "head"), (1, "wing"), (2, "body")]
    np.testing.assert_allclose(result["hit_rates"], [[0.5, 0, 0, 0], [0, 0.5, 0, 0], [0, 0, 1, 0]])
    np.testing.assert_allclose(result["random_rates"], [0.125, 0.125, 0.5, 0.0])
    np.testing.assert_allclose(result["oracle_rates"], [0.5, 0.5, 1.0, 0.0])  # a tiny head: no centre
    assert result["mean_hit_rate"] == pytest.approx(2 / 3)
    assert result["random_baseline"] == pytest.approx(0.25)
    assert result["oracle_ceiling"] == pytest.approx(2 / 3)
    assert [c["oracle"] for c in result["concepts"]] == [0.5, 0.5, 1.0]


def test_overlap_rule_counts_any_covered_pixel():
    result = localisation_metrics(HAND_ATTENTION, HAND_MASKS, (2, 2), "overlap")
    assert [(c["concept"], c["part"]) for c in result["concepts"]] == [(0, "head"), (1, "wing"), (2, "body")]
    np.testing.assert_allclose(result["hit_rates"], [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]])
    np.testing.assert_allclose(result["random_rates"], [0.25, 0.25, 0.5, 0.125])
    np.testing.assert_allclose(result["oracle_rates"], [1.0, 1.0, 1.0, 0.5])
    assert result["mean_hit_rate"] == result["oracle_ceiling"] == 1.0
    assert result["random_baseline"] == pytest.approx(1 / 3)


def test_localisation_matches_only_species_parts_and_handles_one_concept():
    # one concept always on the tail's patch: the tail wins the hit rates but is never matched
    masks = [{"head": mask((0, 0)), "wing": mask(), "body": mask(), "tail": mask((6, 6))}] * 3
    attention = np.tile(np.eye(4)[None, 3:], (3, 1, 1))  # (3, 1, 4): the bottom-right patch
    result = localisation_metrics(attention, masks, (2, 2), "centre")
    assert result["hit_rates"] == [[0.0, 0.0, 0.0, 1.0]]
    assert len(result["concepts"]) == 1 and result["concepts"][0]["part"] in SPECIES_PARTS
    assert result["mean_hit_rate"] == 0.0


def test_overlap_rule_on_a_grid_that_does_not_divide_the_mask():
    single = np.zeros((7, 7), dtype=bool)
    single[3, 3] = True  # pixel 3 spans [3, 4): it overlaps both patches of each axis (edge at 3.5)
    assert overlap_rule(single, (2, 2)).tolist() == [True] * 4
    assert centre_rule(single, (2, 2)).tolist() == [False] * 4  # centres are pixels 1 and 5
    rng = np.random.default_rng(0)
    for _ in range(20):  # the divisible case agrees with a brute-force count per patch
        random_mask = rng.random((8, 8)) < 0.05
        brute = [random_mask[y : y + 4, x : x + 4].any() for y in (0, 4) for x in (0, 4)]
        assert overlap_rule(random_mask, (2, 2)).tolist() == brute


# ---- sub-code / part NMI ----------------------------------------------------------------------


def hand_labels(per_species: int = 3) -> dict[str, list[str]]:
    """Every species ``per_species`` times: its part colours, and a random tail colour per image."""
    species = [s for s in SPECIES for _ in range(per_species)]
    labels = {part: [s.colours[part] for s in species] for part in SPECIES_PARTS}
    labels["tail"] = [str(c) for c in np.random.default_rng(0).choice(list(COLOURS), len(species))]
    return labels


def test_family_code_has_no_family_conditional_information_about_head_and_wing():
    labels = hand_labels()
    family = np.array([SPECIES_COLOURS.index(c) for c in labels["body"]])
    head = np.array([SPECIES_COLOURS.index(c) for c in labels["head"]])
    values = np.stack([family, head], axis=1)
    plain = dict(zip(PARTS, subcode_part_nmi(values, labels)[0], strict=True))
    conditional = family_conditional_nmi_matrix(values, labels)
    by_part = [dict(zip(PARTS, row, strict=True)) for row in conditional]
    assert plain["body"] == pytest.approx(1.0)
    assert by_part[0]["head"] == pytest.approx(0.0, abs=1e-9)
    assert by_part[0]["wing"] == pytest.approx(0.0, abs=1e-9)
    assert by_part[0]["body"] is None and by_part[1]["body"] is None  # a family is one body colour
    assert by_part[1]["head"] == pytest.approx(1.0)  # a head code keeps all its information
    # a family's six species use six of the 16 head/wing pairs, so within a family the head says
    # much about the wing: even a perfect per-part code is not diagonal here (plain NMI: 0.04)
    assert by_part[1]["wing"] == pytest.approx(0.65, abs=0.01)


# ---- capacity ceiling and centres -------------------------------------------------------------


def test_per_part_capacity_ceiling():
    codes = per_part_codes(6, 3)
    assert codes.shape == (24, 6) and len({row.tobytes() for row in codes}) == 24
    assert per_part_capacity_ceiling(6, 3) == 1.0
    assert per_part_capacity_ceiling(12, 3) == 1.0
    assert per_part_capacity_ceiling(3, 3) < 1.0  # one bit per part: species collide
    assert per_part_capacity_ceiling(6, 1) < 1.0  # one concept spells only the head
    low = per_part_codes(3, 3)  # keeps the low bit of each colour index
    expected = [
        [1 if SPECIES_COLOURS.index(s.colours[p]) & 1 else -1 for p in SPECIES_PARTS] for s in SPECIES
    ]
    np.testing.assert_array_equal(low, expected)
    assert (per_part_codes(8, 4)[:, 6:] == -1).all()  # a fourth concept is constant


def test_centre_sharing_groups_classes_with_one_sign_pattern():
    centres = np.array([[1.0, -2.0], [3.0, -0.5], [-1.0, 1.0], [0.0, 0.0], [2.0, 5.0]])
    assert centre_sharing(centres) == [[0, 1], [3, 4]]  # 0 counts as +1
    assert centre_sharing(np.eye(3) * 2 - 1) == []


# ---- the whole evaluation on a tiny random model ----------------------------------------------


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return load_backbone("toyclip-tiny:random")


TINY = DataSpec(image_size=32, train_per_class=1, test_per_class=1)


def tiny_model(backbone, classes, **overrides) -> ConceptHash:
    torch.manual_seed(1)
    return ConceptHash(
        backbone, classes, ConceptHashConfig(**({"bits": 6, "n_concepts": 3} | overrides))
    ).eval()


class SolidColours:
    """A non-ToyBirds split of single-colour images (left-right symmetric)."""

    name, split = "solid", "test"

    def __init__(self, n: int) -> None:
        self.classes = ["dark", "light"]
        self.labels = np.arange(n) % 2

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Image.Image:
        return Image.new("RGB", (32, 32), (40 * i % 256, 90, 200 * (i % 2)))

    def image_id(self, i: int) -> str:
        return f"solid/{i}"


def test_flip_invariance_is_one_for_symmetric_images(backbone):
    split = SolidColours(6)
    model = tiny_model(backbone, split.classes)
    codes, _ = encode_with_attention(model, backbone.preprocess_split(split))
    assert flip_invariance(model, backbone, split, codes) == 1.0
    assert flip_invariance(model, backbone, split, -codes) == 0.0


@pytest.mark.parametrize("mode", ["concepts", "cls"])
def test_evaluate_model_reports_every_key_on_toybirds(backbone, mode):
    train, test = open_split(TINY, "train"), open_split(TINY, "test")
    model = tiny_model(backbone, train.classes, mode=mode)
    metrics, _ = evaluate_model(model, backbone, train, test)
    m = 3 if mode == "concepts" else 1
    assert metrics["map_train_database"] == metrics["map"]
    assert 0.0 <= metrics["flip_invariance"] <= 1.0
    assert isinstance(metrics["distinct_centres"], bool)
    assert metrics["distinct_centres"] == (metrics["classes_sharing_a_centre"] == [])
    assert metrics["capacity_ceiling"] == (1.0 if mode == "concepts" else per_part_capacity_ceiling(6, 1))
    for key in ("localization", "localization_overlap"):
        loc = metrics[key]
        assert len(loc["hit_rates"]) == m and len(loc["concepts"]) == min(m, 3)
        assert loc["random_baseline"] <= loc["oracle_ceiling"] <= 1.0
    assert metrics["localization_overlap"]["oracle_ceiling"] >= metrics["localization"]["oracle_ceiling"]
    swap = metrics["part_swap"]
    assert np.shape(swap["matrix"]) == (len(PARTS), m)
    assert 0.0 <= swap["matched_flip_rate_min"] <= swap["matched_flip_rate_mean"] <= 1.0
    conditional = metrics["subcode_part_nmi_family_conditional"]["matrix"]
    assert np.shape(conditional) == (m, len(PARTS)) and all(row[2] is None for row in conditional)


def test_evaluate_model_on_other_data_and_against_the_own_train_database(backbone):
    split = SolidColours(12)
    model = tiny_model(backbone, split.classes)
    # the extra database is encoded separately; given the same images it must give the same mAP
    metrics, _ = evaluate_model(model, backbone, split, split, train_database=SolidColours(12))
    assert {"map", "map_train_database", "flip_invariance", "distinct_centres"} <= set(metrics)
    assert not {"localization", "part_swap", "capacity_ceiling", "subcode_part_nmi"} & set(metrics)
    assert metrics["map_train_database"] == pytest.approx(metrics["map"])


def test_centre_part_nmi_separates_factorised_centres_from_family_ones():
    """The per-part oracle's centres factorise (1 on the matching, ~0 elsewhere); centres that only encode
    the family (body colour) in every slice match one part and fail the rest."""
    from core.concepthash.evaluate import centre_part_nmi
    from core.data.toybirds import SPECIES, SPECIES_COLOURS

    oracle = centre_part_nmi(per_part_codes(6, 3).astype(float), 3)
    matrix = np.array(oracle["matrix"])
    np.testing.assert_allclose(np.diag(matrix), 1.0)
    # off the diagonal only what the 24 species share between parts (24 of 64 colour triples): ~0.04
    assert matrix[~np.eye(3, dtype=bool)].max() < 0.05
    assert oracle["matched_mean"] == pytest.approx(1.0) and oracle["largest_off_diagonal"] < 0.05
    body = np.array([SPECIES_COLOURS.index(s.colours["body"]) for s in SPECIES])
    bits = np.stack([body & 1, body >> 1], axis=1) * 2 - 1
    family_only = centre_part_nmi(np.tile(bits, 3).astype(float), 3)
    assert family_only["matched_mean"] < 0.5  # only the body row can be matched
    assert family_only["largest_off_diagonal"] == pytest.approx(1.0)  # the body, again, in another slice


def test_oracle_centres_are_the_fixed_per_part_codes_and_only_for_toybirds(backbone):
    """The --oracle-centres diagnostic: the model's centres are the per-part codes (centre_part_nmi 1.0), no
    gradient reaches them, and a model for other classes refuses the flag."""
    from core.concepthash.evaluate import centre_part_nmi

    names = [species.name for species in SPECIES]
    config = ConceptHashConfig(bits=6, n_concepts=3, oracle_centres=True)
    model = ConceptHash(backbone, names, config)
    centres = model.hash_centres()
    np.testing.assert_array_equal(centres.numpy(), per_part_codes(6, 3))
    assert not centres.requires_grad
    assert centre_part_nmi(centres.numpy(), 3)["matched_mean"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="only for the ToyBirds species"):
        ConceptHash(backbone, ["cat", "dog"], config)
    with pytest.raises(ValueError, match="mode 'concepts'"):
        ConceptHashConfig(bits=6, n_concepts=3, oracle_centres=True, mode="cls")
