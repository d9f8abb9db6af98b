"""``conceptlens bench make-bundle``: synthetic bundles at a researcher's scale load like trained ones.

The fixtures here are small (12 classes, 240 images) so they take seconds; other test files can build the
same bundles with ``core.synthetic.make_concepthash_bundle`` / ``make_ceir_bundle``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.bundle import read_bundle_arrays, read_bundle_config
from core.ceir import arrays as ceir_arrays
from core.concepthash import arrays as hash_arrays
from core.data.spec import DataSpec, open_split
from core.data.stored import StoredImages
from core.kinds import KINDS
from core.retrieval import mean_average_precision, pack_codes
from core.synthetic import MADE_BY, make_ceir_bundle, make_concepthash_bundle

CLASSES, IMAGES = 12, 240


def _quiet(_message: str) -> None:
    pass


@pytest.fixture(scope="module")
def hash_bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "hash64"
    made = make_concepthash_bundle(out, bits=64, concepts=8, classes=CLASSES, images=IMAGES, progress=_quiet)
    assert made.bundle == out and made.data_root == (out.parent / "hash64-data").resolve()
    return out


@pytest.fixture(scope="module")
def ceir_bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "ceir400"
    make_ceir_bundle(out, n_concepts=400, classes=CLASSES, images=IMAGES, progress=_quiet)
    return out


@pytest.fixture(scope="module")
def hash_loaded(hash_bundle):
    return KINDS["concepthash"].load(hash_bundle, device="cpu")


def _hamming_same_and_other(codes: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    distances = (codes[:, None, :] != codes[None, :, :]).sum(axis=2)
    same = labels[:, None] == labels[None, :]
    np.fill_diagonal(same, False)
    other = labels[:, None] != labels[None, :]
    return float(distances[same].mean()), float(distances[other].mean())


# ---- ConceptHash ---------------------------------------------------------------------------------


def test_concepthash_fixture_loads_like_a_trained_bundle(hash_bundle, hash_loaded):
    config = read_bundle_config(hash_bundle)
    assert config["synthetic"]["made_by"] == MADE_BY and config["synthetic"]["note"]
    assert hash_loaded.model.n_concepts == 8 and config["model"]["bits"] == 64
    arrays = read_bundle_arrays(hash_bundle, hash_arrays.ARRAYS)
    queries = read_bundle_arrays(hash_bundle, hash_arrays.QUERY_ARRAYS)
    grid = hash_loaded.backbone.grid_size
    assert arrays["db_codes"].shape == (IMAGES, 64) and arrays["db_codes"].dtype == np.int8
    assert set(np.unique(arrays["db_codes"])) == {-1, 1}
    assert arrays["db_labels"].dtype == np.int64 and set(arrays["db_labels"]) == set(range(CLASSES))
    assert arrays["db_attention"].shape == (IMAGES, 8, *grid) and arrays["db_attention"].dtype == np.float16
    assert queries["query_codes"].shape == (IMAGES // 10, 64)
    assert queries["query_attention"].shape == (IMAGES // 10, 8, *grid)
    sums = arrays["db_attention"].astype(np.float32).sum(axis=(2, 3))
    assert ((sums > 0.7) & (sums < 1.0)).all()  # like a trained model's attention to the patches
    assert len(config["classes"]) == CLASSES and max(len(name) for name in config["classes"]) > 50


def test_concepthash_codes_are_clustered_by_class(hash_bundle):
    arrays = read_bundle_arrays(hash_bundle, hash_arrays.ARRAYS)
    same, other = _hamming_same_and_other(arrays["db_codes"], arrays["db_labels"])
    assert same < 0.6 * other, (same, other)


def test_each_concept_attends_to_its_own_region(hash_bundle):
    attention = read_bundle_arrays(hash_bundle, hash_arrays.ARRAYS)["db_attention"].astype(np.float32)
    mean_maps = attention.mean(axis=0).reshape(8, -1)
    peaks = mean_maps.argmax(axis=1)
    assert len(set(peaks.tolist())) == 8  # eight concepts, eight different places


def test_stored_map_is_what_core_computes_from_the_stored_codes(hash_bundle):
    config = read_bundle_config(hash_bundle)
    arrays = read_bundle_arrays(hash_bundle, hash_arrays.ARRAYS)
    queries = read_bundle_arrays(hash_bundle, hash_arrays.QUERY_ARRAYS)
    spec = DataSpec.from_dict(config["data"])
    query_labels = open_split(spec, "test").labels
    expected = mean_average_precision(
        query_labels, arrays["db_labels"], pack_codes(queries["query_codes"]), pack_codes(arrays["db_codes"])
    )
    assert config["metrics"]["map"] == pytest.approx(expected, abs=1e-12)
    assert 0.5 < expected <= 1.0
    assert config["metrics"]["n_database"] == IMAGES


def test_concepthash_ids_name_the_files_a_folder_reader_lists(hash_bundle, hash_loaded):
    config = read_bundle_config(hash_bundle)
    spec = DataSpec.from_dict(config["data"])
    assert spec.kind == "folder" and Path(spec.root).is_dir()
    for split, key in (("train", "db_ids"), ("test", "query_ids")):
        table = hash_arrays.ARRAYS if split == "train" else hash_arrays.QUERY_ARRAYS
        ids = read_bundle_arrays(hash_bundle, table)[key]
        read = open_split(spec, split)  # the split a trained bundle's evaluation reads
        assert [read.image_id(i) for i in range(len(read))] == ids.tolist()
        assert read.classes == config["classes"]
        if split == "train":
            assert np.array_equal(read.labels, read_bundle_arrays(hash_bundle, table)["db_labels"])
        stored = StoredImages(spec, split, ids)
        for row in (0, len(ids) // 2, len(ids) - 1):
            assert not Path(ids[row]).is_absolute() and stored.path(row).is_file()
            assert stored.image(row).size == (64, 64)
    stored = StoredImages(spec, "train", read_bundle_arrays(hash_bundle, hash_arrays.ARRAYS)["db_ids"])
    first, last = np.asarray(stored.image(0), dtype=float), np.asarray(stored.image(IMAGES - 1), dtype=float)
    assert np.abs(first - last).mean() > 10  # two classes look different
    pixels = hash_loaded.backbone.preprocess(stored.image(0)).unsqueeze(0)
    assert hash_loaded.model.encode(pixels).shape == (1, 64)  # the model runs on the fixture's images


def test_the_dashboard_names_a_synthetic_bundle(hash_bundle):
    from lens.bundles import describe_bundle

    info = describe_bundle(hash_bundle, read_bundle_config(hash_bundle))
    assert "synthetic (bench make-bundle)" in info.summary and info.metrics["mAP"] > 0.5


def test_toybirds_data_gives_toybirds_ids(tmp_path):
    out = tmp_path / "toy"
    made = make_concepthash_bundle(
        out, bits=6, concepts=3, classes=24, images=48, queries=24, data="toybirds", progress=_quiet
    )
    assert made.data_root is None and not (tmp_path / "toy-data").exists()
    config = read_bundle_config(out)
    arrays = read_bundle_arrays(out, hash_arrays.ARRAYS)
    assert config["data"]["kind"] == "toybirds" and config["data"]["train_per_class"] == 2
    split = open_split(DataSpec.from_dict(config["data"]), "train")
    assert arrays["db_ids"].tolist() == [split.image_id(i) for i in range(len(split))]
    assert np.array_equal(arrays["db_labels"], split.labels)
    assert StoredImages(DataSpec.from_dict(config["data"]), "train", arrays["db_ids"]).sample(5).masks


# ---- CEIR ----------------------------------------------------------------------------------------


def test_ceir_fixture_loads_like_a_trained_bundle(ceir_bundle):
    import torch

    config = read_bundle_config(ceir_bundle)
    assert config["synthetic"]["made_by"] == MADE_BY
    loaded = KINDS["ceir"].load(ceir_bundle, device="cpu")
    arrays = read_bundle_arrays(ceir_bundle, ceir_arrays.ARRAYS)
    assert len(loaded.concepts) == 400 == len(config["concepts"]) and loaded.model.n_clusters == CLASSES
    assert ceir_arrays.TRAIN_UMAP not in arrays  # the dashboard computes the map on first view
    latent = config["ceir"]["vae"]["latent_dim"]
    shapes = {
        "train_concepts": ((IMAGES, 400), np.float32),
        "train_latents": ((IMAGES, latent), np.float32),
        "train_clusters": ((IMAGES,), np.int64),
        "train_labels": ((IMAGES,), np.int64),
        "train_contributions": ((IMAGES, 400), np.float32),
        "concept_fidelity": ((400,), np.float32),
        "ood_reference": ((IMAGES, loaded.backbone.embed_dim), np.float32),
    }
    for name, (shape, dtype) in shapes.items():
        assert arrays[name].shape == shape and arrays[name].dtype == dtype, name
    concepts = arrays["train_concepts"]
    assert np.abs(concepts.mean(axis=0)).max() < 1e-3 and np.allclose(concepts.std(axis=0), 1, atol=0.05)
    with torch.no_grad():  # the stored arrays are what the stored model computes
        latents = loaded.model.latent(torch.from_numpy(concepts))
        assert np.allclose(latents.numpy(), arrays["train_latents"], atol=1e-4)
        assert np.array_equal(loaded.model.assign(latents).numpy(), arrays["train_clusters"])


def test_ceir_metrics_are_the_stored_clusters_scores(ceir_bundle):
    from core.ceir.clustering import clustering_scores

    config = read_bundle_config(ceir_bundle)
    arrays = read_bundle_arrays(ceir_bundle, ceir_arrays.ARRAYS)
    scores = clustering_scores(arrays["train_labels"], arrays["train_clusters"])
    for name in ("acc", "nmi", "ari"):
        assert config["metrics"][name] == pytest.approx(scores[name], abs=1e-12)
    assert scores["acc"] > 0.6  # class-structured concepts cluster by class
    assert not np.array_equal(arrays["train_clusters"], arrays["train_labels"])  # k-means numbers its own


def test_ceir_ids_open_as_stored_images(ceir_bundle):
    config = read_bundle_config(ceir_bundle)
    ids = read_bundle_arrays(ceir_bundle, ceir_arrays.ARRAYS)["train_ids"]
    stored = StoredImages(DataSpec.from_dict(config["data"]), "train", ids)
    assert stored.image(len(ids) - 1).mode == "RGB"


# ---- the command line ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--bits", "0"], "--bits"),
        (["--classes", "1"], "--classes"),
        (["--classes", "12", "--images", "5"], "smaller than --classes"),
        (["--bits", "64", "--concepts", "5"], "divisible"),
        (["--data", "toybirds", "--classes", "12", "--images", "48"], "24"),
        (["--kind", "ceir", "--n-concepts", "1"], "--n-concepts"),
    ],
)
def test_a_bad_flag_gives_one_sentence_and_writes_nothing(tmp_path, capsys, flags, words):
    from core.cli import main

    out = tmp_path / "bundle"
    code = main(["bench", "make-bundle", "--out", str(out), "--json-out", str(tmp_path / "r.json"), *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2 and words in err and len(err.splitlines()) == 1, err
    assert list(tmp_path.iterdir()) == []


def test_the_command_writes_a_bundle_and_its_timings(tmp_path, capsys):
    from core.cli import main

    out, report = tmp_path / "small", tmp_path / "made.json"
    flags = ["--bits", "8", "--concepts", "2", "--classes", "3", "--images", "9", "--queries", "3"]
    assert main(["bench", "make-bundle", "--out", str(out), "--json-out", str(report), *flags]) == 0
    result = json.loads(report.read_text())
    assert result["bundle"] == str(out) and "total" in result["seconds"]
    assert "save bundle" in capsys.readouterr().out
    assert KINDS["concepthash"].load(out, device="cpu").model.n_concepts == 2
    again = main(["bench", "make-bundle", "--out", str(out), "--json-out", str(report), *flags])
    assert again == 2 and "already exists" in capsys.readouterr().err  # never over a bundle unasked
    flags.append("--overwrite")
    assert main(["bench", "make-bundle", "--out", str(out), "--json-out", str(report), *flags]) == 0


def test_worker_processes_write_the_same_images(tmp_path, monkeypatch):
    import core.synthetic as synthetic

    def write(name: str) -> dict[str, bytes]:
        config = synthetic.SyntheticBundleConfig(out=tmp_path / name, classes=3, images=30, queries=6)
        data = synthetic.plan_data(config)
        rng = np.random.default_rng(0)
        offsets = {"train": synthetic.image_offsets(30, 64, rng), "test": synthetic.image_offsets(6, 64, rng)}
        synthetic.write_image_folder(data, config, offsets, _quiet)
        return {str(p.relative_to(data.root)): p.read_bytes() for p in data.root.rglob("*.png")}

    here = write("here")
    monkeypatch.setattr(synthetic, "PARALLEL_ROWS", 1)
    monkeypatch.setattr(synthetic, "CHUNK_ROWS", 7)
    monkeypatch.setattr(synthetic, "_workers", lambda: 2)
    assert write("workers") == here and len(here) == 36


def test_overwrite_never_replaces_a_trained_bundle(tmp_path, capsys):
    import shutil

    from core.cli import main

    trained = tmp_path / "trained"
    shutil.copytree(Path(__file__).resolve().parents[1] / "pretrained" / "toybirds-concepthash-csd", trained)
    before = (trained / "config.json").read_bytes()
    code = main(
        ["bench", "make-bundle", "--out", str(trained), "--overwrite", "--json-out", str(tmp_path / "r")]
    )
    assert code == 2 and "did not make" in capsys.readouterr().err
    assert (trained / "config.json").read_bytes() == before and not (tmp_path / "trained-data").exists()
