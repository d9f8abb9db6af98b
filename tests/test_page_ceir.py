"""The CEIR concepts page (AppTest on the tiny toy-ceir bundle) and its plain helpers."""

from __future__ import annotations

import base64
import json

import numpy as np
import pandas as pd
import pytest
import torch

from core.ceir.bundle import load_ceir
from core.ceir.explain import explain, intervene
from core.ceir.presence import otsu_threshold
from core.ceir.reading import ConceptContribution, top_contributions
from lens import ceir as view

# ----------------------------------------------------------------------------------------------------------
# Helpers for reading what the page drew
# ----------------------------------------------------------------------------------------------------------


def decode(values) -> np.ndarray:
    """Plotly JSON holds numpy arrays as {"dtype", "bdata"} (base64); lists stay lists."""
    if isinstance(values, dict) and "bdata" in values:
        return np.frombuffer(base64.b64decode(values["bdata"]), dtype=np.dtype(values["dtype"]))
    return np.asarray(values)


def chart(app, index: int) -> dict:
    return json.loads(app.get("plotly_chart")[index].proto.spec)


MAP, ONE_IMAGE, CLUSTERS, QUALITY = "Latent map", "One image: concepts and what-if", "Clusters", "Quality"


def open_tab(app, label: str):
    """Open one of the page's tabs, as a click on it in the browser does (the page reruns)."""
    app.session_state["ceir_tab"] = label
    return app.run()


# The charts of the one-image tab, in the order it draws them.
BARS, DISTANCES = 0, 1


def distance_bars(app) -> np.ndarray:
    """The intervention chart's distances in cluster order, gathered over its traces (one per role)."""
    by_cluster = {}
    for trace in chart(app, DISTANCES)["data"]:
        for x, y in zip(trace["x"], decode(trace["y"]), strict=True):
            by_cluster[int(x.split()[-1])] = float(y)
    return np.array([by_cluster[c] for c in sorted(by_cluster)])


def umap_points(app) -> dict[int, tuple[float, float]]:
    """Row index -> (x, y) over every trace of the latent map."""
    points = {}
    for trace in chart(app, 0)["data"]:
        xs, ys = decode(trace["x"]), decode(trace["y"])
        for custom, x, y in zip(trace["customdata"], xs, ys, strict=True):
            points[int(custom[0])] = (float(x), float(y))
    return points


def select_points(app, rows: list[int]):
    """Run the page as if these rows were lasso-selected in the map.

    AppTest has no setter for plotly selections, so this sends the widget state the browser would send
    (a JSON string under the chart's element id), next to the state of every other widget.
    """
    states = app._tree.get_widget_states()
    state = states.widgets.add()
    state.id = app.get("plotly_chart")[0].proto.id
    points = [{"customdata": [row], "point_index": 0, "curve_number": 0} for row in rows]
    state.string_value = json.dumps(
        {"selection": {"points": points, "point_indices": [0] * len(rows), "box": [], "lasso": []}}
    )
    return app._run(states)


@pytest.fixture(scope="module")
def toy(tiny_bundles):
    """The loaded toy-ceir model and its train-set contributions computed directly through core."""
    loaded = load_ceir(tiny_bundles / "toy-ceir", device="cpu")
    vectors = torch.from_numpy(loaded.arrays["train_concepts"])
    clusters = torch.from_numpy(loaded.arrays["train_clusters"])
    contributions, _ = explain(loaded.model, vectors, clusters)
    return loaded, vectors.numpy(), clusters.numpy(), contributions.numpy()


@pytest.fixture(scope="module")
def page(tiny_bundles):
    """One AppTest of the page, shared by the tests that only read or change widgets."""
    from streamlit.testing.v1 import AppTest

    from tests.conftest import HOME

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONCEPTLENS_BUNDLES", str(tiny_bundles))
        app = AppTest.from_file(str(HOME), default_timeout=120)
        app.run()
        app.switch_page("views/ceir_concepts.py").run()
        yield app


# ----------------------------------------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------------------------------------


