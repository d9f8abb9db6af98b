"""The open-world labels page (AppTest on the tiny bundles): uploads, samples, models, banks, downloads."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from core.ceir.bundle import load_ceir
from core.ceir.concept_bank import ConceptBank, parse_concepts
from core.ceir.labels import (
    NO_FIT,
    NO_LABELS,
    SCORING_SIMILARITY,
    ConceptScore,
    ImageLabels,
    LabelReport,
    SimilarityLabeller,
    label_images,
)
from core.data.images import load_image
from lens import labels as view


def encoded(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def files() -> dict[str, bytes]:
    from skimage import data

    jpeg = encoded(data.astronaut(), "JPEG")
    return {
        "coffee.png": encoded(data.coffee(), "PNG"),
        "astronaut.jpg": jpeg,
        "truncated.jpg": jpeg[: len(jpeg) // 3],
        "notes.png": b"These are my notes, not a picture.\n",
    }


@pytest.fixture(scope="module")
def toy(tiny_bundles):
    return load_ceir(tiny_bundles / "toy-ceir", device="cpu")


@pytest.fixture
def fresh_page(dashboard):
    app = dashboard("open_world")
    assert not app.exception, [e.value for e in app.exception]
    return app


@pytest.fixture
def page(fresh_page, tiny_bundles):
    """The page with the tiny CEIR bundle chosen as the model (the default is the offline ConSE model)."""
    return fresh_page.radio(key="ow_model").set_value(str(tiny_bundles / "toy-ceir")).run()


def upload(app, names: list[str], files: dict[str, bytes]):
    mime = {"png": "image/png", "jpg": "image/jpeg", "txt": "text/plain"}
    uploader = next(u for u in app.file_uploader if u.key == "ow_upload")
    uploader.set_value([(n, files[n], mime[n.rsplit(".", 1)[1]]) for n in names])
    return app.run()


def labels_frame(app):
    return next(d.value for d in app.dataframe if "image" in d.value.columns)


def shown_labels(app, expected: ImageLabels) -> list[str]:
    """The concepts the page shows for one image: its table when ``expected`` has labels, else none, and
    then the page says why (the bank does not fit, in the note the report gives)."""
    if expected.labels:
        return labels_frame(app)["concept"].tolist()
    assert any(NO_FIT in i.value for i in app.info), [i.value for i in app.info]
    assert not any("image" in d.value.columns for d in app.dataframe)
    return []


def test_page_offers_uploads_samples_models_and_banks(fresh_page):
    page = fresh_page
    assert "Concept labels" in [s.value for s in page.subheader]
    uploader = next(u for u in page.file_uploader if u.key == "ow_upload")
    assert uploader.accept_multiple_files
    assert "skimage: astronaut" in page.multiselect(key="ow_samples").options
    assert page.radio(key="ow_model").options == [
        "Offline ConSE model for real photos (EfficientNet-Lite0 + MiniLM)",
        "CEIR bundle: toy-ceir",
        "A real CLIP by open_clip name",
    ]
    assert page.radio(key="ow_model").index == 0, "real photos default to the offline ConSE model"
    assert "Shipped bank: general" in page.selectbox(key="ow_bank").options
    assert any("Upload images or pick sample photos" in i.value for i in page.info)
    assert not page.error


def test_uploads_good_and_bad_in_one_batch(page, files, toy):
    app = upload(page, ["coffee.png", "truncated.jpg", "notes.png", "astronaut.jpg"], files)
    assert not app.exception, [e.value for e in app.exception]
    errors = [e.value for e in app.error]
    assert len(errors) == 2
    assert any("truncated.jpg" in e for e in errors) and any("notes.png" in e for e in errors)

    table = labels_frame(app)
    assert table["image"].unique().tolist() == ["coffee.png", "astronaut.jpg"]
    expected = label_images(
        toy, [(n, load_image(files[n], name=n)) for n in ("coffee.png", "astronaut.jpg")], 5
    )
    for image in expected.images:
        rows = table[table["image"] == image.file]
        assert rows["concept"].tolist() == [label.concept for label in image.labels]
        np.testing.assert_allclose(
            rows["score"], [label.score for label in image.labels], rtol=1e-4, atol=1e-7
        )
        assert rows["rank"].tolist() == list(range(1, len(image.labels) + 1))
        assert set(rows["cluster"]) == {image.cluster}
    # beside each thumbnail, the image's own labels in rank order (a plain table)
    shown = [t.value for t in app.table]
    assert [list(t["concept"]) for t in shown] == [[x.concept for x in i.labels] for i in expected.images]
    assert all(list(t.index) == list(range(1, len(t) + 1)) for t in shown)
    assert any("contribution" in c.value and "toy-ceir" in c.value for c in app.caption)

    # two good images: candidate labels by frequency, and CSV downloads
    assert "Candidate labels for the batch" in [s.value for s in app.subheader]
    candidates = next(d.value for d in app.dataframe if "count" in d.value.columns)
    counts = Counter(table["concept"])
    assert dict(zip(candidates["concept"], candidates["count"], strict=True)) == dict(counts)
    np.testing.assert_allclose(candidates["share"], candidates["count"] / 2)  # drawn as bars, no chart
    assert not app.get("plotly_chart")
    labels = [b.label for b in app.get("download_button")]
    assert "Download concept_labels (CSV)" in labels and "Download candidate_labels (CSV)" in labels


def test_an_image_with_no_label_says_why(page, monkeypatch):
    """No concept above the training mean: a sentence instead of an empty table."""
    import core.ceir.labels as labels_module

    monkeypatch.setattr(
        labels_module,
        "labels_from_contributions",
        lambda loaded, embeddings, top_k: [([], 0) for _ in range(len(embeddings))],
    )
    plain = encoded(np.full((40, 40, 3), 123, dtype=np.uint8), "PNG")  # a picture no other test uploads
    app = upload(page, ["grey.png"], {"grey.png": plain})
    assert not app.exception, [e.value for e in app.exception]
    assert any(NO_LABELS in i.value and "grey.png" in i.value for i in app.info), [i.value for i in app.info]
    assert not any(d.value.empty for d in app.dataframe), "no empty table"


def test_top_k_and_samples_change_the_labels(page):
    page.multiselect(key="ow_samples").set_value(["skimage: chelsea"]).run()
    assert labels_frame(page)["image"].tolist() == ["skimage: chelsea"] * len(labels_frame(page))
    five = labels_frame(page)
    assert 1 <= len(five) <= 5
    page.slider(key="ow_top_k").set_value(2).run()
    two = labels_frame(page)
    assert two["concept"].tolist() == five["concept"].tolist()[:2]
    assert "Candidate labels for the batch" not in [s.value for s in page.subheader]  # one image only


def test_pasted_bank_scores_by_clip_similarity(page, toy):
    page.multiselect(key="ow_samples").set_value(["skimage: coffee"])
    page.selectbox(key="ow_bank").set_value("paste").run()
    assert any("contains no concepts" in e.value for e in page.error), "an empty list is an error"
    assert not any(d for d in page.dataframe if "image" in d.value.columns)

    page.text_area(key="ow_bank_text").set_value(
        "red head\nblue wings\nRed head\n# a comment\nlong tail"
    ).run()
    assert not page.error
    assert any("duplicates 'red head'" in w.value for w in page.warning)
    bank = parse_concepts("red head\nblue wings\nlong tail", source="pasted list")
    expected = label_images(toy, [("skimage: coffee", view_sample("skimage: coffee"))], 5, bank).images[0]
    assert shown_labels(page, expected) == [label.concept for label in expected.labels]
    if expected.labels:
        table = labels_frame(page)
        np.testing.assert_allclose(table["score"], [label.score for label in expected.labels], rtol=1e-5)
        assert "cluster" not in table.columns
    assert any("CLIP cosine similarity" in c.value for c in page.caption)


def test_a_pasted_bank_with_a_template_scores_its_captions(page, toy):
    """The page labels like ``conceptlens label``: each concept read in the bank's template line."""
    text = "# template: a photo of a bird with a {}.\nred head\nblue wing\ngreen body"
    page.multiselect(key="ow_samples").set_value(["skimage: coffee"])
    page.selectbox(key="ow_bank").set_value("paste").run()
    page.text_area(key="ow_bank_text").set_value(text).run()
    photo = [("skimage: coffee", view_sample("skimage: coffee"))]
    expected = label_images(toy, photo, 5, parse_concepts(text, source="pasted list")).images[0]
    assert shown_labels(page, expected) == [label.concept for label in expected.labels]
    if expected.labels:
        np.testing.assert_allclose(labels_frame(page)["score"], [x.score for x in expected.labels], rtol=1e-5)
    # the template changes the scores themselves (compared with the abstention switched off)
    templated = label_images(toy, photo, 5, parse_concepts(text), fit_percentile=None).images[0].labels
    plain = label_images(toy, photo, 5, parse_concepts(text.split("\n", 1)[1]), fit_percentile=None)
    assert [label.score for label in templated] != [label.score for label in plain.images[0].labels]
    assert any("each concept read as 'a photo of a bird with a {}.'" in c.value for c in page.caption)
    page.text_area(key="ow_bank_text").set_value("# template: a photo\nred head").run()
    assert not page.exception
    assert [e.value for e in page.error] == [
        "Concept bank pasted list, line 1: the template 'a photo' must hold '{}' exactly once (where the "
        "concept goes), no other brace, and at most 120 characters."
    ]
    assert not any(d for d in page.dataframe if "image" in d.value.columns)


