"""Backbone loading and the token-extended ViT forward."""

from __future__ import annotations

import pytest
import torch

from core.backbones.clip import BackboneError, list_toy_configs, load_backbone, parse_backbone_spec
from core.backbones.vit import attention_rollout, vit_forward
from core.bundle import save_bundle
from core.concepthash.model import BlockAdapters

SPECS = [f"{name}:random" for name in list_toy_configs()] + ["ViT-B-32-quickgelu:random"]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return load_backbone("toyclip-tiny:random")


@pytest.mark.parametrize("spec", SPECS)
def test_zero_extra_tokens_match_open_clip_encode_image(spec):
    torch.manual_seed(0)
    backbone = load_backbone(spec)
    pixels = torch.randn(2, 3, backbone.image_size, backbone.image_size)
    expected = backbone.model.encode_image(pixels)
    out = vit_forward(backbone.visual, pixels, attention_layers="all", return_hidden_states=True)
    torch.testing.assert_close(out.pooled, expected, rtol=1e-4, atol=1e-5)
    layers = len(backbone.visual.transformer.resblocks)
    assert len(out.attentions) == len(out.hidden_states) == layers
    tokens = 1 + backbone.grid_size[0] * backbone.grid_size[1]
    assert out.attentions[0].shape[-2:] == (tokens, tokens)
    torch.testing.assert_close(out.attentions[-1].sum(-1), torch.ones_like(out.attentions[-1].sum(-1)))


def test_extra_tokens_are_appended_and_attended(tiny):
    pixels = torch.randn(3, 3, tiny.image_size, tiny.image_size)
    extra = torch.randn(4, tiny.width)
    plain = vit_forward(tiny.visual, pixels)
    out = vit_forward(tiny.visual, pixels, extra_tokens=extra, attention_layers="last")
    n_patches = tiny.grid_size[0] * tiny.grid_size[1]
    assert out.extra.shape == (3, 4, tiny.width)
    assert out.tokens.shape == (3, 1 + n_patches + 4, tiny.width)
    assert out.attentions[0].shape[-1] == 1 + n_patches + 4
    # full attention: CLS sees the extra tokens, so its output moves
    assert not torch.allclose(out.pooled, plain.pooled)


def test_extra_tokens_can_join_at_a_later_block(tiny):
    """``extra_from_block=k``: blocks before k run as without the tokens; from block k on they take part."""
    pixels = torch.randn(2, 3, tiny.image_size, tiny.image_size)
    extra = torch.randn(3, tiny.width)
    blocks = len(tiny.visual.transformer.resblocks)
    plain = vit_forward(tiny.visual, pixels, return_hidden_states=True)
    late = vit_forward(
        tiny.visual, pixels, extra_tokens=extra, extra_from_block=blocks - 1, return_hidden_states=True
    )
    for before in range(blocks - 1):
        torch.testing.assert_close(late.hidden_states[before], plain.hidden_states[before])
    assert late.hidden_states[-1].shape[1] == plain.hidden_states[-1].shape[1] + 3
    assert not torch.allclose(late.pooled, plain.pooled)  # in the last block CLS attends to them
    with pytest.raises(ValueError, match="extra_from_block"):
        vit_forward(tiny.visual, pixels, extra_tokens=extra, extra_from_block=blocks)


def test_depth_runs_only_the_first_blocks(tiny):
    pixels = torch.randn(2, 3, tiny.image_size, tiny.image_size)
    extra = torch.randn(3, tiny.width)
    full = vit_forward(tiny.visual, pixels, extra_tokens=extra, return_hidden_states=True)
    blocks = len(tiny.visual.transformer.resblocks)
    for depth in range(1, blocks + 1):
        out = vit_forward(tiny.visual, pixels, extra_tokens=extra, depth=depth, attention_layers="all")
        torch.testing.assert_close(out.last_hidden, full.hidden_states[depth - 1])
        assert len(out.attentions) == depth
    for bad in (0, blocks + 1):
        with pytest.raises(ValueError, match="depth"):
            vit_forward(tiny.visual, pixels, depth=bad)