def test_page_shows_every_section_without_errors(page):
    assert [t.label for t in page.tabs] == [MAP, ONE_IMAGE, CLUSTERS, QUALITY]
    headings, labels = {}, []
    for tab in (MAP, ONE_IMAGE, CLUSTERS, QUALITY):
        open_tab(page, tab)
        assert not page.exception, [e.value for e in page.exception]
        assert not page.error, [e.value for e in page.error]
        headings[tab] = [s.value for s in page.subheader]
        labels += [b.label for b in page.get("download_button")]
    assert headings[MAP] == ["The latent space"]  # only the open tab is drawn
    assert headings[ONE_IMAGE] == ["One image's concepts", "What if? Edit the image's top concepts"]
    assert headings[CLUSTERS] == ["Clusters and their concepts"]
    assert headings[QUALITY] == ["Clustering quality on the test split"]
    assert "Download ceir_umap (HTML)" in labels
    assert "Download clustering_metrics (CSV)" in labels
    assert any(label.startswith("Download contributions_") and "/" not in label for label in labels)
    open_tab(page, MAP)


def test_widgets_in_a_closed_tab_keep_their_values(page, toy):
    """Streamlit forgets a widget that a run did not draw; the page gives it back its value."""
    open_tab(page, MAP)
    page.radio(key="ceir_colour").set_value("true label").run()
    open_tab(page, ONE_IMAGE)
    page.selectbox(key="ceir_image").set_value(5).run()
    editable = view.intervention_concepts(toy[3][5], 5)
    page.slider(key=f"ceir_iv_5_{editable[0]}").set_value(2.0).run()
    open_tab(page, CLUSTERS)
    assert page.get("plotly_chart") == [] and "ceir_image" not in page.session_state  # not drawn: forgotten
    open_tab(page, ONE_IMAGE)
    assert page.selectbox(key="ceir_image").value == 5
    assert page.slider(key=f"ceir_iv_5_{editable[0]}").value == 2.0
    open_tab(page, MAP)
    assert page.radio(key="ceir_colour").value == "true label"
    page.radio(key="ceir_colour").set_value("cluster").run()
    open_tab(page, ONE_IMAGE)
    page.button(key="ceir_iv_reset").click().run()
    page.selectbox(key="ceir_image").set_value(0).run()
    open_tab(page, MAP)


def test_a_kept_slider_value_outside_the_range_is_dropped(page, toy):
    """A value kept from another bundle (or image) that this slider cannot show must not break the page."""
    from lens.tabs import SHADOW

    _, vectors, _, contributions = toy
    open_tab(page, ONE_IMAGE)
    page.selectbox(key="ceir_image").set_value(0).run()
    first = view.intervention_concepts(contributions[0], 5)[0]
    open_tab(page, CLUSTERS)
    page.session_state[SHADOW + f"ceir_iv_0_{first}"] = 99.0  # beyond any z-score slider here
    open_tab(page, ONE_IMAGE)
    assert not page.exception, [e.value for e in page.exception]
    assert page.slider(key=f"ceir_iv_0_{first}").value == view.slider_start(vectors[0, first])
    open_tab(page, MAP)


def test_map_is_the_umap_cached_in_the_bundle(page, tiny_bundles, toy):
    from core.bundle import load_bundle

    open_tab(page, MAP)
    stored = load_bundle(tiny_bundles / "toy-ceir").arrays["train_umap"]
    points = umap_points(page)
    assert sorted(points) == list(range(len(toy[1])))
    drawn = np.array([points[i] for i in range(len(points))], dtype=np.float32)
    np.testing.assert_array_equal(drawn, stored)


