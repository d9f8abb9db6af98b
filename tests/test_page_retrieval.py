"""The retrieval page (with vs without L_csd): its plain helpers, checked against brute force and
hand-made configs, and the page itself through AppTest on the tiny bundles."""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from core.retrieval import pack_codes
from lens.retrieval import (
    class_key,
    data_differences,
    data_mismatch,
    default_pair,
    first_tie_group,
    knows_class,
    metrics_table,
    precision_of,
    result_caption,
    results_table,
    search,
    table_for_display,
    tie_sentence,
    tie_table,
)

PAGE = "retrieval"
CAPTION = re.compile(r"^#(\d+) · d=(\d+)( · [✓✗])?$")


# --------------------------------------------------------------------------------------------------
# plain helpers
# --------------------------------------------------------------------------------------------------


def brute_force(db: np.ndarray, query: np.ndarray, k: int) -> list[tuple[int, int]]:
    """(index, distance) of the k nearest codes by counting differing signs; ties by index."""
    distances = [int((row != query).sum()) for row in db]
    return sorted(((i, d) for i, d in enumerate(distances)), key=lambda p: (p[1], p[0]))[:k]


def random_queries(bits: int, n_queries: int):
    """A seeded database of 300 random ±1 codes, packed, and ``n_queries`` random query codes."""
    rng = np.random.default_rng(bits)
    db = rng.choice(np.array([-1, 1], dtype=np.int8), size=(300, bits))
    queries = [rng.choice(np.array([-1, 1], dtype=np.int8), size=bits) for _ in range(n_queries)]
    return db, pack_codes(db), queries


@pytest.mark.parametrize("bits", [6, 12, 70])
def test_search_matches_brute_force_including_tie_order(bits):
    db, packed, queries = random_queries(bits, 5)
    for q, query in enumerate(queries):
        for k in (1, 7, 40):
            hits = search(packed, query, k)
            expected = brute_force(db, query, k)
            assert hits["rank"].tolist() == list(range(1, k + 1))
            assert list(zip(hits["index"], hits["distance"], strict=True)) == expected, (bits, q, k)


def test_search_of_a_database_code_finds_it_first_and_caps_k():
    db = np.array([[1, 1, -1], [1, -1, -1], [1, 1, -1], [-1, -1, 1]], dtype=np.int8)
    hits = search(pack_codes(db), db[2], 10)
    # rows 0 and 2 are identical (distance 0): the smaller index comes first, then row 1, then row 3.
    assert hits["index"].tolist() == [0, 2, 1, 3]
    assert hits["distance"].tolist() == [0, 0, 1, 3]
    with pytest.raises(ValueError, match="one code"):
        search(pack_codes(db), db[:2], 2)


@pytest.mark.parametrize("bits", [6, 12])
def test_tie_table_counts_every_distance_like_brute_force(bits):
    db, packed, queries = random_queries(bits, 4)
    for query in queries:
        distances = (db != query).sum(axis=1)
        for k in (1, 8, 40, 500):
            ties = tie_table(packed, query, k)
            values = sorted(set(distances.tolist()))
            assert ties["distance"].tolist() == values
            assert ties["database images"].tolist() == [int((distances == d).sum()) for d in values]
            assert ties["database images"].sum() == len(db)
            # ranks and the top-k share follow the brute-force ranking (distance, then index)
            ranked = brute_force(db, query, len(db))
            for row in ties.itertuples(index=False):
                ranks = [r for r, (_, d) in enumerate(ranked, 1) if d == row.distance]
                first, last = ranks[0], ranks[-1]
                assert row.ranks == (str(first) if first == last else f"{first}–{last}")
                assert row._3 == sum(r <= k for r in ranks)
            nearest, group = first_tie_group(packed, query)
            assert nearest == distances.min()
            assert group.tolist() == [i for i, d in ranked if d == nearest]


def test_tie_sentence_says_where_the_top_k_cut_a_tie():
    ties = pd.DataFrame(
        {"distance": [0, 1], "database images": [3, 10], "ranks": ["1–3", "4–13"], "in the top k": [3, 5]}
    )
    sentence = tie_sentence(ties, 8)
    assert "5 of the 10 images at distance 1" in sentence and "the other 5 are exactly as close" in sentence
    assert "ranked by database index, smaller first" in sentence
    whole = ties.assign(**{"in the top k": [3, 0]})
    assert tie_sentence(whole, 3).startswith("The top 3 hold whole distance groups")


