"""The CEIR page and labels with a large concept bank (the shipped `general` bank, every concept kept), and
with a bundle whose test images all went unlabelled."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from core.ceir.bundle import load_ceir
from core.ceir.explain import intervene
from core.ceir.labels import labels_by_share
from core.ceir.presence import otsu_threshold
from lens import ceir as view
from tests.conftest import HOME
from tests.test_page_ceir import ONE_IMAGE, QUALITY, distance_bars, open_tab


@pytest.fixture(scope="module")
def big_bundle(tiny_bundles, tmp_path_factory):
    """A tiny CEIR on the toy CLIP with the 418-concept `general` bank, no filter on (a few seconds)."""
    from core.ceir.bottleneck import ProjectionConfig
    from core.ceir.train import CEIRConfig, train_ceir
    from core.ceir.vae import VAEConfig
    from core.data.spec import DataSpec

    root = tmp_path_factory.mktemp("big-bank")
    config = CEIRConfig(
        projection=ProjectionConfig(steps=20, eval_every=10, fidelity_cutoff=-1.0),
        vae=VAEConfig(epochs=1, latent_dim=4, hidden_dims=(32, 16), batch_size=16),
        near_duplicate_fraction=0.0,
        class_relevance_fraction=None,
        activation_fraction=None,
        device="cpu",
        kmeans_restarts=2,
    )
    data = DataSpec(image_size=32, train_per_class=2, test_per_class=1)
    train_ceir(
        str(tiny_bundles / "toy-clip"), data, "general", config, root / "big-ceir", log=lambda *_: None
    )
    return root / "big-ceir"


def open_page(folder, monkeypatch) -> AppTest:
    monkeypatch.setenv("CONCEPTLENS_BUNDLES", str(folder))
    app = AppTest.from_file(str(HOME), default_timeout=120)
    app.run()
    app.switch_page("views/ceir_concepts.py").run()
    assert not app.exception, [e.value for e in app.exception]
    return app


@pytest.fixture(scope="module")
def big(big_bundle):
    loaded = load_ceir(big_bundle, device="cpu")
    return loaded, loaded.arrays["train_concepts"], loaded.arrays["train_contributions"]


def test_a_large_bank_gives_labels_where_a_fixed_ten_percent_gave_none(big):
    loaded, vectors, contributions = big
    assert len(loaded.concepts) == 418
    clusters = loaded.arrays["train_clusters"]
    new = labels_by_share(loaded.concepts, vectors, contributions, clusters, top_k=5)
    old = labels_by_share(loaded.concepts, vectors, contributions, clusters, top_k=5, factor=np.inf)
    assert all(not labels for labels, _ in old)  # the old rule: no concept carries 10 %
    assert np.mean([bool(labels) for labels, _ in new]) >= 0.95
    for (labels, _), vector, contribution in zip(new, vectors, contributions, strict=True):
        positive = contribution > 0
        for label in labels:
            i = loaded.concepts.index(label.concept)
            assert vector[i] > 0 and label.score >= 2 / positive.sum() - 1e-9
    assert loaded.metrics["labels"]["unlabelled_share"] <= 0.05  # what training's evaluation stored


def test_present_concepts_show_the_top_few_and_the_rest_on_demand(big_bundle, big, monkeypatch):
    loaded, vectors, _ = big
    app = open_page(big_bundle.parent, monkeypatch)
    open_tab(app, ONE_IMAGE)
    app.selectbox(key="ceir_image").set_value(3).run()
    assert not app.exception, [e.value for e in app.exception]
    thresholds = np.array([max(0.0, otsu_threshold(vectors[:, j])) for j in range(vectors.shape[1])])
    present = sorted(np.flatnonzero(vectors[3] > thresholds), key=lambda j: -vectors[3, j])
    assert len(present) > 100  # a large bank: the page used to print them all in one sentence
    caption = next(c.value for c in app.caption if "presence threshold" in c.value)
    named = caption.split(" highest: ", 1)[1].rstrip(".").split(", ")
    assert f"{len(present)} concepts, the 8 highest" in caption
    assert named == [loaded.concepts[j] for j in present[:8]]
    assert [e.label for e in app.expander if "present in this image" in e.label] == [
        f"All {len(present)} concepts present in this image"
    ]
    table = next(d.value for d in app.dataframe if "above it by" in d.value.columns)
    assert table["concept"].tolist() == [loaded.concepts[j] for j in present]
    assert (table["above it by"] > 0).all()


def test_the_what_if_picker_offers_every_concept_of_the_bank(big_bundle, big, monkeypatch):
    loaded, vectors, contributions = big
    app = open_page(big_bundle.parent, monkeypatch)
    open_tab(app, ONE_IMAGE)
    app.selectbox(key="ceir_image").set_value(0).run()
    picker = app.multiselect(key="ceir_iv_pick_0")
    top5 = view.intervention_concepts(contributions[0], 5)
    assert len(picker.options) == 418
    assert picker.value == top5  # the panel starts with the top contributors
    assert [s.key for s in app.slider] == [f"ceir_iv_0_{i}" for i in top5]
    weakest = int(np.argmin(np.abs(contributions[0])))  # far outside the top 5
    assert weakest not in top5
    assert picker.options[-1] == view.intervention_choice(loaded.concepts, contributions[0], weakest)
    picker.set_value([top5[0], weakest]).run()
    assert not app.exception, [e.value for e in app.exception]
    assert [s.key for s in app.slider] == [f"ceir_iv_0_{top5[0]}", f"ceir_iv_0_{weakest}"]
    assert app.slider(key=f"ceir_iv_0_{weakest}").label == loaded.concepts[weakest]
    app.slider(key=f"ceir_iv_0_{weakest}").set_value(3.0).run()
    assert not app.exception, [e.value for e in app.exception]
    edited = intervene(loaded.model, torch.from_numpy(vectors[0]), {weakest: 3.0})
    np.testing.assert_allclose(distance_bars(app), edited.distances, rtol=1e-5, atol=1e-6)


def test_quality_tab_says_plainly_that_every_image_went_unlabelled(tiny_bundles, tmp_path, monkeypatch):
    """A bundle whose test images all got no label (a large bank under the old rule) showed "labels true
    0.000 / distractors 0.000": shares of nothing, read as a precision."""
    bundle = shutil.copytree(tiny_bundles / "toy-ceir", tmp_path / "bundles" / "unlabelled-ceir")
    config = json.loads((bundle / "config.json").read_text())
    config["metrics"]["labels"] = {"precision": 0.0, "distractor_share": 0.0, "unlabelled_share": 1.0}
    (bundle / "config.json").write_text(json.dumps(config))
    app = open_page(bundle.parent, monkeypatch)
    open_tab(app, QUALITY)
    assert not app.exception, [e.value for e in app.exception]
    cards = {m.label: m.value for m in app.metric}
    assert "Printed labels that are true" not in cards and "Printed labels that are distractors" not in cards
    assert cards["Test images without a label"] == "100%"
    n = config["metrics"]["n_test"]
    assert any(w.value.startswith(f"100% of the {n} test images are unlabelled") for w in app.warning)