def test_metrics_table_equals_the_bundle_metrics(page, toy):
    metrics = toy[0].metrics
    open_tab(page, QUALITY)
    table = next(d.value for d in page.dataframe if "method" in d.value.columns)
    assert table["method"].tolist() == ["CEIR", "k-means on CLIP embeddings", "k-means on concept vectors"]
    expected = [
        [metrics["acc"], metrics["nmi"], metrics["ari"]],
        *[
            [metrics["baselines"][m][s] for s in ("acc", "nmi", "ari")]
            for m in ("clip_embedding", "concepts")
        ],
    ]
    np.testing.assert_allclose(table[["ACC", "NMI", "ARI"]].to_numpy(), np.round(expected, 4))
    restarts = metrics["protocols"]["kmeans_restarts"]
    assert any(f"each the best of {restarts} k-means++ starts" in m.value for m in page.markdown)
    precision = next(m for m in page.metric if m.label == "Concept precision@5")
    assert precision.value == f"{metrics['concept_precision_at_5']:.3f}"
    top5 = metrics["concept_top5"]
    sentence = next(
        c.value for c in page.caption if c.value.startswith("What fills each test image's top five")
    )
    assert sentence.startswith("What fills each test image's top five present concepts")
    assert f"{top5['true']:.0%} true species colours" in sentence
    assert f"{top5['distractor']:.0%} distractors" in sentence
    assert f"On average {top5['present_per_image']:.1f} concepts per image are present" in sentence
    assert f"would be {metrics['concept_precision_at_5_above_mean']:.3f}" in sentence
    references = metrics["concept_precision_references"]
    assert f"an oracle (the species' own colours) scores {references['oracle']:.3f}" in precision.help
    # a bundle evaluated before presence thresholds keeps its sentence about the training mean
    old = {"concept_top5": {k: top5[k] for k in ("true", "wrong_colour", "distractor", "nuisance")}}
    old["concept_top5"]["positives_per_image"] = 4.8
    assert view.top5_sentence(old).startswith("What fills each test image's top five positive concepts")
    assert "4.8 concepts per image score above their training mean" in view.top5_sentence(old)
    assert view.references_note({}) == ""
    assert view.top5_sentence({}) is None and view.top5_sentence({"concept_top5": {"true": 0.5}}) is None


def test_quality_tab_shows_how_each_concept_reads_its_part(page, toy):
    stored = toy[0].metrics["concept_separation"]["per_concept"]
    assert stored, "the tiny ToyBirds bundle keeps some species-colour concept"
    open_tab(page, QUALITY)
    table = next(d.value for d in page.dataframe if "ROC AUC" in d.value.columns)
    assert table["concept"].tolist() == list(stored)
    columns = [("ROC AUC", "auc"), ("mean z, present", "present"), ("mean z, elsewhere", "elsewhere")]
    for column, key in columns:
        np.testing.assert_allclose(table[column], np.round([stored[c][key] for c in stored], 3))
    assert view.separation_table({}).empty and view.separation_table({"concept_separation": {}}).empty


def test_cluster_table_sizes_match_the_stored_clusters(page, toy):
    clusters = toy[2]
    open_tab(page, CLUSTERS)
    table = next(d.value for d in page.dataframe if "top concepts" in d.value.columns)
    sizes = dict(zip(table["cluster"], table["size"], strict=True))
    assert sizes == {int(c): int(n) for c, n in zip(*np.unique(clusters, return_counts=True), strict=True)}


def test_colouring_switches_between_clusters_and_true_labels(page, toy):
    open_tab(page, MAP)
    page.radio(key="ceir_colour").set_value("cluster").run()
    by_cluster = {t["name"] for t in chart(page, 0)["data"]}
    assert by_cluster == {f"cluster {c}" for c in np.unique(toy[2])}
    page.radio(key="ceir_colour").set_value("true label").run()
    by_label = {t["name"] for t in chart(page, 0)["data"]}
    classes = toy[0].config["classes"]
    assert by_label == {classes[y] for y in toy[0].arrays["train_labels"]}
    page.radio(key="ceir_colour").set_value("cluster").run()


@pytest.mark.parametrize("index", [0, 5])
def test_bar_chart_shows_the_chosen_image_contributions(page, toy, index):
    loaded, vectors, _, contributions = toy
    open_tab(page, ONE_IMAGE)
    page.selectbox(key="ceir_image").set_value(index).run()
    bars = chart(page, BARS)["data"][0]
    expected = top_contributions(loaded.concepts, vectors[index], contributions[index], k=10)
    assert list(bars["y"]) == [c.label for c in expected][::-1]
    np.testing.assert_allclose(
        decode(bars["x"]), [c.contribution for c in expected][::-1], rtol=1e-4, atol=1e-6
    )
    assert any(label.startswith("NOT ") for label in bars["y"]) == any(c.activation < 0 for c in expected)
    # the concepts present in the image: above Otsu's cut of their training scores (never below the mean)
    thresholds = np.array([max(0.0, otsu_threshold(vectors[:, j])) for j in range(vectors.shape[1])])
    present = sorted(
        (j for j in range(len(thresholds)) if vectors[index, j] > thresholds[j]),
        key=lambda j: -vectors[index, j],
    )
    caption = next(c.value for c in page.caption if "presence threshold" in c.value)
    shown = present[: view.PRESENT_SHOWN]
    if present:
        assert caption.endswith(", ".join(loaded.concepts[j] for j in shown) + ".")
    else:
        assert caption == "No concept is above its presence threshold in this image."
    # more than the sentence names: all of them in a table, on demand
    tables = [d.value for d in page.dataframe if "above it by" in d.value.columns]
    if len(present) > view.PRESENT_SHOWN:
        assert f"{len(present)} concepts, the {view.PRESENT_SHOWN} highest: " in caption
        assert [table["concept"].tolist() for table in tables] == [[loaded.concepts[j] for j in present]]
    else:
        assert tables == []


