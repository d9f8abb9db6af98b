"""Images are found by the ids a bundle stores, never by their position in today's data.

A folder bundle's data folder that gained, lost or moved a file must show the right image or one sentence,
never another image's picture beside a row's code (issue: "your data at your scale")."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data import DataSpec, open_split
from core.data.spec import file_image_id
from core.data.stored import MissingImage, StoredImages, display_name
from core.data.toybirds import render_sample

CLASSES = ("Red_bird", "Blue_bird", "Green_bird")
COLOURS = {"Red_bird": (200, 40, 40), "Blue_bird": (40, 40, 200), "Green_bird": (40, 200, 40)}


def write_folder(root: Path, per_class: dict[str, int], size: int = 32) -> None:
    """A pre-split class-folder tree whose images all differ (a class colour and a numbered white corner)."""
    for split, count in per_class.items():
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = np.zeros((size, size, 3), dtype=np.uint8)
                pixels[:] = COLOURS[name]
                pixels[: i + 1, : 2 * (i + 1)] = 255  # a white corner whose size tells the images apart
                Image.fromarray(pixels).save(folder / f"img_{i + 1:03d}.png")


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


# ------------------------------------------------------------------------------------------- unit level


def test_toybirds_ids_draw_the_bird_they_name_not_the_row():
    spec = DataSpec(image_size=32, train_per_class=2, test_per_class=1)
    ids = ["toybirds/train/seed0/000005", "toybirds/train/seed0/000001"]
    images = StoredImages(spec, "train", ids)
    assert np.array_equal(
        pixels(images.image(0)), pixels(render_sample("train", 5, seed=0, image_size=32).image)
    )
    assert np.array_equal(
        pixels(images.image(1)), pixels(render_sample("train", 1, seed=0, image_size=32).image)
    )
    assert images.toybirds_index(0) == 5
    assert images.name(0) == "#000005"


def test_folder_split_stores_ids_relative_to_the_data_root(tmp_path):
    write_folder(tmp_path / "data", {"train": 2, "test": 1})
    split = open_split(DataSpec(kind="folder", root=str(tmp_path / "data")), "train")
    ids = [split.image_id(i) for i in range(len(split))]
    assert ids[0] == "train/Blue_bird/img_001.png"  # classes sorted by name
    assert all(not Path(i).is_absolute() for i in ids)
    images = StoredImages(DataSpec(kind="folder", root=str(tmp_path / "data")), "train", ids)
    for row in range(len(split)):
        assert np.array_equal(pixels(images.image(row)), pixels(split.image(row)))


def test_legacy_whole_path_ids_still_open(tmp_path):
    write_folder(tmp_path / "data", {"train": 1, "test": 1})
    path = tmp_path / "data" / "train" / "Red_bird" / "img_001.png"
    images = StoredImages(DataSpec(kind="folder", root=str(tmp_path / "data")), "train", [str(path)])
    assert np.array_equal(pixels(images.image(0)), pixels(Image.open(path)))


@pytest.mark.parametrize(
    "image_id, words",
    [
        ("train/Red_bird/img_009.png", "no longer in the data folder"),
        ("../outside.png", "leaves the data folder"),
        ("/etc/hostname", "outside the data folder"),
    ],
)
def test_an_id_that_finds_no_image_says_so_in_one_sentence(tmp_path, image_id, words):
    write_folder(tmp_path / "data", {"train": 1, "test": 1})
    (tmp_path / "outside.png").write_bytes((tmp_path / "data/train/Red_bird/img_001.png").read_bytes())
    images = StoredImages(DataSpec(kind="folder", root=str(tmp_path / "data")), "train", [image_id])
    with pytest.raises(MissingImage, match=words) as caught:
        images.image(0)
    assert "\n" not in str(caught.value)


def test_a_stored_file_that_is_no_image_any_more_is_named(tmp_path):
    write_folder(tmp_path / "data", {"train": 1, "test": 1})
    (tmp_path / "data/train/Red_bird/img_001.png").write_bytes(b"not a png at all")
    images = StoredImages(
        DataSpec(kind="folder", root=str(tmp_path / "data")), "train", ["train/Red_bird/img_001.png"]
    )
    with pytest.raises(MissingImage, match="can no longer be read"):
        images.image(0)


def test_file_ids_and_display_names():
    assert file_image_id("/data/cub/images/001.Black/x.jpg", "/data/cub") == "images/001.Black/x.jpg"
    assert file_image_id("/elsewhere/x.jpg", "/data/cub") == "/elsewhere/x.jpg"
    assert display_name("images/001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg").startswith(
        "…"
    )
    assert display_name("train/Red_bird/img_001.png") == "Red_bird/img_001.png"
    assert display_name("toybirds/test/seed3/000042") == "#000042"
    assert len(display_name("x/" + "y" * 200)) == 48


# ------------------------------------------------------------------------------------------- page level


@pytest.fixture(scope="module")
def folder_bundle(tiny_bundles, tmp_path_factory) -> Path:
    """A ConceptHash bundle trained for one epoch on a small class-folder tree (no masks)."""
    from core.concepthash.model import ConceptHashConfig
    from core.concepthash.train import TrainConfig, train_concepthash

    root = tmp_path_factory.mktemp("folder-bundle")
    write_folder(root / "data", {"train": 4, "test": 2})
    train_concepthash(
        str(tiny_bundles / "toy-clip"),
        DataSpec(kind="folder", root=str(root / "data")),
        ConceptHashConfig(bits=8, n_concepts=4, csd_weight=1.0),
        TrainConfig(epochs=1, batch_size=8, device="cpu"),
        root / "bundles" / "folder-hash",
        log=lambda *_: None,
    )
    return root


def relocated(folder_bundle: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the folder bundle and of its data, the copy's config pointing at the copied data."""
    data, bundles = tmp_path / "data", tmp_path / "bundles"
    shutil.copytree(folder_bundle / "data", data)
    shutil.copytree(folder_bundle / "bundles", bundles)
    config_file = bundles / "folder-hash" / "config.json"
    config = json.loads(config_file.read_text())
    config["data"]["root"] = str(data)
    config_file.write_text(json.dumps(config))
    return data, bundles


