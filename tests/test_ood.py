"""The out-of-distribution check (core.ood): one rule for every kind of bundle, calibrated on stored reference
embeddings; real photos are flagged and ToyBirds birds are not, in core, on the pages that take uploads
(Concept attention, Retrieval) and in ``conceptlens encode``'s output."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.data.toybirds import render_sample

ROOT = Path(__file__).resolve().parents[1]
PRETRAINED = ROOT / "pretrained"
HASH_BUNDLES = ("toybirds-concepthash-csd", "toybirds-concepthash-cls")
PHOTOS = ("skimage: astronaut", "skimage: coffee", "sklearn: china.jpg")
BIRDS = range(8)  # test-split birds of the shipped bundles' data (seed 0, 64 px)


def photo(name: str):
    from core.data.samples import load_sample_photo

    return load_sample_photo(name)


def bird(index: int):
    return render_sample("test", index, seed=0, image_size=64).image


def png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def shipped_loaded():
    """Each shipped bundle the check is tested on, loaded once."""
    from core.kinds import load_any

    return {name: load_any(PRETRAINED / name, device="cpu") for name in (*HASH_BUNDLES, "toybirds-ceir")}


# ---- the rule -------------------------------------------------------------------------------------------


def test_calibration_flags_about_one_percent_of_fresh_in_distribution_points_and_every_far_one():
    import torch

    from core.ood import OODTest

    rng = np.random.default_rng(0)
    reference = rng.normal(size=(1500, 8)).astype(np.float32)
    test = OODTest.calibrate(reference)
    fresh = torch.from_numpy(rng.normal(size=(4000, 8)).astype(np.float32))
    assert 0.002 < test.flags(fresh).mean() < 0.03  # the 99th percentile of in-distribution scores
    far = fresh[:50] + 6.0
    assert test.flags(far).all()


def test_class_floor_is_what_99_percent_of_the_rows_reach_and_flags_an_image_matching_no_class():
    import torch

    from core.ood import OODTest, class_match

    rng = np.random.default_rng(1)
    classes = torch.eye(3)[:2]
    rows = np.eye(3)[:2][rng.integers(0, 2, 400)] + 0.05 * rng.normal(size=(400, 3))
    rows = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
    test = OODTest.calibrate(rows, classes)
    assert test.class_floor == pytest.approx(np.percentile(class_match(torch.from_numpy(rows), classes), 1))
    by_class_only = OODTest(test.rows, float("inf"), classes, test.class_floor)
    assert by_class_only.flags(torch.tensor([[1.0, 0.02, 0.0], [0.02, 1.0, 0.0]])).tolist() == [False, False]
    assert by_class_only.flags(torch.tensor([[0.7, 0.7, 0.0], [0.0, 0.0, 1.0]])).tolist() == [True, True]


# ---- every kind, shipped bundles -------------------------------------------------------------------------


@pytest.mark.parametrize("name", [*HASH_BUNDLES, "toybirds-ceir"])
def test_real_photos_are_flagged_and_birds_are_not(shipped_loaded, name):
    from core.ood import ood_flags

    loaded = shipped_loaded[name]
    assert ood_flags(loaded, [photo(p) for p in PHOTOS]) == [True] * len(PHOTOS)
    assert ood_flags(loaded, [bird(i) for i in BIRDS]) == [False] * len(BIRDS)


def test_ceir_labels_and_the_shared_check_agree(shipped_loaded):
    """The open-world labels' warning and core.ood flag the same images of the shipped CEIR bundle."""
    from core.ceir.labels import ood_flags as label_flags
    from core.ood import embed_images, ood_test

    loaded = shipped_loaded["toybirds-ceir"]
    images = [photo(p) for p in PHOTOS] + [bird(i) for i in range(40)]
    embeddings = embed_images(loaded.backbone, images)
    assert ood_test(loaded).flags(embeddings).tolist() == label_flags(loaded, embeddings)


@pytest.mark.parametrize("name", HASH_BUNDLES)
def test_shipped_concepthash_bundles_store_the_reference_and_its_rates(name):
    from core.bundle import read_bundle_config

    metrics = read_bundle_config(PRETRAINED / name)["metrics"]
    assert metrics["ood_photos"]["warned_share"] == 1.0 and metrics["ood_photos"]["missed"] == []
    assert metrics["ood_warned_share"] < 0.03