def test_sliders_intervene_on_the_top_concepts(page, toy):
    loaded, vectors, _, contributions = toy
    open_tab(page, ONE_IMAGE)
    page.selectbox(key="ceir_image").set_value(0).run()
    editable = view.intervention_concepts(contributions[0], 5)
    keys = [s.key for s in page.slider]
    assert keys == [f"ceir_iv_0_{i}" for i in editable]
    untouched = distance_bars(page)
    np.testing.assert_allclose(  # atol: an image on its centre sits at 0 up to float rounding
        untouched, intervene(loaded.model, torch.from_numpy(vectors[0]), {}).distances, 1e-5, 1e-6
    )

    target = editable[0]
    page.slider(key=f"ceir_iv_0_{target}").set_value(-3.0).run()
    moved = distance_bars(page)
    expected = intervene(loaded.model, torch.from_numpy(vectors[0]), {target: -3.0})
    np.testing.assert_allclose(moved, expected.distances, rtol=1e-5, atol=1e-6)
    assert not np.allclose(moved, untouched)
    after = next(m for m in page.metric if m.label == "Cluster after the edit")
    assert after.value == str(expected.cluster)
    page.button(key="ceir_iv_reset").click().run()
    assert page.slider(key=f"ceir_iv_0_{target}").value == view.slider_start(vectors[0, target])


def test_reset_pushes_the_start_values_to_the_browser_sliders(page, toy):
    """The browser keeps a slider's own value unless the proto says ``set_value``: a reset that only forgets
    the state left the sliders showing the edits, and the next touch sent them all back."""
    _, vectors, _, contributions = toy
    open_tab(page, ONE_IMAGE)
    page.selectbox(key="ceir_image").set_value(0).run()
    editable = view.intervention_concepts(contributions[0], 5)
    first, second = editable[0], editable[1]
    page.slider(key=f"ceir_iv_0_{first}").set_value(3.0).run()
    page.slider(key=f"ceir_iv_0_{second}").set_value(-3.0).run()
    page.button(key="ceir_iv_reset").click().run()
    for i in editable:
        proto = page.slider(key=f"ceir_iv_0_{i}").proto
        assert proto.set_value, i
        assert list(proto.value) == pytest.approx([view.slider_start(vectors[0, i])])
    after = next(m for m in page.metric if m.label == "Cluster after the edit")
    assert "unchanged" in str(after.proto.delta)
    # Touching one slider afterwards brings none of the old edits back.
    page.slider(key=f"ceir_iv_0_{editable[2]}").set_value(view.slider_start(vectors[0, editable[2]])).run()
    assert page.slider(key=f"ceir_iv_0_{first}").value == view.slider_start(vectors[0, first])
    assert page.slider(key=f"ceir_iv_0_{second}").value == view.slider_start(vectors[0, second])


def test_lasso_selection_shows_the_images_and_their_shared_concepts(page, toy):
    loaded, vectors, _, contributions = toy
    open_tab(page, MAP)
    assert any("Select points" in i.value for i in page.info)
    rows = [1, 2, 7]
    select_points(page, rows)
    assert not page.exception, [e.value for e in page.exception]
    assert "Selected images (3)" in [s.value for s in page.subheader]
    shared = next(d.value for d in page.dataframe if "label" in d.value.columns and len(d.value) <= 8)
    expected = view.selection_concepts(loaded.concepts, vectors, contributions, rows)
    assert shared["label"].tolist() == [c.label for c in expected]
    # the grid: one picture per selected image (the one-image tab is not drawn)
    assert len(page.image) == len(rows)


