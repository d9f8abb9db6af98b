"""Attention rollout when the concept tokens join the tower late (``--concept-blocks``) or are read early
(``--concept-depth``): the rule against a hand-computed case and a brute force, and the two pages that offer
rollout with the shipped parts bundle (which joins its concept tokens before its last block)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.backbones.clip import load_backbone
from core.backbones.vit import attention_rollout
from core.concepthash.attention import concept_attention_maps
from core.concepthash.model import ConceptHash, ConceptHashConfig

ROOT = Path(__file__).resolve().parents[1]
PARTS_BUNDLE = "toybirds-concepthash-parts"  # concept_blocks 1, concept_depth 2: concepts join block 1 of 2


def test_rollout_with_a_token_that_joins_at_the_second_layer_by_hand():
    # layer 1 sees [CLS, patch]; head-averaged attention a1, two heads that average to it
    a1 = torch.tensor([[0.5, 0.5], [0.25, 0.75]])
    # layer 2 sees [CLS, patch, concept]
    a2 = torch.tensor([[0.2, 0.4, 0.4], [0.0, 1.0, 0.0], [0.5, 0.3, 0.2]])
    spread = 0.1 * torch.tensor([[1.0, -1.0], [1.0, -1.0]])
    heads1 = torch.stack([a1 + spread, a1 - spread])
    got = attention_rollout([heads1[None], a2[None, None]])[0]
    # 0.5 I + 0.5 a1 = [[.75, .25], [.125, .875]] (rows already sum to 1); the concept starts as itself,
    # R1 = [[.75, .25, 0], [.125, .875, 0], [0, 0, 1]];
    # 0.5 I + 0.5 a2 = [[.6, .2, .2], [0, 1, 0], [.25, .15, .6]]
    expected = torch.tensor(
        [
            [0.6 * 0.75 + 0.2 * 0.125, 0.6 * 0.25 + 0.2 * 0.875, 0.2],  # [.475, .325, .2]
            [0.125, 0.875, 0.0],
            [0.25 * 0.75 + 0.15 * 0.125, 0.25 * 0.25 + 0.15 * 0.875, 0.6],  # [.20625, .19375, .6]
        ]
    )
    torch.testing.assert_close(got, expected)


def test_rollout_refuses_layers_that_lose_tokens():
    with pytest.raises(ValueError, match="covers 2 tokens after one that covered 3"):
        attention_rollout([torch.full((1, 1, 3, 3), 1 / 3), torch.full((1, 1, 2, 2), 0.5)])


def brute_force_rollout(attentions: list[torch.Tensor], residual: float = 0.5) -> np.ndarray:
    """Rollout as if every token had been in every layer: a layer that ran before some tokens joined gets
    identity rows and columns for them (they attend only to themselves and nobody attends to them), then the
    plain product over the layers, one image and one matrix entry at a time."""
    full = attentions[-1].shape[-1]
    result = None
    for probs in attentions:
        a = probs.double().mean(dim=1).numpy()  # (B, T, T)
        batch, tokens = a.shape[:2]
        padded = np.zeros((batch, full, full))
        for b in range(batch):
            for i in range(full):
                for j in range(full):
                    if i < tokens and j < tokens:
                        padded[b, i, j] = residual * (i == j) + (1 - residual) * a[b, i, j]
                    else:
                        padded[b, i, j] = float(i == j)
                padded[b, i] /= padded[b, i].sum()
        result = padded if result is None else np.einsum("bij,bjk->bik", padded, result)
    return result


@pytest.fixture(scope="module")
def backbone():
    torch.manual_seed(0)
    return load_backbone("toyclip-tiny:random")  # 2 blocks, a 4 x 4 patch grid


@pytest.mark.parametrize(
    ("concept_blocks", "concept_depth", "entry"),
    [(1, 0, 1), (0, 1, 0), (1, 2, 1), (0, 0, 0)],
)
def test_rollout_heatmaps_of_late_or_early_concepts_match_brute_force(
    backbone, concept_blocks, concept_depth, entry
):
    torch.manual_seed(1)
    config = ConceptHashConfig(
        bits=6, n_concepts=3, concept_blocks=concept_blocks, concept_depth=concept_depth
    )
    model = ConceptHash(backbone, ["a", "b", "c"], config).eval()
    assert model.concept_entry_block == entry
    pixels = torch.randn(2, 3, backbone.image_size, backbone.image_size)
    maps = concept_attention_maps(model, pixels, "rollout")  # (B, M, gh, gw)
    with torch.no_grad():
        attentions = model(pixels, attention_layers="all").attentions
    assert len(attentions) == (concept_depth or 2)
    n_patches = 16
    expected = brute_force_rollout(attentions)[:, n_patches + 1 :, 1 : n_patches + 1]
    assert maps.shape == (2, 3, 4, 4)
    np.testing.assert_allclose(maps.reshape(2, 3, -1).numpy(), expected, rtol=1e-4, atol=1e-6)
    if entry == 1:
        # the concept rows of the last layer's residual-mixed attention, times the patch rollout of layer 1:
        # what a concept gathered from the patches is all through them (it started as itself)
        a1 = 0.5 * torch.eye(17) + 0.5 * attentions[0].mean(dim=1)
        a2 = 0.5 * torch.eye(20) + 0.5 * attentions[1].mean(dim=1)
        a1, a2 = a1 / a1.sum(-1, keepdim=True), a2 / a2.sum(-1, keepdim=True)
        by_hand = a2[:, n_patches + 1 :, : n_patches + 1] @ a1[:, :, 1:]
        torch.testing.assert_close(maps.reshape(2, 3, -1), by_hand, rtol=1e-4, atol=1e-6)


# ---- the pages, with the shipped bundles ------------------------------------------------------------


@pytest.fixture
def shipped(monkeypatch):
    """``open(page, bundle)``: Home.py with the shipped bundles, ``bundle`` picked in the sidebar."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CONCEPTLENS_BUNDLES", str(ROOT / "pretrained"))

    def open_page(page: str, bundle: str | None = None):
        app = AppTest.from_file(str(ROOT / "dashboard" / "Home.py"), default_timeout=240)
        app.run()
        if bundle is not None:
            app.sidebar.selectbox(key="bundle_concepthash").set_value(str(ROOT / "pretrained" / bundle)).run()
            assert app.sidebar.selectbox(key="bundle_concepthash").value.endswith(bundle)
        app.switch_page(f"views/{page}.py")
        app.run()
        return app

    return open_page


def test_concept_attention_rollout_with_the_parts_bundle(shipped):
    app = shipped("concept_attention", PARTS_BUNDLE)
    assert not app.exception, [e.value for e in app.exception]
    app.radio(key="attn_method").set_value("Rollout").run()
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error, [e.value for e in app.error]
    overlays = [c for e in app.get("image") for c in e.captions if c.startswith("concept ")]
    assert len(overlays) == 3, overlays


def test_retrieval_rollout_with_the_parts_bundle_as_model_b(shipped):
    app = shipped("retrieval")
    assert not app.exception, [e.value for e in app.exception]
    app.selectbox(key="ret_model_b").set_value(str(ROOT / "pretrained" / PARTS_BUNDLE)).run()
    assert app.selectbox(key="ret_model_b").value.endswith(PARTS_BUNDLE)
    app.radio(key="ret_method").set_value("rollout").run()
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error, [e.value for e in app.error]
    heatmaps = [
        e for c in app.columns for e in c.image if e.captions and e.captions[0].startswith("concept 0")
    ]
    assert [len(h.captions) for h in heatmaps] == [3, 3]
