"""ConceptHash: losses against hand-computed values, the model, training, evaluation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from core.backbones.clip import load_backbone
from core.concepthash import losses
from core.concepthash.attention import concept_heatmaps
from core.concepthash.codes import combination_index, combination_values, per_part_codes, value_codes
from core.concepthash.config import read_part_phrases
from core.concepthash.evaluate import interpretability_metrics, subcode_values
from core.concepthash.model import ConceptHash, ConceptHashConfig
from core.data import toybirds
from core.data.spec import DataSpec, ToyBirdsSplit
from core.data.toybirds import (
    COLOUR_PERMUTATIONS,
    PARTS,
    SPECIES,
    SPECIES_COLOURS,
    SPECIES_PARTS,
    species_with,
)

CLASSES = ["red finch", "blue finch", "green finch"]


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return load_backbone("toyclip-tiny:random")


def make_model(backbone, **overrides):
    torch.manual_seed(1)
    return ConceptHash(backbone, CLASSES, ConceptHashConfig(**({"bits": 6, "n_concepts": 3} | overrides)))


# ---- losses -----------------------------------------------------------------------------------


def test_margin_cosine_loss_hand_computed():
    cos = torch.tensor([[0.5, 0.1]])
    # logits = 8 * ([0.5, 0.1] - [0.2, 0]) = [2.4, 0.8]; CE = log(1 + e^(0.8 - 2.4))
    expected = math.log(1 + math.exp(-1.6))
    assert losses.margin_cosine_loss(cos, torch.tensor([0]), scale=8, margin=0.2).item() == pytest.approx(
        expected
    )


def test_clf_and_quan_losses_use_centres_and_signed_centres():
    u = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    centers = torch.tensor([[0.3, 0.4], [-2.0, 0.1]])
    labels = torch.tensor([0, 1])
    # cos(u, o): row0 = [0.6, -2/sqrt(4.01)], row1 = [0.8, 0.1/sqrt(4.01)]
    n = math.sqrt(4.01)
    cos = torch.tensor([[0.6, -2 / n], [0.8, 0.1 / n]])
    assert losses.clf_loss(u, centers, labels).item() == pytest.approx(
        losses.margin_cosine_loss(cos, labels).item()
    )
    # sign(o) = [[1, 1], [-1, 1]]: cos row0 = [1/sqrt2, -1/sqrt2], row1 = [1/sqrt2, 1/sqrt2]
    r = 1 / math.sqrt(2)
    signed = torch.tensor([[r, -r], [r, r]])
    assert losses.quan_loss(u, centers, labels).item() == pytest.approx(
        losses.margin_cosine_loss(signed, labels).item()
    )


def test_cd_loss_is_the_mean_of_per_concept_losses():
    torch.manual_seed(0)
    z, p, w = torch.randn(4, 3, 5), torch.randn(3, 5), torch.randn(2, 5)
    labels = torch.tensor([0, 1, 1, 0])
    per_concept = [losses.clf_loss(z[:, m] + p[m], w, labels) for m in range(3)]
    assert losses.cd_loss(z, p, w, labels).item() == pytest.approx(
        torch.stack(per_concept).mean().item(), rel=1e-6
    )


def test_csd_loss_hand_computed():
    same = torch.tensor([[[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]]])
    assert losses.csd_loss(same).item() == pytest.approx(1.0)
    disjoint = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]]])
    assert losses.csd_loss(disjoint).item() == pytest.approx(0.0)
    # three concepts: a=[1,0], b=[1,1]/sqrt2, c=[0,1] -> pairs ab=bc=1/sqrt2, ac=0 -> mean = sqrt2/3
    three = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]])
    assert losses.csd_loss(three).item() == pytest.approx(math.sqrt(2) / 3)


# ---- model ------------------------------------------------------------------------------------


def test_focus_loss_hand_computed():
    attention = torch.zeros(2, 2, 4)
    attention[:, 0, 1] = 0.5  # one patch (renormalised): entropy 0
    attention[:, 1] = 0.2  # all four alike: entropy log 4, normalised 1
    assert losses.focus_loss(attention).item() == pytest.approx(0.5)
    attention[0, 1] = torch.tensor([0.5, 0.5, 0.0, 0.0])  # two patches: log 2 / log 4
    assert losses.focus_loss(attention).item() == pytest.approx((0 + 1 + 0 + 1) / 4 - 0.25 / 2)


def test_mix_loss_hand_computed():
    """Two concepts of two bits: concept 0 looks into the pasted rectangle (target: the other image's slice),
    concept 1 at its own image; a concept split between both has no target."""
    u = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    own, other = torch.ones(1, 4), -torch.ones(1, 4)
    # concept 0: cos([1, 0], [-1, -1]) = -1/sqrt2; concept 1: cos([0, 1], [1, 1]) = 1/sqrt2
    both = losses.mix_loss(u, torch.tensor([[0.9, 0.1]]), own, other)
    assert both.item() == pytest.approx(((1 + 1 / math.sqrt(2)) + (1 - 1 / math.sqrt(2))) / 2)
    only_first = losses.mix_loss(u, torch.tensor([[0.9, 0.5]]), own, other)
    assert only_first.item() == pytest.approx(1 + 1 / math.sqrt(2))
    assert losses.mix_loss(u, torch.tensor([[0.5, 0.4]]), own, other).item() == 0.0  # nobody is sure


def test_bit_loss_hand_computed():
    centres = torch.tensor([[1.0, -1.0], [-1.0, -1.0]])
    u = torch.tensor([[2.0, 0.5], [0.0, -0.5]])
    # image 0 (class 0): bits 2*1 -> 0, 0.5*-1 -> 1.5; image 1 (class 1): 0 -> 1, -0.5*-1 -> 0.5
    assert losses.bit_loss(u, centres, torch.tensor([0, 1])).item() == pytest.approx((0 + 1.5 + 1 + 0.5) / 4)


def test_paste_rectangles_by_hand():
    from core.concepthash.model import paste_rectangles

    pixels = torch.stack([torch.zeros(1, 4, 4), torch.ones(1, 4, 4)])  # a 2 x 2 grid of 2-pixel patches
    starts = [torch.tensor([0, 1]), torch.tensor([1, 0])]
    sizes = [torch.tensor([1, 1]), torch.tensor([1, 2])]
    mixed, inside = paste_rectangles(pixels, torch.tensor([1, 0]), (2, 2), starts, sizes)
    assert inside.tolist() == [[[False, True], [False, False]], [[False, False], [True, True]]]
    expected = pixels.clone()
    expected[0, :, 0:2, 2:4] = 1.0  # image 0: patch (0, 1) from image 1
    expected[1, :, 2:4, :] = 0.0  # image 1: patches (1, 0) and (1, 1) from image 0
    assert torch.equal(mixed, expected)


def test_mix_weight_adds_its_term_and_training_lowers_it(backbone):
    pixels = torch.randn(8, 3, backbone.image_size, backbone.image_size)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    mixing, plain = make_model(backbone, mix_weight=2.0).train(), make_model(backbone).train()
    torch.manual_seed(3)
    t1 = mixing.loss(mixing(pixels), labels, pixels)
    t0 = plain.loss(plain(pixels), labels, pixels)
    assert "mix" not in t0 and 0 < t1["mix"].item() < 2
    assert t1["total"].item() - t0["total"].item() == pytest.approx(2.0 * t1["mix"].item(), rel=1e-4)
    with pytest.raises(ValueError, match="L_mix needs the batch's pixels"):
        mixing.loss(mixing(pixels), labels)

    optimizer = torch.optim.Adam(mixing.parameters(), lr=1e-2)
    before = []
    for step in range(12):
        torch.manual_seed(100 + step % 2)  # two fixed pastings, alternating
        terms = mixing.loss(mixing(pixels), labels, pixels)
        before.append(terms["mix"].item())
        optimizer.zero_grad()
        terms["total"].backward()
        optimizer.step()
    assert np.mean(before[-2:]) < np.mean(before[:2])


def test_mix_loss_needs_concepts():
    with pytest.raises(ValueError, match="L_mix follows each concept's attention"):
        ConceptHashConfig(bits=6, n_concepts=3, mode="cls", mix_weight=1.0)


def test_config_rejects_uneven_split():
    with pytest.raises(ValueError, match="cannot be split evenly"):
        ConceptHashConfig(bits=10, n_concepts=3)


@pytest.mark.parametrize(("concept_blocks", "concept_depth"), [(0, 0), (1, 0), (0, 1), (1, 2)])
def test_forward_shapes_and_codes(backbone, concept_blocks, concept_depth):
    model = make_model(backbone, concept_blocks=concept_blocks, concept_depth=concept_depth).eval()
    blocks = concept_depth or len(backbone.visual.transformer.resblocks)
    assert model.concept_entry_block == (blocks - 1 if concept_blocks else 0)
    pixels = torch.randn(5, 3, backbone.image_size, backbone.image_size)
    out = model(pixels)
    n_patches = backbone.grid_size[0] * backbone.grid_size[1]
    assert out.u.shape == (5, 6)
    assert out.concept_features.shape == (5, 3, backbone.width)
    assert out.concept_attention.shape == (5, 3, n_patches)
    assert set(out.codes.unique().tolist()) <= {-1.0, 1.0}
    assert model.hash_centres().shape == (3, 6)
    # attention to the patches is part of a softmax row, so it sums to at most 1
    assert float(out.concept_attention.detach().sum(-1).max()) <= 1.0 + 1e-5


def test_concept_depth_reads_the_concepts_after_that_block(backbone):
    """With ``concept_depth`` d, later blocks play no part: changing them changes no code."""
    model = make_model(backbone, concept_depth=1).eval()
    pixels = torch.randn(3, 3, backbone.image_size, backbone.image_size)
    before = model(pixels)
    assert len(before.attentions) == 1  # the attention of block 0, the last block run
    with torch.no_grad():
        for parameter in model.adapters[1:].parameters():
            parameter.add_(1.0)
    torch.testing.assert_close(model(pixels).u, before.u)
    with torch.no_grad():
        model.adapters[0].mlp.up.bias.add_(1.0)
    assert not torch.allclose(model(pixels).u, before.u)


def test_shared_hash_head_and_specificity(backbone):
    model = make_model(backbone, bits=12, n_concepts=4)
    assert model.hash_head.weight.shape == (3, backbone.width)  # ONE head: width -> K/M
    assert model.hash_head.bias is None
    assert model.specificity.shape == (4, backbone.width)


def test_gradient_reaches_only_the_trainable_parts(backbone):
    model = make_model(backbone).train()
    pixels = torch.randn(4, 3, backbone.image_size, backbone.image_size)
    labels = torch.tensor([0, 1, 2, 0])
    model.loss(model(pixels), labels)["total"].backward()
    assert all(p.grad is None and not p.requires_grad for p in backbone.model.parameters())
    assert not any(name.startswith("backbone") for name in model.state_dict())

    def silent():
        return {n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0}

    # zero-initialised up-projections: at the first step only `up` of each adapter gets gradient
    # (its input and its scale multiply a zero output)
    assert silent() == {
        n
        for n, _ in model.named_parameters()
        if n.startswith("adapters.") and (".norm." in n or ".down." in n or n.endswith(".scale"))
    }
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    model.zero_grad()
    model.loss(model(pixels), labels)["total"].backward()
    assert silent() == set()


def test_language_guidance_switch(backbone):
    guided = make_model(backbone)
    expected = torch.sign(backbone.text_features_before_projection([f"a photo of a {c}." for c in CLASSES]))
    torch.testing.assert_close(guided.text_features, expected)
    unguided = make_model(backbone, language_guidance=False)
    assert not torch.equal(unguided.text_features, guided.text_features)
    assert set(unguided.text_features.unique().tolist()) <= {-1.0, 1.0}


def test_linear_centres(backbone):
    model = make_model(backbone, center_hidden=0)
    (linear,) = model.center_mlp
    torch.testing.assert_close(model.hash_centres(), model.text_features @ linear.weight.t() + linear.bias)
    assert len(make_model(backbone).center_mlp) == 3  # the reference: Linear, ReLU, Linear
    with pytest.raises(ValueError, match="center_hidden"):
        ConceptHashConfig(center_hidden=-1)


def test_cls_baseline_hashes_the_cls_token(backbone):
    model = make_model(backbone, mode="cls").eval()
    out = model(torch.randn(2, 3, backbone.image_size, backbone.image_size))
    assert model.concept_tokens is None
    assert out.concept_features.shape == (2, 1, backbone.width)
    assert model.hash_head.weight.shape == (6, backbone.width)


def test_centres_from_local_lets_only_the_local_code_move_the_centres(backbone):
    pixels = torch.randn(4, 3, backbone.image_size, backbone.image_size)
    labels = torch.tensor([0, 1, 2, 0])
    model = make_model(backbone, locality_weight=1.0, centres_from_local=True).train()
    terms = model.loss(model(pixels), labels, pixels)

    def centre_gradient(term: str) -> float:
        model.zero_grad()
        terms[term].backward(retain_graph=True)
        return sum(float(p.grad.abs().sum()) for p in model.center_mlp.parameters() if p.grad is not None)

    assert centre_gradient("clf") == centre_gradient("quan") == 0.0
    assert centre_gradient("loc") > 0
    plain = make_model(backbone, locality_weight=1.0).train()
    plain.loss(plain(pixels), labels, pixels)["clf"].backward()
    assert sum(float(p.grad.abs().sum()) for p in plain.center_mlp.parameters()) > 0


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("focus", lambda model, out, labels: losses.focus_loss(out.concept_attention)),
        ("bit", lambda model, out, labels: losses.bit_loss(out.u, model.hash_centres(), labels)),
    ],
)
def test_an_extra_weight_adds_its_term(backbone, term, expected):
    """L_focus and L_bit (not in the paper): off by default; on, the term is its loss and adds weight x it."""
    pixels = torch.randn(4, 3, backbone.image_size, backbone.image_size)
    labels = torch.tensor([0, 1, 2, 0])
    weighted, plain = make_model(backbone, **{f"{term}_weight": 2.0}), make_model(backbone)
    t1, t0 = weighted.loss(weighted(pixels), labels), plain.loss(plain(pixels), labels)
    assert term not in t0
    assert t1[term].item() == pytest.approx(expected(weighted, weighted(pixels), labels).item())
    assert t1["total"].item() - t0["total"].item() == pytest.approx(2.0 * t1[term].item(), rel=1e-4)


def test_csd_weight_changes_the_total(backbone):
    pixels = torch.randn(4, 3, backbone.image_size, backbone.image_size)
    labels = torch.tensor([0, 1, 2, 0])
    with_csd, without = make_model(backbone, csd_weight=1.0), make_model(backbone, csd_weight=0.0)
    t1, t0 = with_csd.loss(with_csd(pixels), labels), without.loss(without(pixels), labels)
    assert t1["total"].item() - t0["total"].item() == pytest.approx(t1["csd"].item(), rel=1e-4)


def test_local_codes_read_only_each_concepts_own_patches(backbone):
    """L_loc's code: sub-code m comes from the patches concept m attends to most, and from nothing else."""
    model = make_model(backbone, locality_patches=2).train()
    n_patches = backbone.grid_size[0] * backbone.grid_size[1]
    pixels = torch.randn(4, 3, backbone.image_size, backbone.image_size)
    attention = torch.zeros(4, 3, n_patches)
    attention[:, 0, [0, 1]] = 1.0  # concept 0 looks at patches 0 and 1, concept 1 at 2 and 3, ...
    attention[:, 1, [2, 3]] = 1.0
    attention[:, 2, [4, 5]] = 1.0
    base = model.local_codes(pixels, attention)
    assert base.shape == (4, 6)
    # batch statistics of a fixed batch: repaint patch 2 (concept 1's) in every image, so only
    # sub-code 1 (bits 2, 3) can move; patches nobody keeps move nothing
    size = backbone.image_size // backbone.grid_size[1]
    repainted = pixels.clone()
    repainted[:, :, :size, 2 * size : 3 * size] = 5.0
    moved = model.local_codes(repainted, attention)
    assert not torch.allclose(moved[:, 2:4], base[:, 2:4])
    torch.testing.assert_close(moved[:, [0, 1, 4, 5]], base[:, [0, 1, 4, 5]])
    ignored = pixels.clone()
    ignored[:, :, -size:, -size:] = 5.0  # the last patch of the grid
    torch.testing.assert_close(model.local_codes(ignored, attention), base)


def test_locality_weight_adds_the_local_code_loss(backbone):
    pixels = torch.randn(4, 3, backbone.image_size, backbone.image_size)
    labels = torch.tensor([0, 1, 2, 0])
    with_loc, without = make_model(backbone, locality_weight=0.5), make_model(backbone)
    t1, t0 = with_loc.loss(with_loc(pixels), labels, pixels), without.loss(without(pixels), labels)
    assert "loc" not in t0
    out = with_loc(pixels)
    local = with_loc.local_codes(pixels, out.concept_attention)
    centres = with_loc.hash_centres()
    expected = losses.clf_loss(local, centres, labels) + losses.quan_loss(local, centres, labels)
    assert t1["loc"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert t1["total"].item() - t0["total"].item() == pytest.approx(0.5 * t1["loc"].item(), rel=1e-4)
    with pytest.raises(ValueError, match="pixels"):
        with_loc.loss(with_loc(pixels), labels)


def test_heatmaps(backbone):
    model = make_model(backbone)
    pixels = torch.randn(2, 3, backbone.image_size, backbone.image_size)
    last, rollout = (
        concept_heatmaps(model, pixels, "last"),
        concept_heatmaps(model, pixels, "rollout", size=40),
    )
    assert last.shape == (2, 3, backbone.image_size, backbone.image_size)
    assert rollout.shape == (2, 3, 40, 40)
    assert last.min() >= 0 and last.max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="'last' or 'rollout'"):
        concept_heatmaps(model, pixels, "gradcam")


# ---- evaluation -------------------------------------------------------------------------------


def test_subcode_values_read_bits_little_endian():
    codes = np.array([[1, -1, -1, 1], [1, 1, -1, -1]])
    np.testing.assert_array_equal(subcode_values(codes, 2), [[1, 2], [3, 0]])


def test_value_codes_spell_sub_code_values_and_refuse_what_the_bits_cannot_hold():
    values = np.array([[0, 3, 1], [2, 2, 0]])
    codes = value_codes(values, 2)
    np.testing.assert_array_equal(codes, [[-1, -1, 1, 1, 1, -1], [-1, 1, -1, 1, -1, -1]])
    np.testing.assert_array_equal(subcode_values(codes, 3), values)
    with pytest.raises(ValueError, match=r"in \[0, 4\)"):
        value_codes(np.array([[4]]), 2)


class PhraseBackbone:
    """Text embeddings chosen by hand: each text is a fixed unit vector (cosines known in advance)."""

    def __init__(self, vectors: dict[str, list[float]]) -> None:
        self.vectors = vectors

    def encode_texts(self, texts):
        return torch.tensor([self.vectors[t] for t in texts])


def test_part_phrase_centres_hold_the_closest_phrase_of_each_group():
    config = ConceptHashConfig(
        bits=4, n_concepts=2, part_phrases={"head": ["h0", "h1", "h2"], "wing": ["w0", "w1"]}
    )
    backbone = PhraseBackbone(
        {
            "a photo of a red finch.": [1.0, 0.0, 0.2],
            "a photo of a blue finch.": [0.0, 1.0, -0.2],
            "h0": [0.0, 1.0, 0.0],  # blue
            "h1": [0.1, 0.0, 1.0],
            "h2": [1.0, 0.1, 0.0],  # red
            "w0": [0.0, 0.0, 1.0],  # the red finch leans this way (+0.2)
            "w1": [0.0, 0.0, -1.0],  # the blue finch (-0.2)
        }
    )
    values = ConceptHash.phrase_values(backbone, ["red finch", "blue finch"], config)
    # red finch: head h2 (value 2), wing w0 (0); blue finch: head h0 (0), wing w1 (1)
    torch.testing.assert_close(values, torch.tensor([[2, 0], [0, 1]]))


def test_part_phrases_on_the_shipped_toy_clip_give_the_per_part_codes():
    """Language alone (species names against part phrases) recovers every species' three colours."""
    toy_clip = load_backbone("pretrained/toybirds-clip")
    config = ConceptHashConfig(bits=6, n_concepts=3, part_phrases=read_part_phrases("toybirds"))
    model = ConceptHash(toy_clip, [s.name for s in SPECIES], config)
    np.testing.assert_array_equal(model.hash_centres().numpy(), per_part_codes(6, 3))
    assert list(config.part_phrases) == list(SPECIES_PARTS)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"part_phrases": {"head": ["a", "b"]}}, "1 group\\(s\\) for 3 concepts"),
        ({"part_phrases": {"h": ["a"], "w": ["a", "b"], "b": ["a", "b"]}}, "'h' has 1 phrase"),
        ({"part_phrases": {"h": list("abcde"), "w": ["a", "b"], "b": ["a", "b"]}}, "holds 2 to 4 values"),
        ({"part_phrases": {"h": ["a", ""], "w": ["a", "b"], "b": ["a", "b"]}}, "non-empty texts"),
        ({"part_phrases": {"h": ["a", "b"]}, "n_concepts": 1, "bits": 2, "mode": "cls"}, "mode 'concepts'"),
    ],
)
def test_part_phrases_are_checked(overrides, message):
    with pytest.raises(ValueError, match=message):
        ConceptHashConfig(**({"bits": 6, "n_concepts": 3} | overrides))