def test_a_new_selection_opens_its_first_image_in_the_one_image_panel(page, toy):
    loaded, vectors, _, contributions = toy
    open_tab(page, ONE_IMAGE)
    page.selectbox(key="ceir_image").set_value(0).run()
    open_tab(page, MAP)
    select_points(page, [9, 4, 6])
    assert not page.exception, [e.value for e in page.exception]
    assert "Download selected_images (PNG)" in {b.label for b in page.get("download_button")}
    open_tab(page, ONE_IMAGE)
    assert page.selectbox(key="ceir_image").value == 4
    bars = chart(page, BARS)["data"][0]
    expected = top_contributions(loaded.concepts, vectors[4], contributions[4], k=10)
    assert list(bars["y"]) == [c.label for c in expected][::-1]
    assert [s.key for s in page.slider][0].startswith("ceir_iv_4_")
    # The picker stays free: choosing another image is not undone by the selection.
    page.selectbox(key="ceir_image").set_value(5).run()
    assert page.selectbox(key="ceir_image").value == 5
    open_tab(page, MAP)
    select_points(page, [1])  # a click on one point
    open_tab(page, ONE_IMAGE)
    assert page.selectbox(key="ceir_image").value == 1
    open_tab(page, MAP)


def test_a_selected_image_opens_in_the_one_image_tab_with_a_button(page, toy):
    open_tab(page, MAP)
    select_points(page, [3, 8, 11])
    loaded, clusters = toy[0], toy[2]
    ids = [str(i) for i in loaded.arrays.get("train_ids", np.arange(len(clusters)))]
    assert page.selectbox(key="ceir_selected_pick").options == [
        f"#{ids[i][-6:]} (cluster {clusters[i]})"
        for i in (3, 8, 11)  # short names of the stored ids
    ]
    page.selectbox(key="ceir_selected_pick").set_value(11).run()
    page.button(key="ceir_selected_open").click().run()
    assert not page.exception, [e.value for e in page.exception]
    assert [s.value for s in page.subheader][0] == "One image's concepts"  # the tab opened
    assert page.selectbox(key="ceir_image").value == 11
    open_tab(page, MAP)


def test_cluster_composition_sits_next_to_the_cluster_table(page, toy):
    loaded = toy[0]
    clusters, labels = loaded.arrays["train_clusters"], loaded.arrays["train_labels"]
    classes = loaded.config["classes"]
    open_tab(page, CLUSTERS)
    table = next(d.value for d in page.dataframe if "purity" in d.value.columns)
    assert table["cluster"].tolist() == sorted(set(clusters.tolist()))
    for row in table.itertuples(index=False):
        members = labels[clusters == row.cluster]
        counts = np.bincount(members, minlength=len(classes))
        assert row.size == len(members)
        assert row.purity == pytest.approx(counts.max() / len(members))
        assert counts[classes.index(row._2)] == counts.max()
        listed = {part.rsplit(" ", 1)[0]: int(part.rsplit(" ", 1)[1]) for part in row.species.split(", ")}
        assert listed == {classes[y]: int(n) for y, n in enumerate(counts) if n}
    assert "Download cluster_composition (CSV)" in {b.label for b in page.get("download_button")}


def test_intervention_chart_has_a_legend_and_downloads(page):
    open_tab(page, ONE_IMAGE)
    page.selectbox(key="ceir_image").set_value(0).run()
    figure = chart(page, DISTANCES)
    assert figure["layout"]["showlegend"] is True
    names = {trace["name"] for trace in figure["data"]}
    assert "other clusters" in names
    assert names & {"the image's cluster before the edit", "its cluster, before and after the edit"}
    labels = {b.label for b in page.get("download_button")}
    wanted = {"Download intervention_distances_", "Download top_concepts_"}
    for start in wanted:
        assert any(label.startswith(start) and label.endswith("(HTML)") for label in labels), start
    assert any(
        label.startswith("Download intervention_distances_") and label.endswith("(CSV)") for label in labels
    )


def ceir_loads(monkeypatch, refuse: bool = False) -> list[str]:
    """Replace the page's CEIR loader by one that fails the test (``refuse``) or one that loads and counts."""
    from lens import bundles

    view_of_kind = bundles.KIND_VIEWS["ceir"]
    real = getattr(view_of_kind.load, "real", view_of_kind.load)
    loads: list[str] = []

    def load(path, mtime):
        if refuse:
            raise AssertionError("the CEIR page loaded the model")
        loads.append(path)
        return real(path, mtime)

    load.real = real
    monkeypatch.setitem(
        bundles.KIND_VIEWS, "ceir", view_of_kind.__class__(**{**vars(view_of_kind), "load": load})
    )
    return loads


