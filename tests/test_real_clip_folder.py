"""A researcher's path, end to end: an open_clip ViT-B-32 (random weights, 224 px, a 7 x 7 patch grid)
trained on a class-folder data set with no part masks, through the command line and every dashboard page.

This is what a user with ``ViT-B-32-quickgelu:openai`` and CUB-200 runs on a GPU, shrunk to 4 classes of a
rendered ToyBirds folder so it fits a CPU: ``toybirds render --layout folder``, ``train concepthash`` and
``train ceir`` on ``folder:ROOT``, then ``eval``, ``label`` and ``encode``, and the app over both bundles.
Nothing downloads: ``NAME:random`` builds the model from open_clip's config. Each bundle is trained once.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.cli import main as conceptlens

ROOT = Path(__file__).resolve().parents[1]
HOME = ROOT / "dashboard" / "Home.py"
BACKBONE = "ViT-B-32:random"
N_CLASSES = 4  # of the 24 species the renderer draws, the folders kept
PER_CLASS = 2  # images per class in train/ and in test/
BITS, CONCEPTS = 32, 4
BANK_SIZE = 48  # concepts of the CEIR bank

# The tests on the trained bundles (CI runs them: `python -m pytest` deselects nothing).
slow = pytest.mark.slow

# What a page says where a view needs ToyBirds (part masks, or a bird redrawn with one part repainted).
NEEDS_TOYBIRDS = ("needs ToyBirds", "needs data with part annotations")
HASH_TABS = ("Codes", "Images that turn it on", "Part swap", "Sub-codes and parts")
CEIR_TABS = ("Latent map", "One image: concepts and what-if", "Clusters", "Quality")


def cli(*argv: str) -> None:
    """Run ``conceptlens ARGV`` in this process (the installed entry point) and insist it succeeded."""
    code = conceptlens([str(a) for a in argv])
    assert code == 0, f"conceptlens {' '.join(map(str, argv))} exited with {code}"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """ROOT/train/<species>/ and ROOT/test/<species>/, PER_CLASS 64-px images each, N_CLASSES classes."""
    root = tmp_path_factory.mktemp("real-folder") / "birds"
    count = 24 * PER_CLASS  # the renderer cycles through all 24 species
    cli("toybirds", "render", "--out", root, "--layout", "folder", "--split", "train,test", "--count", count)
    for split in ("train", "test"):
        classes = sorted(p for p in (root / split).iterdir() if p.is_dir())
        assert len(classes) == 24 and all(len(list(c.iterdir())) == PER_CLASS for c in classes)
        for extra in classes[N_CLASSES:]:
            shutil.rmtree(extra)
        (root / split / "metadata.csv").unlink()  # a researcher's folder has only the pictures
    return root


def general_bank_head(path: Path, n: int = BANK_SIZE) -> Path:
    """The shipped general bank's first ``n`` concepts as a concept file of one's own (the whole bank's text
    embeddings would take most of this module's time on a CPU; the code path is the same)."""
    from core.ceir.concept_bank import load_bank

    path.write_text("\n".join(load_bank("general").concepts[:n]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def bundles(folder, tmp_path_factory) -> Path:
    """A folder holding ``hash`` (ConceptHash, 32 bits = 4 concepts x 8 bits) and ``ceir`` (own concepts)."""
    out = tmp_path_factory.mktemp("real-bundles")
    bank = general_bank_head(tmp_path_factory.mktemp("bank") / "concepts.txt")
    common = ("--backbone", BACKBONE, "--data", f"folder:{folder}", "--epochs", "1", "--device", "cpu")
    cli("train", "concepthash", *common, "--bits", BITS, "--concepts", CONCEPTS, "--batch-size", 8,
        "--out", out / "hash")  # fmt: skip
    cli("train", "ceir", *common, "--concepts", bank, "--projection-steps", 10, "--kmeans-restarts", 2,
        "--batch-size", 8, "--out", out / "ceir")  # fmt: skip
    return out


def config(bundle: Path) -> dict:
    return json.loads((bundle / "config.json").read_text())


@slow
def test_bundles_hold_a_vit_b32_at_224_px_on_the_folder(bundles, folder):
    from core.concepthash.bundle import load_concepthash

    for name in ("hash", "ceir"):
        cfg = config(bundles / name)
        assert cfg["backbone"]["name"] == "ViT-B-32", cfg["backbone"]
        assert "folder" in json.dumps(cfg["data"]) and "toybirds" not in json.dumps(cfg["data"]).lower()
    loaded = load_concepthash(bundles / "hash", device="cpu")
    assert loaded.backbone.image_size == 224 and tuple(loaded.backbone.grid_size) == (7, 7)
    arrays = loaded.arrays
    n_db = N_CLASSES * PER_CLASS
    assert arrays["db_codes"].shape == (n_db, BITS)
    assert arrays["db_attention"].shape[:2] == (n_db, CONCEPTS)
    assert np.prod(arrays["db_attention"].shape[2:]) == 49, "one weight per patch of the 7 x 7 grid"
    train_files = {p.relative_to(folder / "train").as_posix() for p in (folder / "train").rglob("*.png")}
    assert {str(i) for i in arrays["db_ids"]} <= train_files | {f"train/{f}" for f in train_files}


# --- what this path found broken, each checked without training --------------------------------------


def test_a_database_smaller_than_ten_images_is_scored_at_the_ks_it_has():
    """A folder with a few images per class: P@10 of an 8-image database failed the whole evaluation."""
    from core.retrieval import retrieval_metrics

    rng = np.random.default_rng(0)
    codes = np.where(rng.random((8, BITS)) > 0.5, 1, -1).astype(np.int8)
    labels = np.repeat(np.arange(4), 2)
    metrics = retrieval_metrics(codes, labels, codes, labels)
    assert sorted(metrics["precision_at"]) == ["1", "5"] and metrics["precision_at"]["1"] == 1.0
    assert 0.0 <= metrics["map"] <= 1.0


def test_a_relative_data_folder_is_stored_as_an_absolute_path(tmp_path, monkeypatch):
    """``--data folder:birds`` from one directory must still find the images from any other one."""
    from core.cli import build_parser, data_spec_from

    monkeypatch.chdir(tmp_path)
    for command in ("concepthash", "ceir"):
        argv = ["train", command, "--backbone", BACKBONE, "--data", "folder:birds", "--out", "b"]
        args = build_parser().parse_args(argv + (["--concepts", "general"] if command == "ceir" else []))
        assert data_spec_from(args).root == str(tmp_path / "birds")
    args = build_parser().parse_args(["train", "concepthash", "--backbone", BACKBONE, "--out", "b"])
    assert data_spec_from(args).root is None, "ToyBirds has no folder"


# --- the dashboard: every page and tab over both bundles ------------------------------------------------


@pytest.fixture
def open_page(bundles, monkeypatch):
    """``open_page(name)`` runs Home.py over the two bundles and switches to ``views/<name>.py``."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CONCEPTLENS_BUNDLES", str(bundles))

    def run(page: str):
        app = AppTest.from_file(str(HOME), default_timeout=300)
        app.run()
        app.switch_page(f"views/{page}.py")
        return checked(app.run())

    return run


def checked(app):
    """The app, after insisting its last run raised nothing and showed no error or warning (every image the
    bundles name is in the folder)."""
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error, [e.value for e in app.error]
    assert not app.warning, [w.value for w in app.warning]
    return app


def open_tab(app, key: str, label: str):
    """Open one tab of a page whose tabs are drawn only when open, as a click does (the page reruns)."""
    app.session_state[key] = label
    return checked(app.run())


def infos(app) -> list[str]:
    return [i.value for i in app.info]


def says_it_needs_toybirds(app) -> bool:
    """One st.info sentence saying the view needs ToyBirds (nothing drawn in its place)."""
    return any(any(reason in text for reason in NEEDS_TOYBIRDS) for text in infos(app))


def overlays(app) -> list[str]:
    """The captions of the concepts' attention tiles ("concept 0 = 01101100", ...)."""
    return [c for element in app.get("image") for c in element.captions if c.startswith("concept ")]


def png_bytes(path: Path) -> bytes:
    return path.read_bytes()


@slow
def test_home_lists_both_bundles(open_page):
    app = open_page("home")
    names = " ".join(str(frame.value.to_dict()) for frame in app.dataframe)
    assert "'hash'" in names and "'ceir'" in names, names


@slow
def test_hash_codes_page_every_tab(open_page):
    app = open_page("hash_codes")
    assert [t.label for t in app.tabs] == list(HASH_TABS)
    for tab in HASH_TABS:
        open_tab(app, "hash_tab", tab)
        if tab in ("Part swap", "Sub-codes and parts"):
            assert says_it_needs_toybirds(app), (tab, infos(app))
        else:
            assert app.get("plotly_chart") or app.get("image"), f"{tab} drew nothing"


@slow
def test_concept_attention_page_database_image_and_upload(open_page, folder):
    app = open_page("concept_attention")
    assert len(overlays(app)) == CONCEPTS, "each concept's attention over the database image"
    assert says_it_needs_toybirds(app), infos(app)  # the part masks and the repaint panel
    assert not any(b.label.startswith("Redraw") for b in app.button)
    checked(app.radio(key="attn_source").set_value("Upload").run())
    upload = next((folder / "test").rglob("*.png"))
    app.file_uploader(key="attn_upload").set_value((upload.name, png_bytes(upload), "image/png"))
    checked(app.run())
    assert len(overlays(app)) == CONCEPTS, "and over the uploaded one"


@slow
def test_retrieval_page(open_page):
    app = open_page("retrieval")
    assert app.get("image") or app.dataframe, "the query's results"


@slow
def test_ceir_page_every_tab(open_page):
    app = open_page("ceir_concepts")
    for tab in CEIR_TABS:
        open_tab(app, "ceir_tab", tab)
        if tab in ("Latent map", "One image: concepts and what-if"):
            assert app.get("plotly_chart"), f"{tab} drew no chart"


@slow
def test_open_world_page_labels_with_the_ceir_bundle(open_page, bundles, folder):
    app = open_page("open_world")
    app.radio(key="ow_model").set_value(str(bundles / "ceir"))
    upload = next((folder / "test").rglob("*.png"))
    app.file_uploader(key="ow_upload").set_value([(upload.name, png_bytes(upload), "image/png")])
    checked(app.run())
    shown = [t.value for t in app.table] + [i for i in infos(app) if upload.name in i]
    assert shown, "a label table or a sentence saying why the image has none"


# --- the command line on the bundles: eval, label, encode -----------------------------------------------

TOYBIRDS_ONLY = ("part_swap", "subcode_part_nmi", "localization", "counterfactual")


def json_of(capsys, *argv: str) -> dict:
    capsys.readouterr()
    cli(*argv, "--json")
    return json.loads(capsys.readouterr().out)


@slow
def test_eval_json(bundles, capsys):
    metrics = json_of(capsys, "eval", bundles / "hash", "--device", "cpu")
    assert 0.0 <= metrics["map"] <= 1.0, metrics
    assert not set(TOYBIRDS_ONLY) & set(metrics), sorted(metrics)
    metrics = json_of(capsys, "eval", bundles / "ceir", "--device", "cpu")
    found = json.dumps(metrics)
    assert all(f'"{key}"' in found for key in ("acc", "nmi", "ari")), sorted(metrics)


@slow
def test_label_accounts_for_every_image(bundles, folder, capsys):
    report = json_of(capsys, "label", bundles / "ceir", folder / "test", "--device", "cpu")
    files = {p.name for p in (folder / "test").rglob("*.png")}
    seen = {Path(image["file"]).name for image in report["images"]}
    assert seen | {Path(f["file"]).name for f in report.get("failed", [])} == files
    for image in report["images"]:
        assert image["labels"] or image["note"], image  # labelled, or a sentence saying why not


@slow
def test_encode_lists_every_image(bundles, folder, tmp_path):
    store = tmp_path / "store"
    cli("encode", bundles / "hash", "--data", f"folder:{folder / 'test'}", "--out", store, "--device", "cpu")
    manifest = json.loads((store / "manifest.json").read_text())
    files = json.loads((store / "files.json").read_text())
    expected = sorted(p.relative_to(folder / "test").as_posix() for p in (folder / "test").rglob("*.png"))
    assert sorted(files) == expected
    assert manifest["complete"] and manifest["rows"] == len(expected) and not manifest["failed"]