def patch_pixels(tiny, pixels, patches, value):
    """``pixels`` with every patch in ``patches`` (flat grid indices) set to ``value``."""
    out, size = pixels.clone(), tiny.image_size // tiny.grid_size[1]
    for p in patches:
        row, col = divmod(int(p), tiny.grid_size[1])
        out[:, :, row * size : (row + 1) * size, col * size : (col + 1) * size] = value
    return out


def test_keep_patches_sees_only_the_kept_patches(tiny):
    pixels = torch.randn(2, 3, tiny.image_size, tiny.image_size)
    n_patches = tiny.grid_size[0] * tiny.grid_size[1]
    every = torch.arange(n_patches).expand(2, -1)
    torch.testing.assert_close(
        vit_forward(tiny.visual, pixels, keep_patches=every).pooled, vit_forward(tiny.visual, pixels).pooled
    )
    keep = torch.tensor([[0, 5, 9], [3, 4, 10]])
    out = vit_forward(tiny.visual, pixels, extra_tokens=torch.randn(2, tiny.width), keep_patches=keep)
    assert out.n_patches == 3 and out.tokens.shape[1] == 1 + 3 + 2
    # repainting any patch that was not kept changes nothing; repainting a kept one does
    dropped = [p for p in range(n_patches) if p not in (0, 3, 4, 5, 9, 10)]
    same = vit_forward(tiny.visual, patch_pixels(tiny, pixels, dropped, 3.0), keep_patches=keep)
    torch.testing.assert_close(same.pooled, vit_forward(tiny.visual, pixels, keep_patches=keep).pooled)
    moved = vit_forward(tiny.visual, patch_pixels(tiny, pixels, [5], 3.0), keep_patches=keep)
    assert not torch.allclose(moved.pooled[0], same.pooled[0])  # image 0 kept patch 5
    torch.testing.assert_close(moved.pooled[1], same.pooled[1])  # image 1 did not


