"""The two ConceptHash views: the plain helpers in ``lens.hashing`` against hand-made codes, and the
pages "Hash codes, bit by bit" and "Concept attention" through AppTest on the tiny bundles."""

from __future__ import annotations

import base64
import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.concepthash.evaluate import subcode_values

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dashboard"))

from lens import hashing  # noqa: E402

# Five images, four bits, two concepts (c0 = columns 0-1, c1 = columns 2-3).
CODES = np.array(
    [
        [1, -1, 1, 1],  # 1011
        [-1, -1, 1, -1],  # 0010
        [1, -1, -1, 1],  # 1001
        [-1, -1, 1, -1],  # 0010 (same as #1)
        [-1, 1, -1, -1],  # 0100
    ],
    dtype=np.int8,
)
LABELS = np.array([0, 1, 0, 1, 1])


# --- plain helpers --------------------------------------------------------------------------------


def test_bit_labels_and_uneven_split():
    assert hashing.bit_labels(6, 3) == ["c0·b0", "c0·b1", "c1·b0", "c1·b1", "c2·b0", "c2·b1"]
    with pytest.raises(ValueError, match="7 bits cannot be split evenly over 3 concepts"):
        hashing.bit_labels(7, 3)


def test_bit_matrix_order_by_hand():
    assert hashing.bit_matrix_order(CODES, LABELS, "original").tolist() == [0, 1, 2, 3, 4]
    # code: 0010 (#1), 0010 (#3, tie keeps database order), 0100 (#4), 1001 (#2), 1011 (#0)
    assert hashing.bit_matrix_order(CODES, LABELS, "code").tolist() == [1, 3, 4, 2, 0]
    # class 0 = {#0 1011, #2 1001} -> #2, #0; class 1 = {#1 0010, #3 0010, #4 0100} -> #1, #3, #4
    assert hashing.bit_matrix_order(CODES, LABELS, "class").tolist() == [2, 0, 1, 3, 4]
    with pytest.raises(ValueError, match="Sort mode must be one of"):
        hashing.bit_matrix_order(CODES, LABELS, "random")
    with pytest.raises(ValueError, match="5 codes but 4 labels"):
        hashing.bit_matrix_order(CODES, LABELS[:4], "class")


def test_bit_matrix_order_matches_brute_force():
    rng = np.random.default_rng(3)
    codes = np.where(rng.random((60, 8)) > 0.5, 1, -1).astype(np.int8)
    labels = rng.integers(0, 5, 60)
    by_class = sorted(range(60), key=lambda i: (labels[i], tuple(codes[i]), i))
    by_code = sorted(range(60), key=lambda i: (tuple(codes[i]), i))
    assert hashing.bit_matrix_order(codes, labels, "class").tolist() == by_class
    assert hashing.bit_matrix_order(codes, labels, "code").tolist() == by_code


def test_images_by_bit_splits_on_and_off():
    on, off = hashing.images_by_bit(CODES, 2, n=10, seed=0)
    assert sorted(on.tolist()) == [0, 1, 3] and sorted(off.tolist()) == [2, 4]
    on, off = hashing.images_by_bit(CODES, 1, n=10, seed=0, labels=LABELS)
    assert on.tolist() == [4] and sorted(off.tolist()) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="Bit 4 does not exist"):
        hashing.images_by_bit(CODES, 4)


def test_images_by_bit_sample_is_balanced_across_classes_and_seeded():
    codes = np.ones((12, 2), dtype=np.int8)
    labels = np.repeat([0, 1, 2], 4)
    for n, per_class in ((3, 1), (6, 2)):
        on, off = hashing.images_by_bit(codes, 0, n=n, seed=1, labels=labels)
        assert len(off) == 0 and len(set(on.tolist())) == n
        assert np.bincount(labels[on], minlength=3).tolist() == [per_class] * 3
    same = hashing.images_by_bit(codes, 0, n=6, seed=1, labels=labels)[0]
    assert same.tolist() == hashing.images_by_bit(codes, 0, n=6, seed=1, labels=labels)[0].tolist()
    draws = {tuple(hashing.images_by_bit(codes, 0, n=6, seed=s, labels=labels)[0]) for s in range(6)}
    assert len(draws) > 1, "another seed draws another sample"