def test_page_draws_from_the_arrays_and_loads_the_model_at_the_first_edit(dashboard, monkeypatch, toy):
    """A bundle storing its train contributions: the first render (contributions, clusters, the untouched
    intervention) never asks for the model; moving a slider loads it, and the edit is the model's."""
    loaded, vectors, _, contributions = toy
    ceir_loads(monkeypatch, refuse=True)
    app = dashboard("ceir_concepts")
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error, [e.value for e in app.error]
    for tab in (CLUSTERS, QUALITY, ONE_IMAGE):
        open_tab(app, tab)
        assert not app.exception, [e.value for e in app.exception]
    index = app.selectbox(key="ceir_image").value
    bars = chart(app, BARS)["data"][0]
    expected = top_contributions(loaded.concepts, vectors[index], contributions[index], k=10)
    assert list(bars["y"]) == [c.label for c in expected][::-1]
    np.testing.assert_allclose(
        decode(bars["x"]), [c.contribution for c in expected][::-1], rtol=1e-4, atol=1e-6
    )
    untouched = intervene(loaded.model, torch.from_numpy(vectors[index]), {})
    np.testing.assert_allclose(distance_bars(app), untouched.distances, rtol=1e-5, atol=1e-6)
    before = next(m for m in app.metric if m.label == "Cluster before")
    assert before.value == str(untouched.cluster)
    editable = view.intervention_concepts(contributions[index], 5)
    assert [s.key for s in app.slider] == [f"ceir_iv_{index}_{i}" for i in editable]

    loads = ceir_loads(monkeypatch)
    target = editable[0]
    app.slider(key=f"ceir_iv_{index}_{target}").set_value(-3.0).run()
    assert not app.exception, [e.value for e in app.exception]
    assert loads  # the edit needed the model
    edited = intervene(loaded.model, torch.from_numpy(vectors[index]), {target: -3.0})
    np.testing.assert_allclose(distance_bars(app), edited.distances, rtol=1e-5)
    after = next(m for m in app.metric if m.label == "Cluster after the edit")
    assert after.value == str(edited.cluster)


def test_a_bundle_saved_without_contributions_gets_them_from_the_model(dashboard, monkeypatch, toy):
    loaded, vectors, _, contributions = toy
    monkeypatch.setattr(view, "stored_contributions", lambda arrays: None)  # as a bundle saved before
    loads = ceir_loads(monkeypatch)
    app = dashboard("ceir_concepts")
    assert not app.exception, [e.value for e in app.exception]
    open_tab(app, ONE_IMAGE)
    app.selectbox(key="ceir_image").set_value(5).run()
    bars = chart(app, BARS)["data"][0]
    expected = top_contributions(loaded.concepts, vectors[5], contributions[5], k=10)
    assert list(bars["y"]) == [c.label for c in expected][::-1]
    assert loads


# ----------------------------------------------------------------------------------------------------------
# Plain helpers
# ----------------------------------------------------------------------------------------------------------


def test_selected_indices_reads_customdata_and_ignores_junk():
    selection = {
        "points": [
            {"customdata": [4, "id4"], "point_index": 0},
            {"customdata": [2], "point_index": 1},
            {"customdata": [4], "point_index": 0},  # duplicate
            {"point_index": 3},  # no customdata: its point index
            {"customdata": [99]},  # out of range
            {"customdata": ["x"]},  # not a number
        ]
    }
    assert view.selected_indices(selection, 10) == [2, 3, 4]
    assert view.selected_indices(None, 10) == []
    assert view.selected_indices({"points": []}, 10) == []


def test_metrics_table_orders_methods_and_skips_missing_ones():
    metrics = {"acc": 0.5, "nmi": 0.25, "ari": 0.125, "baselines": {"concepts": {"acc": 0.2, "nmi": 0.1}}}
    table = view.metrics_table(metrics)
    assert table["method"].tolist() == ["CEIR", "k-means on concept vectors"]
    assert table.iloc[0][["ACC", "NMI", "ARI"]].tolist() == [0.5, 0.25, 0.125]
    assert np.isnan(table.iloc[1]["ARI"])
    assert view.metrics_table({}).empty