def test_part_phrases_are_read_from_json_or_named_and_bad_files_get_one_sentence(tmp_path):
    assert read_part_phrases("toybirds")["wing"][2] == "a photo of a bird with a blue wing."
    good = tmp_path / "parts.json"
    good.write_text('{"crown": ["red crown", "blue crown"], "belly": ["white belly", "grey belly"]}')
    assert read_part_phrases(str(good)) == {
        "crown": ["red crown", "blue crown"],
        "belly": ["white belly", "grey belly"],
    }
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "list.json").write_text('["red crown"]')
    for name, message in [
        ("bad.json", "is not JSON"),
        ("list.json", "must hold an object"),
        ("missing.json", "Cannot read the part phrases file"),
    ]:
        with pytest.raises(ValueError, match=message):
            read_part_phrases(str(tmp_path / name))


def test_combination_index_inverts_combination_values():
    every = combination_values(4, 3)
    assert every.shape == (64, 3) and len({tuple(row) for row in every}) == 64
    np.testing.assert_array_equal(combination_index(every, 4), np.arange(64))
    torch.testing.assert_close(
        combination_index(torch.tensor([[1, 2, 3]]), 4), torch.tensor([1 + 2 * 4 + 3 * 16])
    )


def test_recolouring_needs_part_phrases_in_species_colour_order_and_a_share():
    toybirds_phrases = read_part_phrases("toybirds")
    assert (
        ConceptHashConfig(bits=6, n_concepts=3, part_phrases=toybirds_phrases, recolour=0.5).recolour == 0.5
    )
    reordered = {part: phrases[::-1] for part, phrases in toybirds_phrases.items()}
    for overrides in ({}, {"part_phrases": reordered}):
        with pytest.raises(ValueError, match="name red, yellow, blue, green in that order"):
            ConceptHashConfig(**({"bits": 6, "n_concepts": 3, "recolour": 0.5} | overrides))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        ConceptHashConfig(bits=6, n_concepts=3, part_phrases=toybirds_phrases, recolour=1.5)


