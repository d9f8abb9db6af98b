"""Bundles that half-load are refused at load time with one sentence naming the bundle and what is wrong.

Built from files the tests make: missing and short cached arrays, an empty backbone reference, weights
sized for another backbone, truncated and unreadable weights. The dashboard names such a bundle instead of
showing a traceback, and Home does not list one with corrupt weights as healthy.
"""

from __future__ import annotations

import builtins
import errno
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from core import bundle as bundle_module
from core.bundle import BundleError, find_broken_bundles, find_bundles, load_bundle, save_bundle
from core.concepthash.arrays import DB_CODES, DB_IDS, DB_LABELS
from core.concepthash.bundle import ARRAYS as HASH_ARRAYS

HASH_CONFIG = {
    "backbone": {"name": "toyclip-tiny", "pretrained": None},
    "model": {"bits": 6, "n_concepts": 3},
    "classes": ["a", "b"],
}


def _hash_bundle(path: Path, arrays: dict[str, np.ndarray] | None = None, **config) -> Path:
    codes = np.ones((4, 6), dtype=np.int8)
    arrays = {DB_CODES: codes, DB_LABELS: np.zeros(4, dtype=np.int64)} if arrays is None else arrays
    return save_bundle(
        path,
        kind="concepthash",
        config={**HASH_CONFIG, **config},
        weights={"w": torch.ones(2)},
        arrays=arrays,
    )


def _edit_config(path: Path, **changes) -> None:
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, **changes}))


def test_an_empty_backbone_reference_is_refused_when_the_config_is_read(tmp_path: Path) -> None:
    path = _hash_bundle(tmp_path / "b")
    _edit_config(path, backbone={})
    with pytest.raises(BundleError, match=r"unusable backbone reference \{\}.*neither a clip 'bundle'"):
        load_bundle(path)
    assert find_bundles(tmp_path) == []
    assert [p for p, _ in find_broken_bundles(tmp_path)] == [path]


def test_a_clip_bundle_without_its_architecture_is_refused(tmp_path: Path) -> None:
    path = save_bundle(tmp_path / "c", kind="clip", config={"backbone": {"name": "x"}}, weights={})
    with pytest.raises(BundleError, match="no 'model_cfg'"):
        load_bundle(path)


def test_short_cached_arrays_are_refused(tmp_path: Path) -> None:
    codes = np.ones((4, 6), dtype=np.int8)
    path = _hash_bundle(tmp_path / "b", {DB_CODES: codes, DB_LABELS: np.zeros(3, dtype=np.int64)})
    with pytest.raises(BundleError, match=r"different lengths \('db_codes' has 4 rows, 'db_labels' has 3\)"):
        load_bundle(path, layout=HASH_ARRAYS)


def test_codes_of_another_length_than_the_config_says_are_refused(tmp_path: Path) -> None:
    codes = np.ones((4, 5), dtype=np.int8)
    path = _hash_bundle(tmp_path / "b", {DB_CODES: codes, DB_LABELS: np.zeros(4, dtype=np.int64)})
    with pytest.raises(BundleError, match=r"'db_codes' of shape \(4, 5\), which does not fit its bits \(6\)"):
        load_bundle(path, layout=HASH_ARRAYS)


def test_ids_must_be_strings_and_codes_numbers(tmp_path: Path) -> None:
    arrays = {DB_CODES: np.ones((2, 6), np.int8), DB_LABELS: np.zeros(2), DB_IDS: np.zeros(2)}
    with pytest.raises(BundleError, match="'db_ids' that does not hold strings"):
        load_bundle(_hash_bundle(tmp_path / "b", arrays), layout=HASH_ARRAYS)


def test_load_concepthash_names_the_missing_arrays(tmp_path: Path) -> None:
    from core.concepthash import load_concepthash

    path = _hash_bundle(tmp_path / "b", {DB_LABELS: np.zeros(4, dtype=np.int64)})
    with pytest.raises(BundleError, match=r"lacks the cached arrays 'db_codes'"):
        load_concepthash(path, device="cpu")


def test_ceir_weights_sized_for_another_backbone_are_refused(tmp_path: Path) -> None:
    from core.ceir.bundle import load_ceir
    from core.ceir.model import CEIRModel
    from core.ceir.vae import VAEConfig

    vae = VAEConfig(latent_dim=2, hidden_dims=(4,))
    model = CEIRModel(16, ["red", "blue", "green"], vae, n_clusters=2)  # toyclip-tiny embeds in 32 dims
    config = {
        "backbone": {"name": "toyclip-tiny", "pretrained": None},
        "data": {"kind": "toybirds"},
        "concepts": model.concepts,
        "ceir": {"vae": {"latent_dim": 2, "hidden_dims": [4]}},
    }
    arrays = {  # the cached arrays every CEIR bundle holds, so the load gets as far as the backbone
        "train_concepts": np.zeros((4, 3), np.float32),
        "train_latents": np.zeros((4, 2), np.float32),
        "train_clusters": np.zeros(4, np.int64),
        "train_labels": np.zeros(4, np.int64),
    }
    path = save_bundle(tmp_path / "c", kind="ceir", config=config, weights=model.state_dict(), arrays=arrays)
    with pytest.raises(BundleError, match=r"embeddings of 16 numbers.*gives 32"):
        load_ceir(path, device="cpu")