def view_sample(label: str) -> Image.Image:
    from lens.uploads import load_sample_photo

    return load_sample_photo(label)


def test_uploaded_bank_and_a_bad_one(page, files):
    page.multiselect(key="ow_samples").set_value(["skimage: coffee"])
    page.selectbox(key="ow_bank").set_value("upload").run()
    bank_uploader = next(u for u in page.file_uploader if u.key == "ow_bank_file")
    bank_uploader.set_value(("mine.txt", b"striped tail\nyellow beak\n", "text/plain")).run()
    assert any("2 concepts from mine.txt" in c.value for c in page.caption)
    assert not page.error
    bank_uploader = next(u for u in page.file_uploader if u.key == "ow_bank_file")
    bank_uploader.set_value(("latin1.txt", "caf\xe9 au lait\n".encode("latin-1"), "text/plain")).run()
    assert any("latin1.txt" in e.value and "UTF-8" in e.value for e in page.error)
    assert not any(d for d in page.dataframe if "image" in d.value.columns)


def test_real_clip_that_cannot_load_is_one_error(page):
    page.multiselect(key="ow_samples").set_value(["skimage: coffee"])
    page.radio(key="ow_model").set_value("real-clip").run()
    assert any("Press **Load**" in i.value for i in page.info), "nothing loads before the button"
    page.text_input(key="ow_clip_name").set_value("ViT-B-32")
    page.text_input(key="ow_clip_tag").set_value("no-such-tag-xyz")
    page.button(key="ow_clip_load").click().run()
    assert not page.exception, [e.value for e in page.exception]
    errors = [e.value for e in page.error]
    assert len(errors) == 1 and "ViT-B-32:no-such-tag-xyz" in errors[0] and "Traceback" not in errors[0]
    assert not any(d for d in page.dataframe if "image" in d.value.columns)
    page.run()  # the failure is remembered: no second attempt, the same one sentence
    assert [e.value for e in page.error] == errors