def test_recoloured_targets_follow_the_colour_swap_part_by_part():
    toy_clip = load_backbone("pretrained/toybirds-clip")
    config = ConceptHashConfig(bits=6, n_concepts=3, part_phrases=read_part_phrases("toybirds"), recolour=1.0)
    model = ConceptHash(toy_clip, [s.name for s in SPECIES], config)
    labels = torch.arange(len(SPECIES))
    identity = torch.zeros_like(labels)
    centres, combos, species = model.recoloured_targets(labels, identity)
    torch.testing.assert_close(centres[combos], model.hash_centres())  # left as it was: its class centre
    torch.testing.assert_close(species, labels)
    order = COLOUR_PERMUTATIONS.index((2, 3, 0, 1))  # red <-> blue, yellow <-> green
    centres, combos, species = model.recoloured_targets(labels, torch.full_like(labels, order))
    values = subcode_values(centres[combos].numpy().astype(np.int8), 3)
    for s, row in zip(SPECIES, values, strict=True):
        swapped = [SPECIES_COLOURS[(2, 3, 0, 1)[SPECIES_COLOURS.index(s.colours[p])]] for p in SPECIES_PARTS]
        assert [SPECIES_COLOURS[v] for v in row] == swapped
    expected = [
        species_with(dict(zip(SPECIES_PARTS, (SPECIES_COLOURS[v] for v in row), strict=True)))
        for row in values
    ]
    assert species.tolist() == [-1 if e is None else SPECIES.index(e) for e in expected]
    assert (species == -1).any() and (species >= 0).any()