def info(name: str, weight: float | None, seed: int = 0, backbone: str = "clip-a", mode: str = "concepts"):
    model = {"mode": mode} | ({} if weight is None else {"csd_weight": weight})
    data = {"kind": "toybirds", "seed": seed, "image_size": 64}
    return SimpleNamespace(
        name=name, path=f"/b/{name}", config={"model": model, "data": data, "backbone": {"bundle": backbone}}
    )


def names(pair) -> tuple[str, str]:
    return pair[0].name, pair[1].name


def test_default_pair_prefers_csd_and_nocsd_with_same_data_and_backbone():
    infos = [
        info("alpha", 1.0, seed=3),
        info("beta", 0.0, backbone="clip-b"),
        info("plain", 0.0),
        info("toybirds-concepthash-csd", 0.5),
        info("toybirds-concepthash-nocsd", 0.0),
        info("z", 2.0),
    ]
    assert names(default_pair(infos)) == ("toybirds-concepthash-csd", "toybirds-concepthash-nocsd")
    assert names(default_pair(infos[::-1])) == ("toybirds-concepthash-csd", "toybirds-concepthash-nocsd")
    # without the named pair: a valid with/without pair (same data and backbone), first in list order
    assert names(default_pair(infos[:3] + infos[5:])) == ("z", "plain")
    # no pair shares data and backbone: any with/without pair
    assert names(default_pair([info("a", 1.0, seed=1), info("b", 0.0)])) == ("a", "b")


def test_default_pair_falls_back_to_the_first_bundles():
    assert names(default_pair([info("a", 1.0), info("b", 1.0), info("c", None)])) == ("a", "b")
    assert names(default_pair([info("only", 0.0)])) == ("only", "only")
    assert default_pair([]) is None


def test_data_mismatch_names_both_data_sets():
    assert data_mismatch(info("a", 1.0).config, info("b", 0.0).config) is None
    message = data_mismatch(info("a", 1.0, seed=0).config, info("b", 0.0, seed=7).config)
    assert "seed: 0 vs 7" in message


def test_data_comparison_names_what_differs_and_nothing_else():
    """Two ToyBirds bundles that differ only in images per class read "toybirds (seed 0, 64 px) vs toybirds
    (seed 0, 64 px)" before: the sentence must say what differs."""
    base = {"kind": "toybirds", "seed": 0, "image_size": 64, "train_per_class": 40, "test_per_class": 10}
    assert data_differences({"data": base}, {"data": dict(base)}) == []
    more = {"data": base | {"train_per_class": 170}}
    assert data_differences({"data": base}, more) == ["train images per class: 40 vs 170"]
    assert "train images per class: 40 vs 170" in data_mismatch({"data": base}, more)
    older = {"data": {k: v for k, v in base.items() if k != "test_per_class"}}  # filled in: the default 10
    assert data_differences({"data": base}, older) == []
    folder = {"data": {"kind": "folder", "root": "/data/birds"}}
    assert data_differences({"data": base}, folder) == ["data set: toybirds vs folder"]
    assert data_differences(folder, {"data": {"kind": "folder", "root": "/data/cars"}}) == [
        "folder: /data/birds vs /data/cars"
    ]
    assert (
        data_differences(folder, {"data": {"kind": "folder", "root": "/data/birds", "image_size": 224}}) == []
    )


def test_class_names_compare_across_naming_styles():
    assert class_key("024.Red_faced_Cormorant") == class_key("red faced cormorant") == "red faced cormorant"
    assert class_key("Red faced  Cormorant") == "red faced cormorant"
    assert class_key("Cormorant 2") == "cormorant 2", "a number at the end is part of the name"
    assert knows_class(["001.Black_footed_Albatross", "024.Red_faced_Cormorant"], "red faced cormorant")
    assert not knows_class(["azure sparrow"], "red faced cormorant") and not knows_class(["x"], None)