def test_label_quality_helpers_by_hand():
    """The plain helpers behind the Quality tab's label cards, by hand."""
    assert view.label_quality({}) is None and view.unlabelled_sentence({}) is None
    every = {"labels": {"precision": 0.97, "distractor_share": 0.02, "unlabelled_share": 0.0}}
    assert view.label_quality(every) == view.LabelQuality(0.97, 0.02, 0.0)
    assert view.unlabelled_sentence(every) is None
    none = {"labels": {"precision": 0.0, "distractor_share": 0.0, "unlabelled_share": 1.0}, "n_test": 24}
    assert view.label_quality(none) == view.LabelQuality(None, None, 1.0)
    assert view.unlabelled_sentence(none).startswith("100% of the 24 test images are unlabelled")
    some = {"labels": {"precision": 0.9, "distractor_share": 0.1, "unlabelled_share": 0.25}}
    assert view.unlabelled_sentence(some).startswith("25% of the test images are unlabelled")
    older = {"labels": {"precision": 0.9, "distractor_share": 0.1}}  # evaluated before the share was stored
    assert view.label_quality(older) == view.LabelQuality(0.9, 0.1, None)
    assert view.unlabelled_sentence(older) is None


def test_present_table_and_rows_by_hand():
    table = view.present_table(["a", "b", "c"], np.array([0.5, 2.0, 1.0]), np.array([0.0, 1.5, 1.2]))
    assert table.to_dict("records") == [
        {"concept": "b", "score": 2.0, "threshold": 1.5, "above it by": 0.5},
        {"concept": "a", "score": 0.5, "threshold": 0.0, "above it by": 0.5},
    ]
    assert view.presence_sentence(["a", "b", "c"], np.array([0.5, 2.0, 1.0]), np.zeros(3), shown=2) == (
        "Present in this image (above each concept's presence threshold): 3 concepts, the 2 highest: b, c."
    )
    assert view.in_rows([1, 2, 3, 4, 5, 6, 7], 5) == [[1, 2, 3, 4, 5], [6, 7]] and view.in_rows([], 5) == []
    assert view.intervention_concepts(np.array([0.1, -0.9, 0.5, 0.0]), None) == [1, 2, 0, 3]
    assert view.intervention_choice(["wing", "head"], np.array([0.25, -0.125]), 1) == "head (-0.125)"