def test_real_clip_offline_says_so_in_one_sentence_within_2s(page, tmp_path, monkeypatch):
    """Not cached and no network: one whole sentence at once, not a minute of spinner and a cut error."""
    import time

    import huggingface_hub.constants
    import open_clip

    from core.backbones import offline

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(offline, "host_reachable", lambda *a, **k: False)
    monkeypatch.setattr(open_clip, "create_model_and_transforms", lambda *a, **k: pytest.fail("downloaded"))
    page.radio(key="ow_model").set_value("real-clip").run()
    page.text_input(key="ow_clip_name").set_value("ViT-B-32")
    page.text_input(key="ow_clip_tag").set_value("openai")
    start = time.monotonic()
    page.button(key="ow_clip_load").click().run()
    assert time.monotonic() - start < 2.0
    (error,) = [e.value for e in page.error]
    assert error.startswith("The CLIP ViT-B-32:openai cannot be loaded") and error.endswith(".")
    assert "cannot be reached" in error and "; check the name" not in error


def test_real_clip_labels_with_clip_similarity(page, tiny_bundles, monkeypatch):
    """A stand-in for a downloaded CLIP (the toy CLIP bundle) goes through the whole real-CLIP path."""
    import core.backbones.clip as clip

    toy_clip = clip.load_backbone(str(tiny_bundles / "toy-clip"))
    monkeypatch.setattr(clip, "load_backbone", lambda spec, **kwargs: toy_clip)
    page.multiselect(key="ow_samples").set_value(["skimage: rocket"])
    page.radio(key="ow_model").set_value("real-clip").run()
    page.text_input(key="ow_clip_name").set_value("RN50")
    page.text_input(key="ow_clip_tag").set_value("openai")
    page.button(key="ow_clip_load").click().run()
    assert not page.error, [e.value for e in page.error]
    assert any("no concept bank of its own" in i.value for i in page.info)
    expected = label_images(
        SimilarityLabeller(toy_clip),
        [("skimage: rocket", view_sample("skimage: rocket"))],
        5,
        ConceptBank(list(_general()), "shipped:general"),
    )
    assert shown_labels(page, expected.images[0]) == [label.concept for label in expected.images[0].labels]
    assert any("CLIP RN50:openai" in c.value for c in page.caption)