def test_truncated_weights_are_not_listed_as_healthy(tmp_path: Path) -> None:
    good = _hash_bundle(tmp_path / "good")
    bad = _hash_bundle(tmp_path / "bad")
    weights = bad / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-3])
    assert find_bundles(tmp_path) == [good]
    ((path, error),) = find_broken_bundles(tmp_path)
    assert path == bad and "corrupt or truncated weights.safetensors" in error


def test_an_unreadable_weights_file_is_not_called_corrupt(tmp_path: Path, monkeypatch) -> None:
    path = _hash_bundle(tmp_path / "b")
    real_open = builtins.open

    def refuse(file, *args, **kwargs):
        if str(file).endswith("weights.safetensors"):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(bundle_module, "open", refuse, raising=False)
    with pytest.raises(BundleError) as error:
        load_bundle(path)
    assert "weights.safetensors that cannot be read (permission denied)" in str(error.value)
    assert "corrupt" not in str(error.value)


def test_dashboard_names_a_half_loaded_bundle_and_skips_corrupt_weights(tiny_bundles, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import HOME

    shutil.copytree(tiny_bundles / "toy-clip", tmp_path / "toy-clip")
    short = shutil.copytree(tiny_bundles / "toy-hash-csd", tmp_path / "short-hash")
    strings = json.loads((short / "arrays.json").read_text())
    (short / "arrays.json").write_text(json.dumps({DB_IDS: strings[DB_IDS][:-1]}))
    corrupt = shutil.copytree(tiny_bundles / "toy-hash-nocsd", tmp_path / "corrupt-hash")
    (corrupt / "weights.safetensors").write_bytes(b"\x08" + bytes(20))
    monkeypatch.setenv("CONCEPTLENS_BUNDLES", str(tmp_path))

    app = AppTest.from_file(str(HOME), default_timeout=60).run()
    assert not app.exception
    assert set(app.dataframe[0].value["bundle"]) == {"toy-clip", "short-hash"}
    assert any("corrupt-hash" in w.value and "weights.safetensors" in w.value for w in app.sidebar.warning)

    app.switch_page("views/hash_codes.py").run()
    assert not app.exception
    errors = [e.value for e in app.error]
    assert any("short-hash" in e and "different lengths" in e for e in errors), errors


def test_weight_names_from_before_a_rename_still_load(tmp_path: Path, tiny_bundles: Path) -> None:
    """class_centroids became class_prototypes; bundles saved with the old name (shipped ones) still load."""
    import shutil

    from safetensors.torch import load_file, save_file

    from core.concepthash import load_concepthash
    from core.concepthash.model import RENAMED_WEIGHTS

    path = Path(shutil.copytree(tiny_bundles / "toy-hash-csd", tmp_path / "old"))
    weights = load_file(path / "weights.safetensors")
    old_names = {new: old for old, new in RENAMED_WEIGHTS.items()}
    save_file({old_names.get(k, k): v for k, v in weights.items()}, path / "weights.safetensors")
    assert "class_centroids" in load_file(path / "weights.safetensors")
    loaded = load_concepthash(path, device="cpu")
    assert torch.equal(loaded.model.class_prototypes.detach(), weights["class_prototypes"])


def test_arrays_read_without_the_model_are_checked_like_a_full_load(tmp_path: Path) -> None:
    from core.bundle import read_bundle_arrays

    path = _hash_bundle(tmp_path / "b", {"db_labels": np.zeros(4, dtype=np.int64)})
    with pytest.raises(BundleError, match=r"lacks the cached arrays 'db_codes'"):
        read_bundle_arrays(path, HASH_ARRAYS)
    codes = np.ones((4, 5), dtype=np.int8)
    path = _hash_bundle(tmp_path / "c", {"db_codes": codes, "db_labels": np.zeros(4, dtype=np.int64)})
    with pytest.raises(BundleError, match=r"does not fit its bits \(6\)"):
        read_bundle_arrays(path, HASH_ARRAYS)


def test_attention_added_to_a_bundle_saved_without_it(tmp_path: Path, tiny_bundles: Path) -> None:
    import shutil

    from core.bundle import read_bundle_arrays, update_bundle_arrays
    from core.concepthash.arrays import DB_ATTENTION
    from core.concepthash.evaluate import add_view_arrays

    path = Path(shutil.copytree(tiny_bundles / "toy-hash-csd", tmp_path / "old"))
    stored = read_bundle_arrays(path, HASH_ARRAYS)
    weights = (path / "weights.safetensors").read_bytes()
    old = {name: array for name, array in stored.items() if name != DB_ATTENTION}
    (path / "arrays.safetensors").unlink()
    update_bundle_arrays(path, old)  # the bundle as saved before it held the attention
    assert DB_ATTENTION not in read_bundle_arrays(path, HASH_ARRAYS)
    add_view_arrays(str(path), device="cpu")
    again = read_bundle_arrays(path, HASH_ARRAYS)
    np.testing.assert_allclose(again[DB_ATTENTION], stored[DB_ATTENTION], atol=1e-3)
    assert (path / "weights.safetensors").read_bytes() == weights
