"""Offline means offline: exported figures carry plotly.js inside, the Streamlit settings stop look-ups, and a
real CLIP that is neither cached nor downloadable is refused in one sentence within 2 s, without a download.

The browser half (no request leaves localhost while every page is clicked through) is in test_browser.py.
"""

from __future__ import annotations

import re
import time
import tomllib

import pytest

from core.backbones import offline
from core.backbones.clip import BackboneError, BackboneOfflineError, load_backbone
from tests.conftest import ROOT

# ViT-B-32:openai comes from the Hugging Face hub as timm/vit_base_patch32_clip_224.openai (open_clip 3.x).
CLIP_SPEC = "ViT-B-32:openai"
HUB_REPO = "models--timm--vit_base_patch32_clip_224.openai"


def test_exported_figure_html_has_plotly_inline_and_loads_nothing():
    import plotly.express as px

    from lens.figures import figure_html

    html = figure_html(px.bar(x=["wing", "head"], y=[1, 2])).decode()
    assert re.search(r"<script[^>]*\bsrc\s*=\s*[\"']?https?:", html, re.IGNORECASE) is None
    assert '<script src="http' not in html
    assert len(html) > 1_000_000, "plotly.js itself (several MB) is inside the file"
    assert "Plotly.newPlot" in html


def test_streamlit_config_sends_nothing_and_skips_the_external_ip_lookup():
    from streamlit import config

    settings = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert settings["browser"]["gatherUsageStats"] is False
    # Set explicitly, Streamlit prints this address instead of asking checkip.amazonaws.com for one.
    assert settings["browser"]["serverAddress"] == "localhost"
    known = config.get_config_options()
    for section, values in settings.items():
        for key in values:
            assert f"{section}.{key}" in known, f"{section}.{key} is not a Streamlit 1.67 option"


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """No real CLIP in any cache (a fresh Hugging Face hub cache and ~/.cache/clip), and no download ever."""
    import huggingface_hub.constants
    import open_clip

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))

    def no_download(*args, **kwargs):
        raise AssertionError("open_clip was asked to load (and so to download) the weights")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", no_download)
    return tmp_path


def no_network(monkeypatch):
    calls = []
    monkeypatch.setattr(offline, "host_reachable", lambda host, **kwargs: calls.append(host) or False)
    return calls


def assert_one_sentence(message: str) -> None:
    assert message.endswith(".") and "\n" not in message
    assert not re.search(r"[.!?] [A-Z]", message), f"more than one sentence: {message}"


def test_uncached_clip_with_no_network_is_one_sentence_within_2s(empty_caches, monkeypatch):
    asked = no_network(monkeypatch)
    start = time.monotonic()
    with pytest.raises(BackboneOfflineError) as caught:
        load_backbone(CLIP_SPEC)
    assert time.monotonic() - start < 2.0
    message = str(caught.value)
    assert_one_sentence(message)
    assert CLIP_SPEC in message and "huggingface.co cannot be reached" in message
    assert str(empty_caches / "hub") in message, "names the cache it looked in"
    assert "ConSE" in message, "says what works offline instead"
    assert asked == ["huggingface.co"]


def test_hf_hub_offline_is_honoured_without_trying_the_network(empty_caches, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(offline, "host_reachable", lambda *a, **k: pytest.fail("no network check offline"))
    with pytest.raises(BackboneOfflineError, match="HF_HUB_OFFLINE is set") as caught:
        load_backbone(CLIP_SPEC)
    assert_one_sentence(str(caught.value))


def test_cached_weights_go_straight_to_open_clip(empty_caches, monkeypatch):
    import open_clip

    snapshot = empty_caches / "hub" / HUB_REPO / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_model.safetensors").write_bytes(b"stand-in")
    (empty_caches / "hub" / HUB_REPO / "refs").mkdir()
    (empty_caches / "hub" / HUB_REPO / "refs" / "main").write_text("0123abcd")
    monkeypatch.setattr(offline, "host_reachable", lambda *a, **k: pytest.fail("cached: no network check"))
    long_reason = "reached open_clip " + "unexpectedly " * 40

    def fails(*args, **kwargs):
        raise RuntimeError(long_reason)

    monkeypatch.setattr(open_clip, "create_model_and_transforms", fails)
    with pytest.raises(BackboneError) as caught:
        load_backbone(CLIP_SPEC)
    message = str(caught.value)
    assert not isinstance(caught.value, BackboneOfflineError)
    assert "reached open_clip" in message
    detail = message.split("RuntimeError: ", 1)[1].split(")", 1)[0]
    assert set(detail.split()) <= {"reached", "open_clip", "unexpectedly", "…"}, "cut between words"
    assert_one_sentence(message)


def test_url_downloads_are_looked_up_in_the_open_clip_cache(empty_caches, monkeypatch):
    from open_clip import pretrained

    monkeypatch.setattr(pretrained, "has_hf_hub", lambda necessary=False: False)
    (missing,) = offline.missing_files("ViT-B-32", "openai")
    assert missing.host == "openaipublic.azureedge.net"
    cache = empty_caches / ".cache" / "clip"
    cache.mkdir(parents=True)
    (cache / "ViT-B-32.pt").write_bytes(b"stand-in")
    assert offline.missing_files("ViT-B-32", "openai") == []


@pytest.mark.parametrize("host", ["10.255.255.1", "conceptlens-offline-check.invalid"])
def test_network_check_gives_up_in_time(host):
    """A black-holed address and a name that never resolves: no answer, and no waiting past the limit."""
    start = time.monotonic()
    assert offline.host_reachable(host, timeout=0.3) is False
    assert time.monotonic() - start < 1.0