@pytest.mark.parametrize("which", ["attention", "mlp"])
def test_zero_initialised_adapters_leave_the_forward_unchanged(tiny, which):
    pixels = torch.randn(2, 3, tiny.image_size, tiny.image_size)
    blocks = [BlockAdapters(tiny.width, tiny.width // 2) for _ in tiny.visual.transformer.resblocks]
    adapters = [block.pair() for block in blocks]
    assert all(float(a.scale.detach()) == 1.0 for pair in adapters for a in pair)
    torch.testing.assert_close(
        vit_forward(tiny.visual, pixels, adapters=adapters).pooled, tiny.model.encode_image(pixels)
    )
    with torch.no_grad():
        getattr(blocks[0], which).up.weight.normal_()
    assert not torch.allclose(
        vit_forward(tiny.visual, pixels, adapters=adapters).pooled, tiny.model.encode_image(pixels)
    )


def test_adapter_sees_the_sub_layer_output_not_the_residual_stream(tiny):
    # An adapter that returns its input doubles the attention output: x + a + a.
    class Echo(torch.nn.Module):
        def forward(self, x):
            return x

    block = tiny.visual.transformer.resblocks[0]
    x = torch.randn(2, 5, tiny.width)
    from core.backbones.vit import block_forward

    plain, _ = block_forward(block, x)
    echoed, _ = block_forward(block, x, adapters=(Echo(), None))
    a = block.ls_1(block.attn(block.ln_1(x), block.ln_1(x), block.ln_1(x), need_weights=False)[0])
    y = x + 2 * a
    expected = y + block.ls_2(block.mlp(block.ln_2(y)))
    torch.testing.assert_close(echoed, expected, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(plain, echoed)


def test_text_features_before_projection_project_to_encode_text(tiny):
    texts = ["a photo of a red finch.", "a blue wing"]
    pooled = tiny.text_features_before_projection(texts)
    assert pooled.shape == (2, tiny.text_width)
    torch.testing.assert_close(pooled @ tiny.model.text_projection, tiny.encode_texts(texts, normalize=False))


def test_attention_rollout_matches_hand_computation():
    a1 = torch.tensor([[[[0.0, 1.0], [1.0, 0.0]]]])  # (B=1, H=1, 2, 2)
    a2 = torch.tensor([[[[0.5, 0.5], [0.5, 0.5]]]])
    r1 = 0.5 * torch.eye(2) + 0.5 * a1[0, 0]  # [[.5,.5],[.5,.5]]
    r2 = 0.5 * torch.eye(2) + 0.5 * a2[0, 0]  # [[.75,.25],[.25,.75]]
    torch.testing.assert_close(attention_rollout([a1, a2])[0], r2 @ r1)


def test_clip_bundle_round_trip(tmp_path, tiny):
    from core.backbones.clip import get_toy_config

    path = save_bundle(
        tmp_path / "clip",
        kind="clip",
        config={"backbone": {"name": "toyclip-tiny", **get_toy_config("toyclip-tiny")}},
        weights=tiny.model.state_dict(),
    )
    loaded = load_backbone(str(path))
    pixels = torch.randn(2, 3, tiny.image_size, tiny.image_size)
    torch.testing.assert_close(loaded.model.encode_image(pixels), tiny.model.encode_image(pixels))
    assert loaded.reference == {"bundle": str(path)}
    assert not any(p.requires_grad for p in loaded.model.parameters())


@pytest.mark.parametrize(
    "spec, message",
    [
        ("", "empty"),
        ("no-such-model:random", "Unknown backbone 'no-such-model'"),
        ("toyclip-tiny:openai", "use 'toyclip-tiny:random'"),
        ("ViT-B-32-quickgelu:not-a-tag", "'not-a-tag' is neither a checkpoint file nor a known tag"),
        ("./missing/bundle", "no such directory"),
    ],
)
def test_bad_backbone_specs_get_one_clear_sentence(spec, message):
    with pytest.raises(BackboneError, match=message):
        load_backbone(spec)


def test_random_backbones_are_reproducible():
    first, second = (
        load_backbone("toyclip-tiny:random"),
        load_backbone({"name": "toyclip-tiny", "init_seed": 0}),
    )
    for a, b in zip(first.model.state_dict().values(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert first.reference == {"name": "toyclip-tiny", "pretrained": None, "init_seed": 0}
    other = load_backbone({"name": "toyclip-tiny", "init_seed": 1})
    assert not torch.equal(other.model.visual.proj, first.model.visual.proj)


def test_parse_backbone_spec_forms(tmp_path):
    assert parse_backbone_spec("ViT-B-32-quickgelu:openai") == {
        "name": "ViT-B-32-quickgelu",
        "pretrained": "openai",
    }
    assert parse_backbone_spec(str(tmp_path)) == {"bundle": str(tmp_path)}
    assert parse_backbone_spec("toyclip-s") == {"name": "toyclip-s", "pretrained": None}


def test_stored_bundle_reference_is_found_relative_to_a_moved_folder(tmp_path, tiny):
    from core.backbones.clip import get_toy_config

    save_bundle(
        tmp_path / "models" / "clip",
        kind="clip",
        config={"backbone": {"name": "toyclip-tiny", **get_toy_config("toyclip-tiny")}},
        weights=tiny.model.state_dict(),
    )
    # a dependent bundle stored "elsewhere/clip"; it now lives in models/ beside the clip bundle
    loaded = load_backbone({"bundle": "elsewhere/clip"}, relative_to=tmp_path / "models" / "hash")
    assert loaded.reference["bundle"].endswith("clip")


def test_clip_training_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    from core.backbones import train_clip as module
    from core.data.spec import DataSpec

    data = DataSpec(image_size=32, train_per_class=1, test_per_class=1)
    config = module.ClipTrainConfig(config_name="toyclip-tiny", epochs=2, batch_size=8, device="cpu")

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(module, "save_bundle", crash)
    with pytest.raises(RuntimeError):
        module.train_clip(data, config, tmp_path / "clip", log=lambda *_: None)
    assert (tmp_path / "clip.ckpt").is_file()
    monkeypatch.undo()
    messages = []
    out = module.train_clip(data, config, tmp_path / "clip", resume=True, log=messages.append)
    assert any("Resuming" in m and "epoch 2" in m for m in messages)
    assert not any(m.startswith("epoch ") for m in messages)
    assert len(load_backbone(str(out)).reference) == 1 and not (tmp_path / "clip.ckpt").exists()