def test_selection_and_cluster_concepts_by_hand():
    concepts = ["wing", "head", "tail"]
    activations = np.array([[1.0, -1.0, 0.5], [3.0, -3.0, -0.5], [0.0, 2.0, 1.0]])
    contributions = np.array([[0.2, 0.4, -0.1], [0.6, 0.2, -0.3], [0.0, 0.9, 0.1]])
    picked = view.selection_concepts(concepts, activations, contributions, [0, 1])
    # means: wing 0.4 (act 2), head 0.3 (act -2 -> NOT head), tail -0.2 (dropped: not positive)
    assert [(c.label, round(c.contribution, 6)) for c in picked] == [("wing", 0.4), ("NOT head", 0.3)]
    assert view.selection_concepts(concepts, activations, contributions, []) == []
    table = view.cluster_table(concepts, activations, contributions, np.array([0, 0, 1]), k=2)
    assert table.to_dict("records") == [
        {"cluster": 0, "size": 2, "top concepts": "wing, NOT head"},
        {"cluster": 1, "size": 1, "top concepts": "head, tail"},
    ]


def test_cluster_composition_by_hand():
    clusters = np.array([0, 0, 0, 1, 1, 2])
    labels = np.array([1, 1, 0, 0, 2, 7])
    table = view.cluster_composition(clusters, labels, ["finch", "wren", "crow"])
    assert table.to_dict("records") == [
        {"cluster": 0, "size": 3, "majority species": "wren", "purity": 2 / 3, "species": "wren 2, finch 1"},
        {"cluster": 1, "size": 2, "majority species": "crow", "purity": 0.5, "species": "crow 1, finch 1"},
        {"cluster": 2, "size": 1, "majority species": "7", "purity": 1.0, "species": "7 1"},
    ]
    with pytest.raises(ValueError, match="3 cluster assignments but 2 labels"):
        view.cluster_composition(clusters[:3], labels[:2], [])


def test_contribution_tables_and_file_names():
    items = [ConceptContribution("wing", "NOT wing", -1.0, 0.5)]
    assert view.contributions_table(items).to_dict("records") == [
        {"label": "NOT wing", "concept": "wing", "activation": -1.0, "contribution": 0.5}
    ]
    full = view.image_contributions_table(
        ["a", "b", "c"], np.array([1.0, -1.0, 2.0]), np.array([0.1, -0.5, 0.2])
    )
    assert full["label"].tolist() == ["NOT b", "c", "a"]
    assert view.file_safe("toybirds/train/seed0/000001") == "toybirds_train_seed0_000001"
    assert view.file_safe("///") == "image"


def test_slider_helpers_only_turn_moved_sliders_into_edits():
    assert view.slider_bounds(0.4) == (-3.0, 3.0)
    assert view.slider_bounds(4.2) == (-3.0, 5.0)
    assert view.slider_bounds(-3.5) == (-4.0, 3.0)
    assert view.slider_start(1.234) == 1.25
    activations = np.array([1.234, -0.5, 2.0])
    values = {0: 1.25, 1: 2.0, 2: 2.0}
    assert view.edits_from_sliders([0, 1, 2], activations, values) == {1: 2.0}
    assert view.intervention_concepts(np.array([0.1, -0.9, 0.5, 0.0]), 2) == [1, 2]


def test_distances_table_marks_before_and_after():
    table = view.distances_table(np.array([1.0, 0.5, 2.0]), original=0, edited=1)
    assert table["role"].tolist() == ["before", "after", "other"]
    same = view.distances_table(np.array([0.1, 0.5]), original=0, edited=0)
    assert same["role"].tolist() == ["before & after", "other"]


def test_train_contributions_in_batches_equal_one_batch(toy):
    loaded, vectors, clusters, contributions = toy
    batched = view.train_contributions(loaded.model, vectors, clusters, batch_size=7)
    np.testing.assert_allclose(batched, contributions, rtol=1e-5, atol=1e-7)


def test_stored_contributions_are_the_models(toy, tiny_bundles):
    """The contributions the toy bundle stores are those the model computes (None for an older bundle)."""
    from core.bundle import read_bundle_arrays

    _, _, _, contributions = toy
    arrays = read_bundle_arrays(tiny_bundles / "toy-ceir", view.ARRAYS)
    np.testing.assert_allclose(view.stored_contributions(arrays), contributions, rtol=1e-5, atol=1e-6)
    assert view.stored_contributions({}) is None