# ---- bundles without the reference ----------------------------------------------------------------------


def strip_reference(bundle: Path, target: Path) -> Path:
    """A copy of ``bundle`` as saved before bundles stored the reference."""
    from core.bundle import read_bundle_arrays, update_bundle_arrays
    from core.ood import OOD_REFERENCE

    path = Path(shutil.copytree(bundle, target))
    arrays = read_bundle_arrays(path)
    assert OOD_REFERENCE in arrays, "training stores the reference"
    (path / "arrays.safetensors").unlink()
    (path / "arrays.json").unlink()
    update_bundle_arrays(path, {n: a for n, a in arrays.items() if n != OOD_REFERENCE})
    return path


def test_an_older_bundle_has_no_check_until_eval_store_adds_it(tiny_bundles, tmp_path, capsys):
    from core.bundle import read_bundle_config
    from core.cli import main
    from core.kinds import load_any
    from core.ood import ood_flags, unavailable

    path = strip_reference(tiny_bundles / "toy-hash-csd", tmp_path / "old")
    assert ood_flags(load_any(path, device="cpu"), [bird(0)]) is None
    sentence = unavailable(path)
    assert f"conceptlens eval {path} --store" in sentence and sentence.count(".") >= 1
    weights = (path / "weights.safetensors").read_bytes()
    assert main(["eval", str(path), "--store", "--device", "cpu"]) == 0
    assert "reference embeddings" in capsys.readouterr().err
    assert (path / "weights.safetensors").read_bytes() == weights
    assert "ood_warned_share" in read_bundle_config(path)["metrics"]
    assert ood_flags(load_any(path, device="cpu"), [bird(0), photo(PHOTOS[0])]) is not None


# ---- conceptlens encode ---------------------------------------------------------------------------------


def test_encode_names_the_flagged_files(tmp_path, capsys):
    from core.cli import main

    folder = tmp_path / "mixed"
    folder.mkdir()
    for i in range(3):
        bird(i).save(folder / f"bird{i}.png")
    photo("skimage: astronaut").save(folder / "astronaut.png")
    photo("skimage: coffee").save(folder / "coffee.png")
    store = tmp_path / "store"
    bundle = str(PRETRAINED / HASH_BUNDLES[0])
    assert main(["encode", bundle, "--data", f"folder:{folder}", "--out", str(store), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    flagged = {line.split()[3] for line in err.splitlines() if line.startswith("out of distribution:")}
    assert flagged == {"astronaut.png", "coffee.png"}, err
    assert "The out-of-distribution check flagged 2 of 5 encoded images" in err


# ---- the pages ------------------------------------------------------------------------------------------


@pytest.fixture
def shipped_app(monkeypatch):
    """``open(page)``: Home.py with the shipped bundles."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CONCEPTLENS_BUNDLES", str(PRETRAINED))

    def open_page(page: str):
        app = AppTest.from_file(str(ROOT / "dashboard" / "Home.py"), default_timeout=240)
        app.run()
        app.switch_page(f"views/{page}.py")
        app.run()
        return app

    return open_page


def ood_warnings(app) -> list[str]:
    return [w.value for w in app.warning if "out-of-distribution check" in w.value]


@pytest.mark.parametrize(
    "page, source, uploader",
    [("concept_attention", "attn_source", "attn_upload"), ("retrieval", "ret_source", "ret_upload")],
)
def test_an_uploaded_photo_is_warned_and_a_bird_is_not(shipped_app, page, source, uploader):
    app = shipped_app(page)
    app.radio(key=source).set_value("Upload").run()
    app.file_uploader(key=uploader).set_value(("astronaut.png", png(photo(PHOTOS[0])), "image/png")).run()
    assert not app.exception, [e.value for e in app.exception]
    warnings = ood_warnings(app)
    assert len(warnings) == 1 and "'astronaut.png' looks unlike" in warnings[0], warnings
    app.file_uploader(key=uploader).set_value(("bird.png", png(bird(0)), "image/png")).run()
    assert not app.exception, [e.value for e in app.exception]
    assert ood_warnings(app) == []
    assert not [c.value for c in app.caption if "check is unavailable" in c.value]