def test_the_bundle_stores_relative_ids_and_finds_each_row_after_the_folder_gained_a_file(
    folder_bundle, tmp_path
):
    from core.bundle import read_bundle_arrays
    from core.concepthash.arrays import ARRAYS, DB_IDS

    data, bundles = relocated(folder_bundle, tmp_path)
    ids = [str(i) for i in read_bundle_arrays(bundles / "folder-hash", ARRAYS)[DB_IDS]]
    assert ids[0] == "train/Blue_bird/img_001.png"
    first = pixels(Image.open(data / ids[0]))
    # A new photo that sorts first in the first class: today's row 0 is the new one.
    Image.new("RGB", (32, 32), (250, 250, 0)).save(data / "train" / "Blue_bird" / "img_000.png")
    spec = DataSpec(kind="folder", root=str(data))
    assert np.array_equal(pixels(open_split(spec, "train").image(0)), np.full((32, 32, 3), (250, 250, 0)))
    assert np.array_equal(pixels(StoredImages(spec, "train", ids).image(0)), first)


def run_page(bundles: Path, page: str, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import HOME

    monkeypatch.setenv("CONCEPTLENS_BUNDLES", str(bundles))
    app = AppTest.from_file(str(HOME), default_timeout=120)
    app.run()
    app.switch_page(f"views/{page}.py")
    app.run()
    return app


def texts(app) -> str:
    return " ".join(
        str(e.value) for kind in ("markdown", "caption", "warning", "error", "info") for e in app.get(kind)
    )


def test_concept_attention_names_a_lost_file_and_still_shows_its_stored_code(
    folder_bundle, tmp_path, monkeypatch
):
    data, bundles = relocated(folder_bundle, tmp_path)
    (data / "train" / "Blue_bird" / "img_001.png").unlink()  # database row 0
    app = run_page(bundles, "concept_attention", monkeypatch)
    assert not app.exception
    assert not app.error
    warning = " ".join(w.value for w in app.warning)
    assert "train/Blue_bird/img_001.png" in warning and "no longer in the data folder" in warning
    assert "code `" in texts(app)  # the stored code is still drawn


def test_a_data_folder_that_moved_leaves_every_hashing_page_working(folder_bundle, tmp_path, monkeypatch):
    data, bundles = relocated(folder_bundle, tmp_path)
    data.rename(tmp_path / "moved-away")
    for page in ("concept_attention", "retrieval", "hash_codes"):
        app = run_page(bundles, page, monkeypatch)
        if page == "hash_codes":
            app.session_state["hash_tab"] = "Images that turn it on"  # the galleries' tab
            app.run()
        assert not app.exception, (page, [e.value for e in app.exception])
        assert not app.error, (page, [e.value for e in app.error])
        assert "no longer in the data folder" in " ".join(w.value for w in app.warning), page


def test_retrieval_finds_the_query_by_its_stored_id(folder_bundle, tmp_path, monkeypatch):
    data, bundles = relocated(folder_bundle, tmp_path)
    # A new test photo sorting first: by position, query 0 would be this image and its class.
    Image.new("RGB", (32, 32), (250, 250, 0)).save(data / "test" / "Blue_bird" / "aaa_new.png")
    app = run_page(bundles, "retrieval", monkeypatch)
    assert not app.exception and not app.error
    captions = [caption for image in app.get("image") for caption in image.captions]
    assert "query: Blue_bird/img_001.png · Blue_bird" in captions  # the stored query 0
    assert not any("aaa_new" in caption for caption in captions)


# ------------------------------------------------------------------------------ files edited in place


def test_a_file_edited_in_place_is_refused_by_its_fingerprint_and_an_unchanged_one_opens(tmp_path):
    from core.data.stored import file_print, split_prints

    write_folder(tmp_path / "data", {"train": 2, "test": 1})
    spec = DataSpec(kind="folder", root=str(tmp_path / "data"))
    split = open_split(spec, "train")
    ids = [split.image_id(i) for i in range(len(split))]
    prints = split_prints(split)
    assert prints.dtype == np.int64 and prints.shape == (len(ids),) and np.all(prints != 0)
    assert prints[1] == file_print((tmp_path / "data" / ids[1]).read_bytes())
    assert len(set(prints.tolist())) == len(ids), "every file differs, and so does its fingerprint"
    assert (
        split_prints(open_split(DataSpec(image_size=32, train_per_class=1, test_per_class=1), "train"))
        is None
    )

    edited = tmp_path / "data" / ids[1]
    Image.new("RGB", (32, 32), (250, 250, 0)).save(edited)  # same path, another picture
    images = StoredImages(spec, "train", ids, prints)
    with pytest.raises(MissingImage, match="changed since the bundle was made"):
        images.image(1)
    assert np.array_equal(pixels(images.image(0)), pixels(Image.open(tmp_path / "data" / ids[0])))
    unrecorded = prints.copy()
    unrecorded[1] = 0  # "not recorded": shown as it is today
    assert np.array_equal(
        pixels(StoredImages(spec, "train", ids, unrecorded).image(1)), np.full((32, 32, 3), 250) * [1, 1, 0]
    )
    with pytest.raises(ValueError, match="fingerprints"):
        StoredImages(spec, "train", ids, prints[:-1])


def test_concept_attention_refuses_a_database_file_edited_since_the_bundle_was_made(
    folder_bundle, tmp_path, monkeypatch
):
    """The folder bundle stores its files' fingerprints beside their ids; database row 0's file, repainted in
    place, is named instead of being drawn beside row 0's stored code."""
    from core.bundle import read_bundle_arrays

    data, bundles = relocated(folder_bundle, tmp_path)
    arrays = read_bundle_arrays(bundles / "folder-hash")
    assert arrays["db_prints"].shape == arrays["db_ids"].shape
    assert arrays["query_prints"].shape == arrays["query_ids"].shape
    Image.new("RGB", (32, 32), (250, 250, 0)).save(data / "train" / "Blue_bird" / "img_001.png")
    app = run_page(bundles, "concept_attention", monkeypatch)
    assert not app.exception and not app.error
    warning = " ".join(w.value for w in app.warning)
    assert "train/Blue_bird/img_001.png" in warning and "changed since the bundle was made" in warning
    assert "code `" in texts(app)  # the stored code is still drawn


def test_the_fingerprint_arrays_are_declared_beside_their_ids_so_a_bundle_load_checks_their_length():
    from core.ceir import arrays as ceir_arrays
    from core.concepthash import arrays as hash_arrays
    from core.data.stored import prints_key

    for layout, ids in (
        (hash_arrays.ARRAYS, hash_arrays.DB_IDS),
        (hash_arrays.ARRAYS, hash_arrays.QUERY_IDS),
        (ceir_arrays.ARRAYS, ceir_arrays.TRAIN_IDS),
    ):
        assert layout.shapes[prints_key(ids)] == layout.shapes[ids]