def test_results_of_a_model_that_does_not_know_the_query_class_are_not_marked_wrong():
    hits = pd.DataFrame({"rank": [1, 2], "index": [0, 1], "distance": [0, 3]})
    cub = ["001.Black_footed_Albatross", "024.Red_faced_Cormorant"]
    table = results_table("b", hits, ["x", "y"], [1, 0], cub, "red faced cormorant")
    assert table["correct"].tolist() == [True, False], "the same species named the CUB way"
    other = results_table(
        "b", hits, ["x", "y"], [1, 0], ["azure sparrow", "ebony pipit"], "red faced cormorant"
    )
    assert other["correct"].isna().all() and precision_of(other) is None


def test_metrics_table_copies_the_stored_metrics():
    stored = {
        "map": 0.5,
        "precision_at": {"1": 0.25, "10": 0.75, "5": 0.5},
        "diversity": 0.125,
        "localization": {"mean_hit_rate": 0.6, "random_baseline": 0.1},
    }
    configs = {
        "with": {"model": {"csd_weight": 1.0}, "metrics": stored},
        "without": {"model": {"csd_weight": 0.0}, "metrics": {"map": 0.25, "precision_at": {"1": 0.5}}},
    }
    table = metrics_table(configs)
    assert table.columns.tolist() == [
        "model",
        "L_csd weight",
        "mAP",
        "P@1",
        "P@5",
        "P@10",
        "diversity",
        "mean hit rate",
        "random hit rate",
    ]
    first = table.iloc[0]
    assert (first["model"], first["L_csd weight"], first["mAP"]) == ("with", 1.0, 0.5)
    assert (first["P@1"], first["P@5"], first["P@10"]) == (0.25, 0.5, 0.75)
    assert (first["diversity"], first["mean hit rate"], first["random hit rate"]) == (0.125, 0.6, 0.1)
    second = table.iloc[1]
    assert (second["mAP"], second["P@1"], second["L_csd weight"]) == (0.25, 0.5, 0.0)
    assert all(math.isnan(second[c]) for c in ("P@5", "P@10", "diversity", "mean hit rate"))


def test_results_table_marks_and_precision():
    hits = pd.DataFrame({"rank": [1, 2, 3], "index": [2, 0, 1], "distance": [0, 1, 1]})
    ids, labels, classes = ["id0", "id1", "id2"], np.array([1, 0, 1]), ["crow", "finch"]
    table = results_table("m", hits, ids, labels, classes, "finch")
    assert table.columns.tolist() == ["rank", "model", "database id", "distance", "correct", "class"]
    assert table["database id"].tolist() == ["id2", "id0", "id1"]
    assert table["correct"].tolist() == [True, True, False]
    assert precision_of(table) == pytest.approx(2 / 3)
    unknown = results_table("m", hits, ids, labels, classes, None)
    assert unknown["correct"].isna().all() and precision_of(unknown) is None
    assert result_caption(1, 0, True) == "#1 · d=0 · ✓"
    assert result_caption(3, 2, False) == "#3 · d=2 · ✗"
    assert result_caption(2, 5, unknown["correct"][0]) == "#2 · d=5"


# --------------------------------------------------------------------------------------------------
# the page
# --------------------------------------------------------------------------------------------------


def result_columns(app):
    """Captions of the result images of the two result columns (the ones with '#rank' captions)."""
    found = []
    for column in app.columns:
        for image in column.image:
            if image.captions and CAPTION.match(image.captions[0]):
                found.append([CAPTION.match(c).groups() for c in image.captions])
    return found


def query_and_database(bundle: Path, query_index: int):
    """Independent of the page: the code of test image ``query_index`` and the loaded bundle."""
    from core.concepthash import load_concepthash
    from core.concepthash.evaluate import sign_codes
    from core.data.spec import open_split

    loaded = load_concepthash(bundle, device="cpu")
    image = open_split(loaded.data, "test").image(query_index)
    return sign_codes(loaded.model.encode(loaded.backbone.preprocess_images([image])))[0], loaded


def expected_hits(bundle: Path, query_index: int, k: int) -> list[tuple[str, int]]:
    """Brute force: encode test image ``query_index``, compare all db codes."""
    code, loaded = query_and_database(bundle, query_index)
    db = loaded.arrays["db_codes"]
    return [(str(loaded.arrays["db_ids"][i]), d) for i, d in brute_force(db, code, k)]