def test_untouched_intervention_from_the_stored_arrays_is_the_models(toy, tiny_bundles):
    loaded, vectors, clusters, _ = toy
    centres = view.cluster_centres(str(tiny_bundles / "toy-ceir"))
    np.testing.assert_array_equal(centres, loaded.model.cluster_centers.numpy())
    latents = loaded.arrays[view.TRAIN_LATENTS]
    for row in range(len(vectors)):
        before, after = view.unedited(vectors[row], latents[row], centres)
        model_before, _ = view.intervention(loaded.model, vectors[row], {})
        assert before is after and before.cluster == model_before.cluster == clusters[row]
        np.testing.assert_allclose(before.distances, model_before.distances, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(before.latent, model_before.latent, rtol=1e-5, atol=1e-6)


def test_cluster_centres_of_a_bundle_that_cannot_give_them_raise(tmp_path, tiny_bundles):
    import shutil

    from core.bundle import BundleError

    path = shutil.copytree(tiny_bundles / "toy-ceir", tmp_path / "b")
    (path / "weights.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(BundleError, match="corrupt"):
        view.cluster_centres(str(path))
    (path / "weights.safetensors").unlink()
    with pytest.raises(OSError):
        view.cluster_centres(str(path))


def test_umap_frame_names_classes_and_keeps_row_indices():
    frame = view.umap_frame(
        np.array([[0.0, 1.0], [2.0, 3.0]]), np.array([1, 0]), np.array([0, 5]), ["finch", "wren"], ["a", "b"]
    )
    assert isinstance(frame, pd.DataFrame)
    assert frame["index"].tolist() == [0, 1]
    assert frame["cluster"].tolist() == ["cluster 1", "cluster 0"]
    assert frame["true label"].tolist() == ["finch", "5"]  # an unknown class id shows as its number


def test_protocols_table_shows_mean_and_std_under_both_protocols():
    scores = {"acc": 0.9, "acc_std": 0.01, "nmi": 0.8, "nmi_std": 0.02}
    metrics = {
        "protocols": {
            "inductive": {"ceir": scores, "clip_embedding": scores | {"acc": 0.95}},
            "transductive": {"ceir": scores | {"acc": 0.5, "acc_std": 0.1}},
        }
    }
    table = view.protocols_table(metrics)
    assert list(table["method"]) == ["CEIR", "k-means on CLIP embeddings"]
    ceir = table.iloc[0]
    assert ceir["inductive ACC"] == "0.900 ± 0.010" and ceir["transductive ACC"] == "0.500 ± 0.100"
    assert pd.isna(table.iloc[1]["transductive ACC"])  # not measured: left empty, not invented
    assert view.protocols_table({"acc": 0.9}).empty  # a bundle from before the protocols


def test_filter_table_lists_every_removed_concept_with_its_filter():
    config = {
        "concept_bank": {
            "removed": {
                "class_relevance": {"webbed feet": "says little about the class"},
                "near_duplicate": {"spotted wing": "near-duplicate of 'striped wing'"},
                "length": {},
            }
        }
    }
    table = view.filter_table(config)
    assert table.to_dict("records") == [
        {"concept": "webbed feet", "filter": "class relevance", "reason": "says little about the class"},
        {"concept": "spotted wing", "filter": "near-duplicate", "reason": "near-duplicate of 'striped wing'"},
    ]
    old = view.filter_table({"concept_bank": {"removed": {"x": "low fidelity"}}})  # a flat, older bundle
    assert old.to_dict("records") == [{"concept": "x", "filter": "", "reason": "low fidelity"}]
    assert view.filter_table({}).empty


def test_ceir_page_shows_what_the_filters_removed(page, toy):
    removed = toy[0].config["concept_bank"]["removed"]
    expected = sorted(c for why in removed.values() for c in why)
    open_tab(page, QUALITY)
    tables = [d.value for d in page.dataframe if list(d.value.columns) == ["concept", "filter", "reason"]]
    if expected:
        assert len(tables) == 1 and sorted(tables[0]["concept"]) == expected
    else:
        assert tables == []
    kept = [c.value for c in page.caption if c.value.startswith("Kept: ")]
    assert kept == ["Kept: " + ", ".join(toy[0].concepts)]
    template = toy[0].config["concept_bank"]["template"]
    assert template == "a photo of a bird with a {}."  # the toybirds bank's
    assert any(f"“{template}”" in c.value for c in page.caption)