def test_conse_labels_a_real_photo_by_default(fresh_page):
    page = fresh_page
    page.multiselect(key="ow_samples").set_value(["skimage: chelsea"]).run()
    assert not page.exception and not page.error, [e.value for e in page.error]
    assert any("no concept bank of its own" in i.value for i in page.info)
    assert "cat" in labels_frame(page)["concept"].tolist()
    assert any(
        "conse-effnet-lite0-minilm" in c.value and "'shipped:general'" in c.value for c in page.caption
    )


def test_a_bank_that_does_not_fit_the_photo_says_so(fresh_page):
    """ConSE with the cifar10 bank on a coffee cup used to show 'jet engines', 'airport tarmac'."""
    page = fresh_page
    page.multiselect(key="ow_samples").set_value(["skimage: coffee"])
    page.selectbox(key="ow_bank").set_value("cifar10").run()
    assert not page.exception and not page.error, [e.value for e in page.error]
    notes = [i.value for i in page.info]
    assert any(n.startswith(f"skimage: coffee: {NO_FIT}") for n in notes), notes
    assert not any("image" in d.value.columns for d in page.dataframe) and not page.table
    assert any("reference vocabulary" in c.value for c in page.caption)


def test_flagged_images_stay_out_of_the_batch_summary_until_asked(fresh_page, monkeypatch):
    """The first image of the batch is flagged: the candidates count only the other one until asked."""
    import core.ceir.labels as labels_module

    monkeypatch.setattr(
        labels_module, "ood_flags", lambda loaded, embeddings: [True] + [False] * (len(embeddings) - 1)
    )
    page = fresh_page
    page.slider(key="ow_top_k").set_value(4)  # a cache key no other test labels these photos with
    page.multiselect(key="ow_samples").set_value(["skimage: coffee", "skimage: chelsea"]).run()
    assert not page.exception and not page.error, [e.value for e in page.error]
    table = labels_frame(page)
    chelsea = table[table["image"] == "skimage: chelsea"]["concept"].tolist()
    assert chelsea and not table[table["image"] == "skimage: coffee"].empty
    assert any("skimage: coffee" in w.value and "unlike the images" in w.value for w in page.warning)

    def candidates():
        return next(d.value for d in page.dataframe if "count" in d.value.columns)

    assert sorted(candidates()["concept"]) == sorted(chelsea) and set(candidates()["share"]) == {1.0}
    assert any("1 of 2 images were flagged" in c.value and "tick the box" in c.value for c in page.caption)
    page.checkbox(key="ow_include_flagged").check().run()
    assert dict(zip(candidates()["concept"], candidates()["count"], strict=True)) == dict(
        Counter(table["concept"])
    )
    assert any("counted too" in c.value for c in page.caption)


def _general() -> list[str]:
    from core.ceir.concept_bank import load_bank

    return load_bank("general").concepts