def shown_hits(app, model: str) -> list[tuple[str, int]]:
    """(database id, distance) of ``model``'s rows in the page's results table, in rank order."""
    results = app.dataframe[0].value
    rows = results[results["model"] == model]
    return list(zip(rows["database id"], rows["distance"].astype(int), strict=True))


def test_page_compares_the_csd_pair_side_by_side(dashboard, tiny_bundles):
    app = dashboard(PAGE)
    assert not app.exception, [e.value for e in app.exception]
    assert app.selectbox(key="ret_model_a").value.endswith("toy-hash-csd")
    assert app.selectbox(key="ret_model_b").value.endswith("toy-hash-nocsd")
    k = app.slider(key="ret_k").value
    columns = result_columns(app)
    assert len(columns) == 2 and all(len(c) == k for c in columns)
    for column in columns:
        ranks = [int(r) for r, _, _ in column]
        distances = [int(d) for _, d, _ in column]
        assert ranks == list(range(1, k + 1)) and distances == sorted(distances)
        assert all(mark in (" · ✓", " · ✗") for _, _, mark in column)

    assert len(app.dataframe[0].value) == 2 * k
    for name in ("toy-hash-csd", "toy-hash-nocsd"):
        assert shown_hits(app, name) == expected_hits(tiny_bundles / name, 0, k)

    metrics = next(d.value for d in app.dataframe if "mAP" in d.value.columns).set_index("model")
    for name in ("toy-hash-csd", "toy-hash-nocsd"):
        stored = json.loads((tiny_bundles / name / "config.json").read_text())["metrics"]
        row = metrics.loc[name]
        assert row["mAP"] == pytest.approx(stored["map"])
        assert row["P@5"] == pytest.approx(stored["precision_at"]["5"])
        assert row["diversity"] == pytest.approx(stored["diversity"])
        assert row["mean hit rate"] == pytest.approx(stored["localization"]["mean_hit_rate"])
        assert row["random hit rate"] == pytest.approx(stored["localization"]["random_baseline"])
    assert any("conceptlens eval" in c.value for c in app.caption)

    heatmaps = [
        image
        for column in app.columns
        for image in column.image
        if image.captions and image.captions[0].startswith("concept 0")
    ]
    assert [len(h.captions) for h in heatmaps] == [3, 3]  # M = 3 concepts per model

    app.slider(key="ret_k").set_value(3).run()
    assert not app.exception
    assert [len(c) for c in result_columns(app)] == [3, 3]
    assert len(app.dataframe[0].value) == 6

    app.selectbox(key="ret_query").set_value(5).run()
    assert shown_hits(app, "toy-hash-csd") == expected_hits(tiny_bundles / "toy-hash-csd", 5, 3)


def concept_heatmaps_shown(app) -> list:
    """The two models' rows of concept heatmaps (captions starting "concept 0")."""
    return [
        image
        for column in app.columns
        for image in column.image
        if image.captions and image.captions[0].startswith("concept 0")
    ]


def test_both_sides_may_show_the_same_model(dashboard, tiny_bundles):
    """One ConceptHash bundle on both sides (a folder with only one, or a person's choice): no clash."""
    app = dashboard(PAGE)
    csd = app.selectbox(key="ret_model_a").value
    app.selectbox(key="ret_model_b").set_value(csd).run()
    assert not app.exception, [e.value for e in app.exception]
    assert any("Both sides show the same model" in i.value for i in app.info)
    k = app.slider(key="ret_k").value
    assert [len(c) for c in result_columns(app)] == [k, k]
    assert shown_hits(app, "toy-hash-csd") == 2 * expected_hits(tiny_bundles / "toy-hash-csd", 0, k)  # a, b
    assert len(concept_heatmaps_shown(app)) == 2