def test_images_by_subcode_and_bit_strings():
    groups = hashing.images_by_subcode(CODES, 1, 2)
    # c1 bits (b0, b1): #0 (1,1)=3, #1 (1,0)=1, #2 (0,1)=2, #3 (1,0)=1, #4 (0,0)=0
    assert {v: g.tolist() for v, g in groups.items()} == {0: [4], 1: [1, 3], 2: [2], 3: [0]}
    assert list(groups) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="Concept 2 does not exist"):
        hashing.images_by_subcode(CODES, 2, 2)
    assert hashing.subcode_bits(2, 2) == "01" and hashing.subcode_bits(1, 3) == "100"
    with pytest.raises(ValueError, match="does not fit in 2 bits"):
        hashing.subcode_bits(4, 2)


def test_format_code_agrees_with_subcode_values():
    assert hashing.format_code(np.array([1, -1, -1, 1, 1, -1, 1, -1]), 2) == "c0: 1001  c1: 1010"
    rng = np.random.default_rng(0)
    codes = np.where(rng.random((40, 12)) > 0.5, 1, -1).astype(np.int8)
    values = subcode_values(codes, 3)
    for row, vals in zip(codes, values, strict=True):
        assert hashing.code_groups(row, 3) == [hashing.subcode_bits(int(v), 4) for v in vals]


def test_image_helpers():
    pixels = np.arange(6 * 10 * 3, dtype=np.uint8).reshape(6, 10, 3)
    square = hashing.center_square(Image.fromarray(pixels))
    assert np.array_equal(np.asarray(square), pixels[:, 2:8])
    assert hashing.display_image(Image.new("RGB", (32, 32)), 192).size == (192, 192)
    assert hashing.display_image(Image.new("RGB", (400, 300)), 192).size == (256, 192)
    mask = np.array([[True, False], [False, True]])
    assert hashing.resize_mask(mask, (4, 4)).tolist() == np.kron(mask, np.ones((2, 2), bool)).tolist()
    strip = hashing.image_strip([Image.new("RGB", (10, 10), "red"), Image.new("RGB", (5, 5), "blue")], gap=4)
    assert strip.size == (10 + 4 + 10, 10)
    assert strip.getpixel((0, 0)) == (255, 0, 0) and strip.getpixel((12, 5)) == (255, 255, 255)
    assert strip.getpixel((14, 9)) == (0, 0, 255)


def test_tables_from_metrics():
    metrics = {
        "subcode_part_nmi": {"parts": ["head", "tail"], "matrix": [[0.5, 0.1], [0.2, 0.9]]},
        "localization": {"concepts": [{"concept": 1, "part": "tail", "hit_rate": 0.8, "random": 0.1},
                                      {"concept": 0, "part": "head", "hit_rate": 0.6, "random": 0.2}]},
    }
    nmi = hashing.nmi_table(metrics)
    assert nmi.to_dict("list") == {"concept": ["c0", "c1"], "head": [0.5, 0.2], "tail": [0.1, 0.9]}
    local = hashing.localisation_table(metrics)
    assert local["concept"].tolist() == ["c0", "c1"] and local["part"].tolist() == ["head", "tail"]
    assert local["hit rate"].tolist() == [0.6, 0.8] and local["random baseline"].tolist() == [0.2, 0.1]
    assert hashing.concept_parts(metrics) == {1: "tail", 0: "head"}
    assert hashing.nmi_table({}) is None and hashing.localisation_table({}) is None


def test_bit_matrix_figure():
    order = hashing.bit_matrix_order(CODES, LABELS, "code")
    fig = hashing.bit_matrix_figure(CODES, LABELS, order, 2, ["a", "b"])
    heat = fig.data[0]
    assert np.array_equal(np.asarray(heat.z), (CODES[order] > 0).astype(int))
    assert list(heat.x) == ["c0·b0", "c0·b1", "c1·b0", "c1·b1"]
    assert [shape.x0 for shape in fig.layout.shapes] == [1.5]
    assert list(heat.y) == ["#1 b", "#3 b", "#4 b", "#2 a", "#0 a"]  # image and class name per row