def test_recoloured_loss_aims_at_the_swapped_combinations_and_training_lowers_it(backbone):
    classes = [s.name for s in SPECIES]
    config = ConceptHashConfig(bits=6, n_concepts=3, part_phrases=read_part_phrases("toybirds"), recolour=1.0)
    torch.manual_seed(1)
    model = ConceptHash(backbone, classes, config).train()
    pixels = torch.randn(8, 3, backbone.image_size, backbone.image_size)
    labels = torch.tensor([0, 3, 5, 7, 9, 11, 13, 17])
    orders = torch.tensor([0, 5, 9, 0, 17, 23, 2, 0])
    output = model(pixels)
    terms = model.loss(output, labels, pixels, orders)
    centres, combos, species = model.recoloured_targets(labels, orders)
    assert terms["clf"].item() == pytest.approx(losses.clf_loss(output.u, centres, combos).item(), rel=1e-5)
    keep = species >= 0
    expected_cd = losses.cd_loss(
        output.concept_features[keep], model.concept_positions, model.class_prototypes, species[keep]
    )
    assert terms["cd"].item() == pytest.approx(expected_cd.item(), rel=1e-5)

    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for _ in range(12):
        terms = model.loss(model(pixels), labels, pixels, orders)
        history.append(terms["clf"].item())
        optimizer.zero_grad()
        terms["total"].backward()
        optimizer.step()
    assert np.mean(history[-2:]) < np.mean(history[:2])