def test_page_searches_with_a_test_image_without_loading_a_model(dashboard, tiny_bundles, monkeypatch):
    """A test image's code and last-layer heatmaps come from the arrays each bundle stores: the first draw
    asks for no model and finds what the models find; the rollout heatmaps load both models."""
    from tests.test_page_hashing import count_model_asks

    asks = count_model_asks(monkeypatch)
    app = dashboard(PAGE)
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error, [e.value for e in app.error]
    assert asks == [], "the first draw loaded a model"
    k = app.slider(key="ret_k").value
    results = app.dataframe[0].value
    for name in ("toy-hash-csd", "toy-hash-nocsd"):
        assert shown_hits(app, name) == expected_hits(tiny_bundles / name, 0, k)
    last = concept_heatmaps_shown(app)
    assert [len(h.captions) for h in last] == [3, 3]

    app.radio(key="ret_method").set_value("rollout").run()
    assert not app.exception, [e.value for e in app.exception]
    assert set(asks) == {str(tiny_bundles / "toy-hash-csd"), str(tiny_bundles / "toy-hash-nocsd")}
    assert app.dataframe[0].value.equals(results), "the same code, whichever heatmaps"
    rollout = concept_heatmaps_shown(app)
    assert [len(h.captions) for h in rollout] == [3, 3]
    assert {u for h in rollout for u in h.value}.isdisjoint({u for h in last for u in h.value})


def test_upload_query_loads_the_models(dashboard, tiny_bundles, monkeypatch):
    from skimage import data

    from tests.test_page_hashing import count_model_asks

    asks = count_model_asks(monkeypatch)
    app = dashboard(PAGE)
    app.radio(key="ret_source").set_value("Upload").run()
    assert asks == []
    app.file_uploader(key="ret_upload").set_value(("cat.png", png(data.chelsea()), "image/png")).run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    assert set(asks) == {str(tiny_bundles / "toy-hash-csd"), str(tiny_bundles / "toy-hash-nocsd")}
    assert [len(c) for c in result_columns(app)] == [app.slider(key="ret_k").value] * 2


def test_bundles_saved_without_the_query_arrays_encode_the_query(
    dashboard, tiny_bundles, tmp_path, monkeypatch
):
    """Bundles saved before they stored the test split's arrays: the models encode the query, same results."""
    from core.bundle import read_bundle_arrays, update_bundle_arrays
    from core.concepthash.arrays import ARRAYS, QUERY_ARRAYS
    from tests.test_page_hashing import count_model_asks

    for name in ("toy-hash-csd", "toy-hash-nocsd"):
        path = Path(shutil.copytree(tiny_bundles / name, tmp_path / name))
        arrays = read_bundle_arrays(path, ARRAYS)
        (path / "arrays.safetensors").unlink()
        (path / "arrays.json").unlink()
        update_bundle_arrays(path, {n: a for n, a in arrays.items() if n not in QUERY_ARRAYS.shapes})
    monkeypatch.setenv("CONCEPTLENS_BUNDLES", str(tmp_path))
    asks = count_model_asks(monkeypatch)
    app = dashboard(PAGE)
    assert not app.exception, [e.value for e in app.exception]
    assert set(asks) == {str(tmp_path / "toy-hash-csd"), str(tmp_path / "toy-hash-nocsd")}
    k = app.slider(key="ret_k").value
    for name in ("toy-hash-csd", "toy-hash-nocsd"):
        assert shown_hits(app, name) == expected_hits(tiny_bundles / name, 0, k)
    assert [len(h.captions) for h in concept_heatmaps_shown(app)] == [3, 3]