# ----------------------------------------------------------------------------------------------------------
# Plain helpers
# ----------------------------------------------------------------------------------------------------------


def hand_report() -> LabelReport:
    return LabelReport(
        SCORING_SIMILARITY,
        "pasted list",
        [
            ImageLabels("a.png", [ConceptScore("red", 0.9), ConceptScore("wing", 0.5)]),
            ImageLabels("b.png", [ConceptScore("wing", 0.7)]),
        ],
    )


def test_labels_and_candidates_tables_by_hand():
    report = hand_report()
    table = view.labels_table(report)
    assert table.to_dict("records") == [
        {"image": "a.png", "rank": 1, "concept": "red", "score": 0.9},
        {"image": "a.png", "rank": 2, "concept": "wing", "score": 0.5},
        {"image": "b.png", "rank": 1, "concept": "wing", "score": 0.7},
    ]
    candidates = view.candidates_table(report)
    assert candidates.to_dict("records") == [
        {"concept": "wing", "count": 2, "share": 1.0},
        {"concept": "red", "count": 1, "share": 0.5},
    ]
    report.images[0].cluster = 3
    assert view.labels_table(report)["cluster"].tolist()[:2] == [3, 3]
    assert list(view.labels_table(LabelReport(SCORING_SIMILARITY, "x")).columns) == [
        "image",
        "rank",
        "concept",
        "score",
    ]


def test_scoring_sentence_names_model_bank_and_scoring():
    sentence = view.scoring_sentence(hand_report(), "CLIP ViT-B-32:openai")
    assert sentence.startswith("Labels by CLIP ViT-B-32:openai with the concept bank 'pasted list'")
    assert "cosine similarity" in sentence


def test_decode_bank_upload():
    assert view.decode_bank_upload("a.txt", "\ufeffwing\n".encode(), 100) == "wing\n"
    with pytest.raises(ValueError, match="big.txt is 11 bytes, more than the 10-byte limit"):
        view.decode_bank_upload("big.txt", b"x" * 11, 10)
    with pytest.raises(ValueError, match="bad.txt is not UTF-8"):
        view.decode_bank_upload("bad.txt", b"\xff\xfe\xfa", 100)


def test_image_digest_follows_pixels():
    a = Image.new("RGB", (4, 4), (10, 20, 30))
    b = Image.new("RGB", (4, 4), (10, 20, 31))
    assert view.image_digest(a) == view.image_digest(a.copy())
    assert view.image_digest(a) != view.image_digest(b)
    assert view.image_digest(a) != view.image_digest(a.resize((2, 8)))


def test_once_drawn_the_page_loads_conse_once_in_the_background(monkeypatch):
    """After a restart the page needs no model to draw (tests/test_dashboard_speed.py checks its imports);
    once drawn it loads ConSE in the background, once per process: the page's own call finds it loaded."""
    from lens import labels as lens_labels
    from lens import startup

    calls = []

    class FakeConSE:
        def encode_texts(self, texts):
            calls.append("texts")

        def encode_images(self, pixels):
            calls.append("images")

        def preprocess_images(self, images):
            return images

    import threading

    import core.backbones.clip as clip

    release = threading.Event()  # holds the background load until the test has looked at the thread

    def load_backbone(spec, **kwargs):
        release.wait(timeout=60)
        calls.append(spec)
        return FakeConSE()

    monkeypatch.setattr(clip, "load_backbone", load_backbone)
    monkeypatch.setattr(lens_labels, "_conse", None)
    monkeypatch.setattr(startup, "_thread", None)
    assert startup.start_imports(lens_labels.MODULES, then=[lens_labels.load_conse]) is None  # tests: off
    monkeypatch.delenv(startup.NO_WARM_UP)
    thread = startup.start_imports(lens_labels.MODULES, then=[lens_labels.load_conse])
    assert thread is not None and startup.start_imports() is thread  # one background thread at a time
    release.set()
    thread.join(timeout=120)
    assert isinstance(lens_labels.load_conse(), FakeConSE)  # the page's call finds it loaded
    assert calls == [lens_labels.CONSE, "texts", "images"]  # loaded once