def test_recoloured_training_images_and_the_run_that_records_the_share(tmp_path):
    from core.concepthash.bundle import load_concepthash
    from core.concepthash.train import TrainConfig, TrainingImages, train_concepthash
    from core.data.spec import open_split

    data = DataSpec(image_size=32, train_per_class=2, test_per_class=1)
    split = open_split(data, "train")
    as_array = lambda image: np.asarray(image)  # noqa: E731
    items = [
        TrainingImages(data, split, 1, True, as_array, recolour=0.5, seed=4)[i] for i in range(len(split))
    ]
    plain = TrainingImages(data, split, 1, True, as_array)
    orders = [order for _, _, order in items]
    assert 0 < sum(o > 0 for o in orders) < len(orders)  # some recoloured, some not
    for i, (image, label, order) in enumerate(items):
        assert label == plain[i][1]
        expected = toybirds.recolour(Image.fromarray(plain[i][0]), COLOUR_PERMUTATIONS[order])
        np.testing.assert_array_equal(image, np.asarray(expected) if order else plain[i][0])

    config = ConceptHashConfig(bits=6, n_concepts=3, part_phrases=read_part_phrases("toybirds"), recolour=0.5)
    out = train_concepthash(
        "toyclip-tiny:random",
        data,
        config,
        TrainConfig(epochs=1, batch_size=16, device="cpu"),
        tmp_path / "hash",
        log=lambda *_: None,
    )
    assert load_concepthash(out, device="cpu").config["model"]["recolour"] == 0.5
    with pytest.raises(ValueError, match="needs ToyBirds data"):
        train_concepthash(
            "toyclip-tiny:random",
            DataSpec(kind="folder", root=str(tmp_path)),
            config,
            TrainConfig(epochs=1, device="cpu"),
            tmp_path / "other",
            log=lambda *_: None,
        )
    assert not (tmp_path / "other").exists()