def png(array: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def test_upload_query_searches_without_marks(dashboard):
    from skimage import data

    app = dashboard(PAGE)
    app.radio(key="ret_source").set_value("Upload").run()
    app.file_uploader(key="ret_upload").set_value(("cat.png", png(data.chelsea()), "image/png")).run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    k = app.slider(key="ret_k").value
    columns = result_columns(app)
    assert [len(c) for c in columns] == [k, k]
    assert all(mark is None for column in columns for _, _, mark in column)
    assert app.dataframe[0].value["correct"].isna().all()
    assert any("cat.png" in caption for image in app.image for caption in image.captions)


@pytest.mark.parametrize(
    "name, content",
    [
        ("broken.jpg", None),  # a truncated JPEG, filled in below
        ("notes.png", b"these are my notes, not an image\n" * 20),
    ],
)
def test_broken_upload_gives_one_error_naming_the_file(dashboard, name, content):
    from skimage import data

    if content is None:
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(data.astronaut()).save(buffer, format="JPEG")
        content = buffer.getvalue()[:2000]
    app = dashboard(PAGE)
    app.radio(key="ret_source").set_value("Upload").run()
    app.file_uploader(key="ret_upload").set_value((name, content, "image/png")).run()
    assert not app.exception
    assert len(app.error) == 1 and name in app.error[0].value
    assert result_columns(app) == []


def test_models_with_different_data_get_a_warning(tiny_bundles, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import HOME

    other = tmp_path / "toy-hash-seed7"
    shutil.copytree(tiny_bundles / "toy-hash-nocsd", other)
    config = json.loads((other / "config.json").read_text())
    config["data"]["seed"] = 7
    (other / "config.json").write_text(json.dumps(config))
    monkeypatch.setenv("CONCEPTLENS_BUNDLES", os.pathsep.join([str(tiny_bundles), str(tmp_path)]))
    app = AppTest.from_file(str(HOME), default_timeout=120).run()
    app.switch_page(f"views/{PAGE}.py").run()
    assert app.selectbox(key="ret_model_b").value.endswith("toy-hash-nocsd")
    assert not app.warning
    app.selectbox(key="ret_model_b").set_value(str(other)).run()
    assert not app.exception
    assert len(app.warning) == 1 and "seed: 0 vs 7" in app.warning[0].value
    assert [len(c) for c in result_columns(app)] == [app.slider(key="ret_k").value] * 2


def test_metrics_table_marks_diversity_and_csd_weight_not_applicable_for_the_cls_baseline():
    """A CLS bundle has one attention map: 'diversity 0' and an L_csd weight would read as real results."""
    stored = {"map": 0.4, "diversity": 0.0, "localization": {"mean_hit_rate": 0.3, "random_baseline": 0.1}}
    configs = {
        "cls": {"model": {"mode": "cls", "csd_weight": 0.0}, "metrics": stored},
        "csd": {"model": {"mode": "concepts", "csd_weight": 1.0}, "metrics": stored | {"diversity": 0.25}},
    }
    table = metrics_table(configs).set_index("model")
    assert table.loc["cls", "diversity"] == "n/a (one map)"
    assert table.loc["cls", "L_csd weight"] == "n/a (one map)"
    assert table.loc["cls", "mAP"] == pytest.approx(0.4)
    assert table.loc["csd", "diversity"] == pytest.approx(0.25)
    assert table.loc["csd", "L_csd weight"] == pytest.approx(1.0)
    shown = table_for_display(table.reset_index())
    assert shown["diversity"].tolist() == ["n/a (one map)", "0.25"]
    assert shown["L_csd weight"].tolist() == ["n/a (one map)", "1"]
    assert shown["mAP"].tolist() == pytest.approx([0.4, 0.4])
    plain = metrics_table({"csd": configs["csd"]})
    assert plain["diversity"].dtype.kind == "f", "numeric columns stay numeric without a CLS bundle"


def test_heatmaps_of_a_wide_upload_lie_on_the_centre_crop_the_model_saw(dashboard, monkeypatch):
    """The model sees only the centre square of a non-square query, so the maps are drawn on that square (the
    concept-attention page's code path), not stretched over the whole rectangle."""
    import lens.figures
    from lens.hashing import center_square, model_view

    drawn: list = []
    original = lens.figures.overlay

    def recording(image, heatmap, opacity=0.5):
        drawn.append(image.convert("RGB"))
        return original(image, heatmap, opacity)

    monkeypatch.setattr(lens.figures, "overlay", recording)
    from PIL import Image

    wide = Image.new("RGB", (96, 32), (0, 0, 255))
    wide.paste((255, 0, 0), (32, 0, 64, 32))  # only the centre third is red
    buffer = io.BytesIO()
    wide.save(buffer, "PNG")
    app = dashboard(PAGE)
    app.radio(key="ret_source").set_value("Upload").run()
    drawn.clear()
    app.file_uploader(key="ret_upload").set_value(("wide.png", buffer.getvalue(), "image/png")).run()
    assert not app.exception, [e.value for e in app.exception]
    assert len(drawn) == 6  # 3 concepts x 2 models
    assert all(image.width == image.height for image in drawn), [image.size for image in drawn]
    # The blue sides were never seen by the model, so none of them may lie under a heatmap.
    assert all((np.asarray(image) == [255, 0, 0]).all() for image in drawn)

    shown = model_view(wide, 160)
    assert shown.size == (160, 160)
    assert (np.asarray(shown) == [255, 0, 0]).all(), "only the centre crop is shown"
    assert model_view(center_square(wide), 160).tobytes() == shown.tobytes()


def test_page_counts_ties_at_each_distance_and_shows_the_first_tie_group(dashboard, tiny_bundles):
    app = dashboard(PAGE)
    assert not app.exception, [e.value for e in app.exception]
    k = app.slider(key="ret_k").value
    assert "Ties: how many database images share each distance" in [s.value for s in app.subheader]
    ties = [d.value for d in app.dataframe if "database images" in d.value.columns]
    assert len(ties) == 2
    for name, table in zip(("toy-hash-csd", "toy-hash-nocsd"), ties, strict=True):
        code, loaded = query_and_database(tiny_bundles / name, 0)
        distances = (loaded.arrays["db_codes"] != code).sum(axis=1)
        values, counts = np.unique(distances, return_counts=True)
        assert table["distance"].tolist() == values.tolist()
        assert table["database images"].tolist() == counts.tolist()
        assert table["in the top k"].sum() == min(k, len(distances))
    assert sum("ranked by database index" in c.value for c in app.caption) == 2
    labels = {b.label for b in app.get("download_button")}
    for name in ("toy-hash-csd", "toy-hash-nocsd"):
        assert {
            f"Download ties-{name} (CSV)",
            f"Download heatmaps-{name} (PNG)",
            f"Download results-{name} (PNG)",
        } <= labels

    # the whole first tie group of model A, in database-index order
    code, loaded = query_and_database(tiny_bundles / "toy-hash-csd", 0)
    distances = (loaded.arrays["db_codes"] != code).sum(axis=1)
    group = np.flatnonzero(distances == distances.min())
    box = next(c for c in app.checkbox if c.key.startswith("ret_tie_group_") and "toy-hash-csd" in c.key)
    assert f"({len(group)} images at distance {distances.min()})" in box.label
    box.check().run()
    assert not app.exception, [e.value for e in app.exception]
    ids = loaded.arrays["db_ids"]
    captions = [c for image in app.image for c in image.captions if re.match(r"^#\d+ · (?!d=)", c)]
    assert captions == [f"#{r} · {ids[i]}" for r, i in enumerate(group, 1)]
    assert "Download first-tie-group-toy-hash-csd (CSV)" in {b.label for b in app.get("download_button")}


def test_heatmaps_are_named_by_their_part_and_carry_a_colour_scale(dashboard, tiny_bundles):
    from lens.hashing import concept_label, concept_names

    app = dashboard(PAGE)
    for name in ("toy-hash-csd", "toy-hash-nocsd"):
        metrics = json.loads((tiny_bundles / name / "config.json").read_text())["metrics"]
        names, _ = concept_names(metrics)
        wanted = [concept_label(m, names) for m in range(3)]
        assert any(list(image.captions) == wanted for image in app.image), wanted
    # the colour scale: an image without a caption after the heatmaps
    assert any(not any(image.captions) for image in app.image)


# --------------------------------------------------------------------------------------------------
# the queries' arrays a bundle stores
# --------------------------------------------------------------------------------------------------


def test_stored_query_arrays_are_what_the_model_gives_each_test_image(tiny_bundles):
    """Evaluation stores the test split's codes, ids and last-layer attention; encoding one test image at a
    time (what the page does for a query) gives the same code and, to float16, the same attention."""
    from core.bundle import read_bundle_arrays
    from core.concepthash import load_concepthash
    from core.concepthash.arrays import QUERY_ARRAYS, QUERY_ATTENTION, QUERY_CODES, QUERY_IDS
    from core.concepthash.attention import concept_attention_maps
    from core.concepthash.evaluate import sign_codes
    from core.data.spec import open_split

    for name in ("toy-hash-csd", "toy-hash-nocsd"):
        stored = read_bundle_arrays(tiny_bundles / name, QUERY_ARRAYS)
        loaded = load_concepthash(tiny_bundles / name, device="cpu")
        queries = open_split(loaded.data, "test")
        assert stored[QUERY_CODES].shape == (len(queries), 6)
        assert stored[QUERY_ATTENTION].shape == (len(queries), 3, 4, 4)  # 32 px / 8 px patches
        assert stored[QUERY_IDS].tolist() == [queries.image_id(i) for i in range(len(queries))]
        for i in range(len(queries)):
            pixels = loaded.backbone.preprocess_images([queries.image(i)])
            np.testing.assert_array_equal(sign_codes(loaded.model.encode(pixels))[0], stored[QUERY_CODES][i])
            maps = concept_attention_maps(loaded.model, pixels).numpy()[0]
            np.testing.assert_allclose(stored[QUERY_ATTENTION][i].astype(np.float32), maps, atol=1e-3)


def test_stored_query_stands_in_for_the_model_only_when_it_fits():
    from core.concepthash.codes import upsample_maps
    from lens.retrieval import stored_query

    rng = np.random.default_rng(0)
    arrays = {
        "db_codes": np.ones((5, 6), dtype=np.int8),
        "query_codes": rng.choice(np.array([-1, 1], dtype=np.int8), size=(3, 6)),
        "query_ids": np.array(["q0", "q1", "q2"]),
        "query_attention": rng.random((3, 3, 4, 4)).astype(np.float16),
    }

    def bundle(**changed):
        config = {"model": {"n_concepts": 3, "mode": "concepts"}}
        return SimpleNamespace(
            arrays={**arrays, **changed},
            db_codes=arrays["db_codes"],
            config=config,
            data=SimpleNamespace(image_size=8),
        )

    code, heatmaps = stored_query(bundle(), 1, "q1")
    np.testing.assert_array_equal(code, arrays["query_codes"][1])
    expected = upsample_maps(arrays["query_attention"][1:2].astype(np.float32), 8)[0]
    np.testing.assert_allclose(heatmaps, expected)
    assert heatmaps.shape == (3, 8, 8)
    assert stored_query(bundle(), 1, "q2") is None, "another image at that index"
    assert stored_query(bundle(), 3, "q3") is None, "beyond the stored queries"
    assert stored_query(bundle(query_codes=None), 1, "q1") is None, "a bundle saved before"
    assert stored_query(bundle(query_codes=np.ones((3, 8), dtype=np.int8)), 1, "q1") is None, "other bits"
    assert stored_query(bundle(query_attention=arrays["query_attention"][:, :1]), 1, "q1") is None
    assert stored_query(bundle(query_ids=np.array(["q0", "q1"])), 1, "q1") is None


def test_query_arrays_added_to_a_bundle_saved_without_them(tiny_bundles, tmp_path):
    from core.bundle import read_bundle_arrays, update_bundle_arrays
    from core.concepthash.arrays import ARRAYS, QUERY_ARRAYS, QUERY_ATTENTION, QUERY_CODES, QUERY_IDS
    from core.concepthash.evaluate import add_view_arrays

    path = Path(shutil.copytree(tiny_bundles / "toy-hash-csd", tmp_path / "old"))
    stored = read_bundle_arrays(path, QUERY_ARRAYS)
    weights = (path / "weights.safetensors").read_bytes()
    old = {name: array for name, array in stored.items() if name not in QUERY_ARRAYS.shapes}
    (path / "arrays.safetensors").unlink()
    (path / "arrays.json").unlink()
    update_bundle_arrays(path, old)  # the bundle as saved before it held the queries' arrays
    assert not set(QUERY_ARRAYS.shapes) & set(read_bundle_arrays(path, ARRAYS))
    add_view_arrays(str(path), device="cpu")
    again = read_bundle_arrays(path, QUERY_ARRAYS)
    np.testing.assert_array_equal(again[QUERY_CODES], stored[QUERY_CODES])
    np.testing.assert_array_equal(again[QUERY_IDS], stored[QUERY_IDS])
    np.testing.assert_allclose(again[QUERY_ATTENTION], stored[QUERY_ATTENTION], atol=1e-3)
    assert (path / "weights.safetensors").read_bytes() == weights