# --- the model helpers on a tiny bundle -----------------------------------------------------------


@pytest.fixture(scope="module")
def loaded(tiny_bundles):
    from core.concepthash.train import load_concepthash

    return load_concepthash(tiny_bundles / "toy-hash-csd", device="cpu")


@pytest.fixture(scope="module")
def db_images(loaded):
    from core.data.spec import open_split

    split = open_split(loaded.data, "train")
    return [split.image(i) for i in range(4)]


def test_heatmaps_and_codes_of_database_images(loaded, db_images):
    last = hashing.heatmaps_for(loaded, db_images, "last", batch_size=3)
    rollout = hashing.heatmaps_for(loaded, db_images, "rollout")
    assert last.shape == rollout.shape == (4, 3, 32, 32)
    assert last.min() >= 0 and last.max() <= 1 and np.allclose(last.max(axis=(2, 3)), 1)
    assert not np.allclose(last, rollout)
    assert np.array_equal(last[1:2], hashing.heatmaps_for(loaded, db_images[1:2], "last"))
    assert np.array_equal(hashing.encode_images(loaded, db_images), loaded.arrays["db_codes"][:4])
    assert hashing.heatmaps_for(loaded, [], "last").shape == (0, 3, 32, 32)


# --- pages through AppTest ------------------------------------------------------------------------


def images(app) -> list[tuple[str, str]]:
    """(caption, url) of every image on the page; the url names the image's bytes."""
    return [(caption, url) for element in app.get("image")
            for caption, url in zip(element.captions, element.value, strict=True)]


def chart_z(chart) -> np.ndarray:
    """The z matrix of a plotly chart's first trace (plotly sends numpy arrays as base64 'bdata')."""
    z = json.loads(chart.proto.spec)["data"][0]["z"]
    if isinstance(z, dict):
        shape = tuple(int(n) for n in z["shape"].split(","))
        return np.frombuffer(base64.b64decode(z["bdata"]), dtype=z["dtype"]).reshape(shape)
    return np.array(z)


def markdown_text(app) -> str:
    return "\n".join(m.value for m in app.markdown)


def test_hash_codes_page(dashboard, loaded):
    codes, labels = loaded.arrays["db_codes"], loaded.arrays["db_labels"]
    app = dashboard("hash_codes")
    assert not app.exception, [e.value for e in app.exception]
    charts = app.get("plotly_chart")
    assert len(charts) == 2, "bit matrix and sub-code/part NMI"
    order = hashing.bit_matrix_order(codes, labels, "class")
    assert np.array_equal(chart_z(charts[0]), codes[order] > 0)
    assert np.allclose(chart_z(charts[1]), loaded.metrics["subcode_part_nmi"]["matrix"])
    local = app.dataframe[0].value
    assert local["part"].tolist() == [c["part"] for c in loaded.metrics["localization"]["concepts"]]
    assert {b.label for b in app.get("download_button")} >= {
        "Download bit-matrix (HTML)", "Download subcode-part-nmi (CSV)"}

    # bit c0·b0: 12 + 12 images (48 in the database, both sides have more than 12)
    n_on = int((codes[:, 0] > 0).sum())
    assert f"c0·b0 on (+1)** — {n_on} of 48 images" in markdown_text(app)
    shown = images(app)
    assert len(shown) == min(12, n_on) + min(12, 48 - n_on)

    app.radio(key="hash_sort").set_value("code").run()
    by_code = hashing.bit_matrix_order(codes, labels, "code")
    assert not np.array_equal(by_code, order)
    assert np.array_equal(chart_z(app.get("plotly_chart")[0]), codes[by_code] > 0)

    app.checkbox(key="hash_overlay").uncheck().run()
    plain = images(app)
    assert [c for c, _ in plain] == [c for c, _ in shown] and [u for _, u in plain] != [u for _, u in shown]

    app.radio(key="hash_pick").set_value("Sub-code").run()
    app.selectbox(key="hash_subcode").set_value(2).run()
    assert not app.exception, [e.value for e in app.exception]
    groups = hashing.images_by_subcode(codes, 2, 3)
    text = markdown_text(app)
    for value, members in groups.items():
        assert f"**value {value}** · bits `{hashing.subcode_bits(value, 2)}` · {len(members)} images" in text
    assert len(images(app)) == sum(min(6, len(m)) for m in groups.values())
    assert "on (+1)" not in text


