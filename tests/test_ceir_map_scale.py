"""The CEIR map at a researcher's scale: a page never waits a minute for UMAP. A large bundle without a stored
map opens on its PCA map with a button for the UMAP one (which the bundle then keeps); training stores the
map of a large data set; 200 classes get 200 colours; the map of many points is drawn with WebGL."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from core.bundle import read_bundle_arrays
from core.ceir.arrays import TRAIN_LATENTS, TRAIN_UMAP
from core.ceir.projection2d import known_map, pca_2d, umap_2d
from lens.figures import distinct_colours


@pytest.fixture(scope="module")
def synthetic_ceir(tmp_path_factory):
    from core.synthetic import make_ceir_bundle

    root = tmp_path_factory.mktemp("ceir-map")
    made = make_ceir_bundle(
        root / "bundles" / "ceir-syn",
        n_concepts=40,
        classes=12,
        images=240,
        data_out=root / "data",
        progress=lambda *_: None,
    )
    return made.bundle


def test_a_large_bundle_opens_on_its_pca_map_and_makes_the_umap_one_on_request(
    synthetic_ceir, monkeypatch, tmp_path
):
    import shutil

    from streamlit.testing.v1 import AppTest

    import lens.ceir
    from tests.conftest import HOME

    bundles = tmp_path / "bundles"
    shutil.copytree(synthetic_ceir.parent, bundles)
    bundle = bundles / synthetic_ceir.name
    assert known_map(bundle) is None, "the fixture stores no map"
    monkeypatch.setattr(lens.ceir, "MAX_WAITED_POINTS", 100)  # 240 points count as many here
    monkeypatch.setenv("CONCEPTLENS_BUNDLES", str(bundles))
    app = AppTest.from_file(str(HOME), default_timeout=180).run()
    app.switch_page("views/ceir_concepts.py").run()
    assert not app.exception, [e.value for e in app.exception]
    assert any(c.value.startswith(lens.ceir.STAND_IN) for c in app.caption)
    latents = read_bundle_arrays(bundle)[TRAIN_LATENTS]
    chart = app.get("plotly_chart")[0]
    xs = np.concatenate([decoded(trace["x"]) for trace in json.loads(chart.proto.spec)["data"]])
    assert np.allclose(np.sort(xs), np.sort(pca_2d(latents)[:, 0]), atol=1e-5), "the PCA map is drawn"
    layout = json.loads(chart.proto.spec)["layout"]
    assert layout["xaxis"]["title"]["text"] == "PC 1", "its axes say what the map is"
    assert known_map(bundle) is None, "opening the page computed no UMAP"

    app.button(key="ceir_make_umap").click().run()
    assert not app.exception, [e.value for e in app.exception]
    stored = read_bundle_arrays(bundle).get(TRAIN_UMAP)
    assert stored is not None and stored.shape == (len(latents), 2), "the bundle keeps the map"
    assert not any(c.value.startswith(lens.ceir.STAND_IN) for c in app.caption)
    assert any(c.value.startswith("UMAP of the") for c in app.caption)


def decoded(values) -> np.ndarray:
    """A plotly array from a chart's JSON: a list, or numpy's bytes as base64 ('bdata')."""
    if isinstance(values, dict):
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"]).astype(float)
    return np.asarray(values, dtype=float)


def test_training_stores_the_map_of_a_large_data_set(tmp_path, monkeypatch):
    import core.ceir.train as train
    from core.ceir.bottleneck import ProjectionConfig
    from core.ceir.vae import VAEConfig
    from core.data.spec import DataSpec
    from tests.conftest import ROOT

    monkeypatch.setattr(train, "MAX_WAITED_POINTS", 10)  # 48 train images count as many here
    config = train.CEIRConfig(
        projection=ProjectionConfig(steps=20, eval_every=10),
        vae=VAEConfig(epochs=1, latent_dim=4, hidden_dims=(16,), batch_size=16),
        device="cpu",
        kmeans_restarts=2,
    )
    out = train.train_ceir(
        str(ROOT / "pretrained" / "toybirds-clip"),
        DataSpec(image_size=32, train_per_class=2, test_per_class=1),
        "toybirds",
        config,
        tmp_path / "ceir",
        log=lambda *_: None,
    )
    arrays = read_bundle_arrays(out)
    assert np.allclose(arrays[TRAIN_UMAP], umap_2d(arrays[TRAIN_LATENTS]), atol=1e-4)
    import json

    assert "2-d map" in json.loads((out / "config.json").read_text())["train"]["phase_seconds"]


def test_200_classes_get_200_distinct_colours():
    base = ["#111111", "#222222"]
    assert distinct_colours(2, base) == base
    many = distinct_colours(200, base)
    assert len(set(many)) == 200 and all(c.startswith("hsl(") for c in many)


@pytest.mark.parametrize("n, gl", [(300, False), (6000, True)])
def test_a_map_of_many_points_is_drawn_with_webgl_in_one_colour_per_class(n, gl):
    from lens.ceir import scatter, umap_frame

    rng = np.random.default_rng(0)
    names = [f"class {c}" for c in range(200)]
    frame = umap_frame(
        rng.normal(size=(n, 2)), rng.integers(0, 5, n), np.arange(n) % 200, names, list(map(str, range(n)))
    )
    figure = scatter(frame, "true label")
    assert {trace.type for trace in figure.data} == {"scattergl" if gl else "scatter"}
    # 200 classes: one trace coloured point by point (200 traces took Chromium seconds), no legend
    (trace,) = figure.data
    assert figure.layout.showlegend is False
    colour_of_class = {}
    for label, point_colour in zip(frame["true label"], trace.marker.color, strict=True):
        assert colour_of_class.setdefault(label, point_colour) == point_colour, "one colour per class"
    assert len(set(colour_of_class.values())) == 200, "and none shared"
    rows = np.sort(np.asarray(trace.customdata)[:, 0].astype(int))
    assert rows.tolist() == list(range(n)), "every point once, carrying its row"
    clusters = scatter(frame, "cluster")  # 5 clusters: a trace each, so the legend toggles them
    assert len(clusters.data) == 5 and len({t.marker.color for t in clusters.data}) == 5
    assert sorted(
        np.concatenate([np.asarray(t.customdata)[:, 0] for t in clusters.data]).astype(int)
    ) == list(range(n))


def test_a_big_map_draws_a_fixed_sample_in_proportion_to_each_colour():
    from lens.ceir import map_rows

    colours = np.array(["cluster 0"] * 9000 + ["cluster 1"] * 900 + ["cluster 2"] * 100)
    rows = map_rows(colours, every=False, limit=1000)
    assert len(rows) == len(set(rows.tolist())) == 1000 and np.all(np.diff(rows) > 0)
    counts = {c: int((colours[rows] == c).sum()) for c in np.unique(colours)}
    assert counts == {"cluster 0": 900, "cluster 1": 90, "cluster 2": 10}, counts
    assert map_rows(colours, every=False, limit=1000).tolist() == rows.tolist(), "the same sample each run"
    assert map_rows(colours, every=True, limit=1000).tolist() == list(range(10000))
    assert map_rows(colours[:800], every=False, limit=1000).tolist() == list(range(800))


def test_the_page_draws_a_sample_of_a_big_map_and_every_point_on_request(synthetic_ceir, monkeypatch):
    from streamlit.testing.v1 import AppTest

    import lens.ceir
    from tests.conftest import HOME

    monkeypatch.setattr(lens.ceir, "DRAWN_POINTS", 100)  # the fixture's 240 points count as a big map
    monkeypatch.setenv("CONCEPTLENS_BUNDLES", str(synthetic_ceir.parent))
    app = AppTest.from_file(str(HOME), default_timeout=180).run()
    app.switch_page("views/ceir_concepts.py").run()
    assert not app.exception, [e.value for e in app.exception]

    def drawn() -> int:
        chart = json.loads(app.get("plotly_chart")[0].proto.spec)
        return sum(len(decoded(trace["x"])) for trace in chart["data"])

    assert drawn() == 100
    assert any(c.value.startswith("Showing 100 of 240 points") for c in app.caption)
    app.toggle(key="ceir_every_point").set_value(True).run()
    assert drawn() == 240 and not any(c.value.startswith("Showing") for c in app.caption)