def test_localisation_finds_a_concept_that_points_at_the_head():
    split = ToyBirdsSplit("test", per_class=1, seed=3, image_size=64)
    grid = (8, 8)
    n = 24
    attention = np.full((n, 2, 64), 1 / 64)
    rng = np.random.default_rng(0)
    for i in range(n):
        mask = split.sample(i).masks["head"]
        centres = mask[4::8, 4::8].reshape(-1)
        if centres.any():
            attention[i, 0, np.flatnonzero(centres)[0]] = 1.0  # concept 0 points at a head patch
        attention[i, 1, rng.integers(64)] = 1.0  # concept 1 points anywhere
    codes = np.ones((n, 4), dtype=np.int8)
    result = interpretability_metrics(attention, codes, split, grid, n_concepts=2)
    head = next(c for c in result["localization"]["concepts"] if c["concept"] == 0)
    assert head["part"] == "head"
    heads_visible = np.mean([split.sample(i).masks["head"][4::8, 4::8].any() for i in range(n)])
    assert head["hit_rate"] == pytest.approx(heads_visible)
    assert head["random"] < 0.2 < head["hit_rate"]
    assert len(result["subcode_part_nmi"]["matrix"]) == 2
    assert len(result["subcode_part_nmi"]["matrix"][0]) == len(PARTS)