def overlays(app) -> list[tuple[str, str]]:
    return [(c, u) for c, u in images(app) if c.startswith("concept ")]


def test_concept_attention_page_database_image(dashboard, loaded):
    codes, labels = loaded.arrays["db_codes"], loaded.arrays["db_labels"]
    app = dashboard("concept_attention")
    assert not app.exception, [e.value for e in app.exception]
    first = overlays(app)
    assert len(first) == 3, "one overlay per concept"
    assert f"`{hashing.format_code(codes[0], 3)}`" in markdown_text(app)
    assert [c for c, _ in images(app)][-4:] == ["head", "wing", "body", "tail"]
    assert app.get("download_button")[0].label == "Download the overlays (PNG)"

    app.radio(key="attn_method").set_value("Rollout").run()
    rollout = overlays(app)
    assert len(rollout) == 3 and {u for _, u in rollout}.isdisjoint({u for _, u in first})
    app.slider(key="attn_opacity").set_value(0.9).run()
    assert {u for _, u in overlays(app)}.isdisjoint({u for _, u in rollout})

    cls = loaded.config["classes"][5]
    app.selectbox(key="attn_class").set_value(cls).run()
    members = np.flatnonzero(labels == 5).tolist()
    assert app.select_slider(key="attn_index").options == [f"#{i}" for i in members]
    app.select_slider(key="attn_index").set_value(members[-1]).run()
    assert not app.exception, [e.value for e in app.exception]
    code = hashing.format_code(codes[members[-1]], 3)
    assert f"**#{members[-1]} · {cls}** — code `{code}`" in markdown_text(app)


def jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_concept_attention_page_uploads(dashboard, loaded):
    from skimage import data

    photo = Image.fromarray(data.chelsea())
    app = dashboard("concept_attention")
    app.radio(key="attn_source").set_value("Upload").run()
    assert not app.exception and not overlays(app)

    app.file_uploader(key="attn_upload").set_value(("chelsea.jpg", jpeg_bytes(photo), "image/jpeg")).run()
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error
    assert len(overlays(app)) == 3
    assert "head" not in [c for c, _ in images(app)], "no part masks for an upload"
    from core.data.images import load_image

    expected = hashing.encode_images(loaded, [hashing.center_square(load_image(jpeg_bytes(photo)))])[0]
    assert f"**chelsea.jpg** — code `{hashing.format_code(expected, 3)}`" in markdown_text(app)

    broken = jpeg_bytes(photo)[:2000]
    for name, content in (("broken.jpg", broken), ("notes.png", b"just some text, not an image\n")):
        app.file_uploader(key="attn_upload").set_value((name, content, "image/png")).run()
        assert not app.exception, [e.value for e in app.exception]
        assert len(app.error) == 1 and name in app.error[0].value
        assert not overlays(app)


def test_pages_without_part_annotations(dashboard, monkeypatch):
    from core.data.spec import DataSpec

    monkeypatch.setattr(DataSpec, "has_parts", property(lambda self: False))
    app = dashboard("hash_codes")
    assert not app.exception, [e.value for e in app.exception]
    assert len(app.get("plotly_chart")) == 1, "the bit matrix only, no NMI chart"
    assert any("needs data with part annotations" in i.value for i in app.info)
    app = dashboard("concept_attention")
    assert not app.exception, [e.value for e in app.exception]
    assert len(overlays(app)) == 3 and "head" not in [c for c, _ in images(app)]
