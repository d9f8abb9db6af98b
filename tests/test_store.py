"""Code stores: memory-mapped exact search equals in-memory search; ``encode`` writes, lists bad files and
resumes a killed run without redoing finished shards."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core import encode as encode_module
from core.encode import EncodeConfig, encode_folder
from core.retrieval import hamming_topk, pack_codes
from core.retrieval.store import MANIFEST_FILE, STORE_FORMAT, STORE_VERSION, CodeStore, write_shard


def _quiet(*_args) -> None:
    pass


def random_store(root, shard_sizes: list[int], n_bits: int, seed: int = 0) -> np.ndarray:
    """A store of random codes with shards of the given sizes; returns all codes packed, in row order."""
    rng = np.random.default_rng(seed)
    packed = pack_codes(rng.integers(0, 2, size=(sum(shard_sizes), n_bits)).astype(bool))
    manifest = {
        "format": STORE_FORMAT,
        "version": STORE_VERSION,
        "kind": "concepthash",
        "n_shards": len(shard_sizes),
        "arrays": {"codes": {"dtype": "uint64", "columns": packed.shape[1]}},
        "n_bits": n_bits,
    }
    root.mkdir()
    (root / MANIFEST_FILE).write_text(json.dumps(manifest))
    start = 0
    for index, size in enumerate(shard_sizes):
        ids = [f"img{row}.png" for row in range(start, start + size)]
        write_shard(root, index, {"codes": packed[start : start + size]}, ids, [])
        start += size
    return packed


@pytest.mark.parametrize(("n_bits", "k"), [(6, 10), (64, 5), (130, 50)])
def test_memory_mapped_search_equals_in_memory_search(tmp_path, n_bits: int, k: int) -> None:
    # 6 bits: almost every distance is tied, so the (distance, row) order across shards is what is tested
    db = random_store(tmp_path / "store", [37, 0, 100, 1, 62], n_bits)
    queries = pack_codes(np.random.default_rng(1).integers(0, 2, size=(23, n_bits)).astype(bool))
    store = CodeStore(tmp_path / "store")
    rows, dist = store.search(queries, k)
    expected_rows, expected_dist = hamming_topk(queries, db, k)
    np.testing.assert_array_equal(rows, expected_rows)
    np.testing.assert_array_equal(dist, expected_dist)
    assert isinstance(next(store.arrays("codes")), np.memmap)
    assert store.ids[rows[0, 0]] == f"img{expected_rows[0, 0]}.png"
    assert store.ids_at(rows[0]) == [store.ids[r] for r in rows[0]], "across shards, the empty one too"
    assert store.ids_at([0, 36, 37, 137, 138, 199]) == [store.ids[r] for r in (0, 36, 37, 137, 138, 199)]
    with pytest.raises(IndexError, match="Row 200 is not in the store"):
        store.ids_at([200])
    np.testing.assert_array_equal(store.load("codes"), db)


def test_incomplete_shards_are_not_searched(tmp_path) -> None:
    random_store(tmp_path / "store", [10, 10, 10], 16)
    (tmp_path / "store" / "shards" / "00001.json").unlink()  # shard 1 was killed before its marker
    store = CodeStore(tmp_path / "store")
    assert store.manifest["complete_shards"] == [0, 2] and not store.complete
    assert (
        len(store) == 20
        and store.ids[10] == "img20.png"
        and store.ids_at([9, 10]) == ["img9.png", "img20.png"]
    )


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    from core.data import toybirds

    root = tmp_path_factory.mktemp("collection")
    toybirds.render_to_disk(root / "render", "test", 22, seed=3, image_size=32)
    folder = root / "render" / "images"
    (folder / "broken.png").write_bytes(b"not a png")
    return folder


def test_encode_writes_codes_of_every_readable_image(tiny_bundles, image_folder, tmp_path) -> None:
    from core.concepthash.bundle import load_concepthash
    from core.concepthash.evaluate import encode_images
    from core.data.images import load_image

    config = EncodeConfig(shard_size=5, batch_size=4, device="cpu")
    bundle = tiny_bundles / "toy-hash-csd"
    manifest = encode_folder(bundle, f"folder:{image_folder}", tmp_path / "store", config, log=_quiet)
    assert manifest["complete"] and manifest["n_files"] == 23 and manifest["rows"] == 22
    assert [f["file"] for f in manifest["failed"]] == ["broken.png"]
    store = CodeStore(tmp_path / "store")
    assert "broken.png" not in store.ids and len(store.ids) == 22
    loaded = load_concepthash(bundle, device="cpu")
    images = [load_image(image_folder / name) for name in store.ids]
    expected = pack_codes(encode_images(loaded.model, loaded.backbone, images, 4))
    np.testing.assert_array_equal(store.load("codes"), expected)
    rows, dist = store.search(expected[:3], 1)
    assert dist[:, 0].tolist() == [0, 0, 0]


def test_killed_encode_resumes_without_redoing_finished_shards(
    tiny_bundles, image_folder, tmp_path, monkeypatch
) -> None:
    config = EncodeConfig(shard_size=5, batch_size=4, device="cpu")
    bundle, data = tiny_bundles / "toy-hash-csd", f"folder:{image_folder}"
    encode_folder(bundle, data, tmp_path / "whole", config, log=_quiet)

    real, encoded = encode_module.encode_shard, []

    def killed_after_two(encoder, folder, names, batch_size):
        if len(encoded) == 2:
            raise KeyboardInterrupt
        encoded.append(names[0])
        return real(encoder, folder, names, batch_size)

    monkeypatch.setattr(encode_module, "encode_shard", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        encode_folder(bundle, data, tmp_path / "store", config, log=_quiet)
    manifest = json.loads((tmp_path / "store" / MANIFEST_FILE).read_text())
    assert manifest["complete_shards"] == [0, 1] and not manifest["complete"]
    with pytest.raises(ValueError, match="pass --resume"):
        encode_folder(bundle, data, tmp_path / "store", config, log=_quiet)
    with pytest.raises(ValueError, match="shard_size"):
        encode_folder(bundle, data, tmp_path / "store", EncodeConfig(shard_size=6), resume=True, log=_quiet)

    def counted(encoder, folder, names, batch_size):
        encoded.append(names[0])
        return real(encoder, folder, names, batch_size)

    monkeypatch.setattr(encode_module, "encode_shard", counted)
    encoded.clear()
    manifest = encode_folder(bundle, data, tmp_path / "store", config, resume=True, log=_quiet)
    assert len(encoded) == 3  # shards 2, 3 and 4 of 23 files; 0 and 1 were not redone
    assert manifest["complete"] and manifest["rows"] == 22
    np.testing.assert_array_equal(
        CodeStore(tmp_path / "store").load("codes"), CodeStore(tmp_path / "whole").load("codes")
    )


def test_encode_ceir_stores_concept_vectors_and_latents(tiny_bundles, image_folder, tmp_path) -> None:
    import torch

    from core.ceir.bundle import load_ceir
    from core.data.images import load_image

    bundle = tiny_bundles / "toy-ceir"
    config = EncodeConfig(shard_size=8, device="cpu")
    encode_folder(bundle, f"folder:{image_folder}", tmp_path / "store", config, log=_quiet)
    store = CodeStore(tmp_path / "store")
    loaded = load_ceir(bundle, device="cpu")
    images = [load_image(image_folder / name) for name in store.ids[:3]]
    with torch.no_grad():
        pixels = loaded.backbone.preprocess_images(images)
        vectors = loaded.model.concept_vectors(loaded.backbone.encode_images(pixels))
        latents = loaded.model.latent(vectors)
    np.testing.assert_allclose(store.load("concepts")[:3], vectors.numpy(), atol=1e-5)
    np.testing.assert_allclose(store.load("latents")[:3], latents.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="no binary codes"):
        store.search(np.zeros((1, 1), dtype=np.uint64), 1)


def test_encode_refuses_other_bundles_and_missing_folders(tiny_bundles, tmp_path) -> None:
    with pytest.raises(ValueError, match="not a folder"):
        encode_folder(
            tiny_bundles / "toy-hash-csd", f"folder:{tmp_path / 'nope'}", tmp_path / "s", EncodeConfig()
        )
    with pytest.raises(ValueError, match="encode takes a concepthash or ceir bundle"):
        encode_folder(tiny_bundles / "toy-clip", f"folder:{tmp_path}", tmp_path / "s", EncodeConfig())


def test_encode_and_index_on_the_command_line(tiny_bundles, image_folder, tmp_path, capsys) -> None:
    pytest.importorskip("faiss")
    from core.cli import main

    store = tmp_path / "store"
    bundle = str(tiny_bundles / "toy-hash-csd")
    argv = ["encode", bundle, "--data", f"folder:{image_folder}", "--out", str(store), "--device", "cpu"]
    assert main([*argv, "--shard-size", "10"]) == 0
    err = capsys.readouterr().err
    assert "Wrote 22 encodings in 3 shards" in err and "skipped: Cannot open image 'broken.png'" in err
    assert main(argv) == 2 and "pass --resume" in capsys.readouterr().err
    assert main(["index", str(store), "--kind", "ivf", "--nlist", "2"]) == 0
    assert (store / "index-ivf.faiss").is_file()
    (store / "shards" / "00001.json").unlink()
    assert main(["index", str(store)]) == 2 and "not complete" in capsys.readouterr().err