def test_subcode_part_nmi_is_one_for_a_code_that_spells_the_part():
    split = ToyBirdsSplit("test", per_class=2, seed=0, image_size=32)
    labels = split.part_labels("wing")
    values = {v: k for k, v in enumerate(sorted(set(labels)))}
    assert len(values) == 4  # a species part takes four colours: two bits spell it
    bits = np.array([[(values[label] >> b) & 1 for b in range(2)] for label in labels]) * 2 - 1
    attention = np.full((len(split), 1, 16), 1 / 16)
    result = interpretability_metrics(attention, bits, split, (4, 4), n_concepts=1)
    assert result["subcode_part_nmi"]["parts"] == list(PARTS)
    row = dict(zip(result["subcode_part_nmi"]["parts"], result["subcode_part_nmi"]["matrix"][0], strict=True))
    assert row["wing"] == pytest.approx(1.0)
    assert max(row["head"], row["body"]) < 0.1  # species parts share little information
    assert row["tail"] < 0.2  # the tail colour is per-image nuisance


def test_part_labels_are_species_colours_and_the_per_image_tail():
    split = ToyBirdsSplit("test", per_class=2, seed=1, image_size=32)
    for part in SPECIES_PARTS:
        labels = split.part_labels(part)
        assert labels == [SPECIES[label].colours[part] for label in split.labels]
        assert labels == [split.sample(i).part_values[part] for i in range(len(split))]
    tails = split.part_labels("tail")
    assert tails == [split.sample(i).traits["tail"]["colour"] for i in range(len(split))]
    # the tail is not a species trait: one species shows several tail colours
    by_species = {}
    for label, tail in zip(split.labels, tails, strict=True):
        by_species.setdefault(int(label), set()).add(tail)
    assert len(set(tails)) >= 5 and sum(len(t) > 1 for t in by_species.values()) >= 12
    with pytest.raises(ValueError, match="beak"):
        split.part_labels("beak")


# ---- training ---------------------------------------------------------------------------------

TINY_DATA = DataSpec(image_size=32, train_per_class=2, test_per_class=1)


def test_training_lowers_the_loss_and_writes_a_loadable_bundle(tmp_path):
    from core.concepthash.bundle import load_concepthash
    from core.concepthash.evaluate import evaluate_bundle
    from core.concepthash.train import TrainConfig, train_concepthash

    out = train_concepthash(
        "toyclip-tiny:random",
        TINY_DATA,
        ConceptHashConfig(bits=6, n_concepts=3),
        TrainConfig(epochs=6, batch_size=16, lr=3e-3, device="cpu"),
        tmp_path / "hash",
        log=lambda *_: None,
    )
    loaded = load_concepthash(out, device="cpu")
    history = loaded.config["train"]["history"]
    assert history[-1]["total"] < history[0]["total"]
    assert loaded.arrays["db_codes"].shape == (len(SPECIES) * 2, 6)
    assert set(np.unique(loaded.arrays["db_codes"])) <= {-1, 1}
    metrics = loaded.metrics
    assert 0.0 <= metrics["map"] <= 1.0
    assert set(metrics["precision_at"]) == {"1", "5", "10"}
    assert len(metrics["localization"]["concepts"]) == 3
    # the reloaded model reproduces the stored database codes exactly
    from core.concepthash.evaluate import sign_codes
    from core.data.spec import open_split

    pixels = loaded.backbone.preprocess_split(open_split(loaded.data, "train"))
    np.testing.assert_array_equal(sign_codes(loaded.model.encode(pixels)), loaded.arrays["db_codes"])
    again = evaluate_bundle(str(out), device="cpu")
    assert again["map"] == pytest.approx(metrics["map"])
    assert again["map_train_database"] == again["map"]  # no seed: the database is the bundle's own
    fresh = evaluate_bundle(str(out), seed=7, device="cpu")
    assert fresh["data"]["seed"] == 7
    assert 0.0 <= fresh["map_train_database"] <= 1.0
    assert {"part_swap", "localization_overlap", "capacity_ceiling", "flip_invariance"} <= set(fresh)


def test_interrupted_training_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    from core.concepthash import train as train_module

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(train_module, "save_bundle", crash)
    config = train_module.TrainConfig(epochs=2, batch_size=16, device="cpu")
    with pytest.raises(RuntimeError):
        train_module.train_concepthash(
            "toyclip-tiny:random",
            TINY_DATA,
            ConceptHashConfig(bits=6),
            config,
            tmp_path / "hash",
            log=lambda *_: None,
        )
    assert (tmp_path / "hash.ckpt").is_file() and not (tmp_path / "hash").exists()
    with pytest.raises(ValueError, match="pass --resume"):
        train_module.train_concepthash(
            "toyclip-tiny:random",
            TINY_DATA,
            ConceptHashConfig(bits=6),
            config,
            tmp_path / "hash",
            log=lambda *_: None,
        )
    monkeypatch.undo()
    with pytest.raises(ValueError, match="different settings"):
        train_module.train_concepthash(
            "toyclip-tiny:random",
            TINY_DATA,
            ConceptHashConfig(bits=6, csd_weight=0.3),
            config,
            tmp_path / "hash",
            resume=True,
            log=lambda *_: None,
        )
    messages = []
    out = train_module.train_concepthash(
        "toyclip-tiny:random",
        TINY_DATA,
        ConceptHashConfig(bits=6),
        config,
        tmp_path / "hash",
        resume=True,
        log=messages.append,
    )
    assert any("Resuming" in m and "epoch 2" in m for m in messages)
    assert not any(m.startswith("epoch ") for m in messages)  # nothing left to train
    assert out.is_dir() and not (tmp_path / "hash.ckpt").exists()


def test_training_images_stream_fresh_birds_each_epoch_and_fixed_data_repeats():
    import torch

    from core.concepthash.train import TrainingImages
    from core.data.spec import DataSpec, open_split

    data = DataSpec(image_size=32, train_per_class=1)
    split = open_split(data, "train")
    as_tensor = lambda image: torch.from_numpy(np.asarray(image, dtype=np.float32))  # noqa: E731
    first, second = (TrainingImages(data, split, epoch, True, as_tensor) for epoch in (0, 1))
    assert len(first) == len(second) == len(split)
    assert torch.equal(first[3][0], as_tensor(split.image(3)))  # epoch 0 is the train split itself
    assert not torch.equal(first[3][0], second[3][0]) and first[3][1] == second[3][1] == 3
    fixed = TrainingImages(data, split, 1, False, as_tensor)
    assert torch.equal(fixed[3][0], first[3][0]) and fixed[3][1] == 3
