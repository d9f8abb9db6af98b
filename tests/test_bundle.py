"""Tests for core.bundle: round trips, strict JSON, every load error, atomic writes, listing, shape checks."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from safetensors import safe_open

import core
from core import atomic
from core import bundle as bundle_module
from core.bundle import (
    FORMAT_VERSION,
    KINDS,
    Bundle,
    BundleError,
    check_shapes,
    find_broken_bundles,
    find_bundles,
    load_bundle,
    read_bundle_config,
    save_bundle,
    update_bundle_arrays,
)


def _weights(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "head.weight": torch.randn(6, 8, generator=generator),
        "head.bias": torch.randn(6, generator=generator),
        "steps": torch.tensor([3, 1, 4], dtype=torch.int64),
    }


def _save(path: Path, kind: str = "concepthash", seed: int = 0, **kwargs) -> Path:
    config = kwargs.pop("config", {"hyper": {"bits": 16}})
    return save_bundle(path, kind=kind, config=config, weights=_weights(seed), **kwargs)


def _leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith((".tmp-", ".old-")))


# ---------------------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------------------


def test_round_trip_weights_arrays_and_config(tmp_path: Path) -> None:
    weights = _weights()
    arrays = {
        "codes": np.array([[0, 255], [7, 9]], dtype=np.uint8),
        "latents": np.arange(12, dtype=np.float64).reshape(3, 4) / 7,
        "keep": np.array([True, False, True]),
        "image_ids": np.array(["bird_001", "bird_002", "ünïcode"]),
    }
    config = {"backbone": {"name": "toy-clip"}, "hyper": {"bits": 16, "lr": 1e-3}, "metrics": {"map": 0.75}}
    path = save_bundle(tmp_path / "b", kind="concepthash", config=config, weights=weights, arrays=arrays)

    assert path == tmp_path / "b"
    files = ["arrays.json", "arrays.safetensors", "config.json", "weights.safetensors"]
    assert sorted(os.listdir(path)) == files
    loaded = load_bundle(path, kind="concepthash")
    assert loaded.kind == "concepthash"
    assert set(loaded.weights) == set(weights)
    for name, tensor in weights.items():
        assert loaded.weights[name].dtype == tensor.dtype
        assert torch.equal(loaded.weights[name], tensor)
    assert set(loaded.arrays) == set(arrays)
    for name, array in arrays.items():
        assert loaded.arrays[name].dtype == array.dtype, name
        np.testing.assert_array_equal(loaded.arrays[name], array)
    assert loaded.arrays["image_ids"].dtype.kind == "U"

    cfg = loaded.config
    assert cfg["kind"] == "concepthash" and cfg["format_version"] == FORMAT_VERSION == 1
    assert cfg["hyper"] == {"bits": 16, "lr": 1e-3} and cfg["backbone"] == {"name": "toy-clip"}
    assert loaded.section("metrics") == {"map": 0.75}
    created = datetime.fromisoformat(cfg["created"])
    assert created.utcoffset().total_seconds() == 0
    assert abs((datetime.now(UTC) - created).total_seconds()) < 120
    versions = cfg["versions"]
    assert versions["conceptlens"] == core.__version__
    assert versions["torch"] == torch.__version__ and versions["numpy"] == np.__version__
    assert {"python", "safetensors"} <= set(versions)
    assert list(cfg)[:4] == ["kind", "format_version", "created", "versions"]


def test_half_stores_float16_and_loads_float32(tmp_path: Path) -> None:
    weights = _weights()
    path = save_bundle(tmp_path / "h", kind="clip", config={}, weights=weights, half=True)
    with safe_open(str(path / "weights.safetensors"), framework="pt") as handle:
        assert handle.get_slice("head.weight").get_dtype() == "F16"
        assert handle.get_slice("steps").get_dtype() == "I64"
    loaded = load_bundle(path)
    assert loaded.weights["head.weight"].dtype == torch.float32
    assert torch.allclose(loaded.weights["head.weight"], weights["head.weight"], rtol=1e-3, atol=1e-3)
    assert not torch.equal(loaded.weights["head.weight"], weights["head.weight"])  # really was rounded
    assert torch.equal(loaded.weights["steps"], weights["steps"])


def test_float64_weights_come_back_float32(tmp_path: Path) -> None:
    weights = {"w": torch.tensor([0.1, 0.2], dtype=torch.float64)}
    loaded = load_bundle(save_bundle(tmp_path / "d", kind="ceir", config={}, weights=weights))
    assert loaded.weights["w"].dtype == torch.float32
    assert torch.equal(loaded.weights["w"], weights["w"].float())


def test_tensors_sharing_memory_and_non_contiguous_views(tmp_path: Path) -> None:
    base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
    weights = {"tied.a": base, "tied.b": base, "view": base.t(), "row": base[1]}
    loaded = load_bundle(save_bundle(tmp_path / "s", kind="clip", config={}, weights=weights))
    assert torch.equal(loaded.weights["tied.b"], base)
    assert torch.equal(loaded.weights["view"], base.t())
    assert loaded.weights["row"].tolist() == [4.0, 5.0, 6.0, 7.0]


def test_load_without_arrays_and_empty_string_array(tmp_path: Path) -> None:
    arrays = {"ids": np.array([], dtype=str), "x": np.zeros((0, 3), dtype=np.float32)}
    path = _save(tmp_path / "e", arrays=arrays)
    assert load_bundle(path, load_arrays=False).arrays == {}
    loaded = load_bundle(path).arrays
    assert loaded["ids"].shape == (0,) and loaded["ids"].dtype.kind == "U"
    assert loaded["x"].shape == (0, 3)


def test_no_arrays_means_no_array_files(tmp_path: Path) -> None:
    path = _save(tmp_path / "n")
    assert sorted(os.listdir(path)) == ["config.json", "weights.safetensors"]


# ---------------------------------------------------------------------------------------------------------
# Config: strict JSON and reserved keys
# ---------------------------------------------------------------------------------------------------------


def test_config_values_become_strict_json(tmp_path: Path) -> None:
    config = {
        "metrics": {"map": np.float32(0.5), "bad": float("nan"), "big": float("inf"), "n": np.int64(7)},
        "data": {"shape": (2, 3), "root": Path("/data/birds"), "mean": np.array([0.25, 0.5])},
        "flags": [np.bool_(True), None, torch.tensor(2.5)],
    }
    path = _save(tmp_path / "j", config=config)
    text = (path / "config.json").read_text(encoding="utf-8")
    assert "NaN" not in text and "Infinity" not in text
    raw = json.loads(text)
    assert raw["metrics"] == {"map": 0.5, "bad": None, "big": None, "n": 7}
    assert raw["data"] == {"shape": [2, 3], "root": "/data/birds", "mean": [0.25, 0.5]}
    assert raw["flags"] == [True, None, 2.5]
    assert type(raw["metrics"]["n"]) is int


def test_config_rejects_values_json_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"'hyper\.tags' is a set") as info:
        _save(tmp_path / "x", config={"hyper": {"tags": {"a"}}})
    assert str(tmp_path / "x") in str(info.value)
    with pytest.raises(BundleError, match=r"config key 3 in 'labels' is not a string"):
        _save(tmp_path / "x", config={"labels": {3: "sparrow"}})
    assert not (tmp_path / "x").exists() and _leftovers(tmp_path) == []


@pytest.mark.parametrize(("key", "value"), [("kind", "ceir"), ("format_version", 2)])
def test_config_may_not_override_reserved_keys(tmp_path: Path, key: str, value: object) -> None:
    with pytest.raises(BundleError, match=f"config sets '{key}' to {value!r}"):
        _save(tmp_path / "r", kind="concepthash", config={key: value})
    assert not (tmp_path / "r").exists()


def test_loaded_config_can_be_saved_again(tmp_path: Path) -> None:
    first = load_bundle(_save(tmp_path / "a", config={"hyper": {"bits": 32}}))
    second = save_bundle(tmp_path / "b", kind=first.kind, config=first.config, weights=first.weights)
    assert read_bundle_config(second)["hyper"] == {"bits": 32}


def test_unknown_kind_on_save(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="kind 'resnet' is unknown; use one of clip, concepthash, ceir"):
        save_bundle(tmp_path / "k", kind="resnet", config={}, weights=_weights())


@pytest.mark.parametrize(
    ("array", "fact"),
    [
        (np.array(["a", 1], dtype=object), r"dtype object \(an object array"),
        (np.array([1 + 2j]), "dtype complex128"),
        (np.array([["a", "b"]]), r"string array 'bad' has shape \(1, 2\)"),
    ],
)
def test_rejected_arrays(tmp_path: Path, array: np.ndarray, fact: str) -> None:
    with pytest.raises(BundleError, match=fact):
        _save(tmp_path / "o", arrays={"bad": array})
    assert not (tmp_path / "o").exists() and _leftovers(tmp_path) == []


def test_rejected_weights(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="weights 'w' is a ndarray, not a tensor"):
        save_bundle(tmp_path / "w", kind="clip", config={}, weights={"w": np.zeros(3)})


# ---------------------------------------------------------------------------------------------------------
# Load errors: one sentence naming the path and the fact
# ---------------------------------------------------------------------------------------------------------


def _error(path: Path, **kwargs) -> str:
    with pytest.raises(BundleError) as info:
        load_bundle(path, **kwargs)
    message = str(info.value)
    assert str(path) in message
    return message


def _write_config(path: Path, text: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(text, encoding="utf-8")
    return path


def test_missing_path(tmp_path: Path) -> None:
    assert "does not exist" in _error(tmp_path / "nope")


def test_path_is_a_file(tmp_path: Path) -> None:
    file = tmp_path / "weights.safetensors"
    file.write_bytes(b"x")
    assert "is a file, but a bundle is a directory" in _error(file)


def test_not_a_bundle(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    message = _error(tmp_path / "folder")
    assert "is not a bundle: it has no config.json" in message and "`conceptlens train ...`" in message


@pytest.mark.parametrize("text", ["{not json", '{"kind": "clip", "format_version": NaN}', "[1, 2]"])
def test_invalid_config_json(tmp_path: Path, text: str) -> None:
    assert "invalid config.json" in _error(_write_config(tmp_path / "bad", text))


@pytest.mark.parametrize(
    ("content", "missing"), [({"format_version": 1}, "kind"), ({"kind": "clip"}, "format_version")]
)
def test_missing_reserved_key(tmp_path: Path, content: dict, missing: str) -> None:
    message = _error(_write_config(tmp_path / "m", json.dumps(content)))
    assert f"has no '{missing}' in its config.json" in message


def test_wrong_kind(tmp_path: Path) -> None:
    path = _save(tmp_path / "c", kind="ceir")
    expected = f"Bundle {path} is a 'ceir' bundle, but a 'concepthash' bundle is needed."
    assert _error(path, kind="concepthash") == expected
    assert "but a 'clip' or 'concepthash' bundle is needed" in _error(path, kind=["clip", "concepthash"])
    assert load_bundle(path, kind=("concepthash", "ceir")).kind == "ceir"


def test_asking_for_an_unknown_kind_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="kind must be one or more of"):
        load_bundle(_save(tmp_path / "c"), kind="resnet")


def test_newer_format_version(tmp_path: Path) -> None:
    path = _write_config(tmp_path / "new", json.dumps({"kind": "clip", "format_version": FORMAT_VERSION + 1}))
    message = _error(path)
    assert f"format version {FORMAT_VERSION + 1}" in message
    assert "made by a newer ConceptLens" in message and "upgrade" in message


@pytest.mark.parametrize("version", [0, "1", True, 1.0])
def test_invalid_format_version(tmp_path: Path, version: object) -> None:
    path = _write_config(tmp_path / "v", json.dumps({"kind": "clip", "format_version": version}))
    assert f"invalid format_version {version!r}" in _error(path)


def test_unknown_kind_on_load(tmp_path: Path) -> None:
    path = _write_config(tmp_path / "u", json.dumps({"kind": "resnet", "format_version": 1}))
    assert "unknown kind 'resnet'; known kinds are clip, concepthash, ceir" in _error(path)


def test_weights_missing(tmp_path: Path) -> None:
    path = _save(tmp_path / "w")
    (path / "weights.safetensors").unlink()
    assert read_bundle_config(path)["kind"] == "concepthash"  # config alone is still fine
    assert "is missing weights.safetensors" in _error(path)


def test_weights_truncated(tmp_path: Path) -> None:
    path = _save(tmp_path / "t")
    data = (path / "weights.safetensors").read_bytes()
    (path / "weights.safetensors").write_bytes(data[: len(data) - 10])
    assert "corrupt or truncated weights.safetensors" in _error(path)


def test_arrays_file_corrupt(tmp_path: Path) -> None:
    path = _save(tmp_path / "a", arrays={"x": np.ones(5, dtype=np.float32), "ids": np.array(["a"])})
    (path / "arrays.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    assert "corrupt or truncated arrays.safetensors" in _error(path)
    assert load_bundle(path, load_arrays=False).weights  # weights still readable without arrays


@pytest.mark.parametrize("text", ["{oops", '{"ids": [1, 2]}', '["a"]'])
def test_string_arrays_file_corrupt(tmp_path: Path, text: str) -> None:
    path = _save(tmp_path / "s", arrays={"ids": np.array(["a"])})
    (path / "arrays.json").write_text(text, encoding="utf-8")
    assert "corrupt arrays.json" in _error(path)


def test_section(tmp_path: Path) -> None:
    loaded = load_bundle(_save(tmp_path / "s", config={"hyper": {"bits": 8}, "note": "text"}))
    assert loaded.section("hyper") == {"bits": 8}
    with pytest.raises(BundleError, match=r"has no 'data' section") as info:
        loaded.section("data")
    assert str(loaded.path) in str(info.value)
    with pytest.raises(BundleError, match="'note' entry .* is a str, not a section"):
        loaded.section("note")


def test_bundle_repr_is_short(tmp_path: Path) -> None:
    loaded = load_bundle(_save(tmp_path / "r"))
    assert isinstance(loaded, Bundle) and "tensor(" not in repr(loaded)


# ---------------------------------------------------------------------------------------------------------
# Atomic writes and overwrite semantics
# ---------------------------------------------------------------------------------------------------------


def _fail_midway(tensors, filename, metadata=None):
    Path(filename).write_bytes(b"half a file")
    raise RuntimeError("disk full")


def test_failure_while_replacing_keeps_old_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save(tmp_path / "b", seed=1, arrays={"ids": np.array(["old"])})
    before = {name: (path / name).read_bytes() for name in os.listdir(path)}
    monkeypatch.setattr(safetensors.torch, "save_file", _fail_midway)
    with pytest.raises(RuntimeError, match="disk full"):
        _save(path, seed=2, overwrite=True)
    assert {name: (path / name).read_bytes() for name in os.listdir(path)} == before
    assert torch.equal(load_bundle(path).weights["head.weight"], _weights(1)["head.weight"])
    assert _leftovers(tmp_path) == []


def test_failure_on_new_path_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(safetensors.torch, "save_file", _fail_midway)
    with pytest.raises(RuntimeError):
        _save(tmp_path / "fresh")
    assert os.listdir(tmp_path) == []


def test_failed_final_rename_puts_old_bundle_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save(tmp_path / "b", seed=1)
    real_replace = os.replace

    def replace(source, target):
        if Path(source).name.startswith(".tmp-"):
            raise OSError("rename failed")
        real_replace(source, target)

    monkeypatch.setattr(atomic.os, "replace", replace)
    with pytest.raises(OSError, match="rename failed"):
        _save(path, seed=2, overwrite=True)
    monkeypatch.undo()
    assert torch.equal(load_bundle(path).weights["head.weight"], _weights(1)["head.weight"])
    assert _leftovers(tmp_path) == []


def test_overwrite_semantics(tmp_path: Path) -> None:
    path = _save(tmp_path / "b", seed=1, arrays={"ids": np.array(["old"])})
    with pytest.raises(BundleError, match="already exists there; pass overwrite=True"):
        _save(path, seed=2)
    assert torch.equal(load_bundle(path).weights["head.weight"], _weights(1)["head.weight"])

    _save(path, kind="ceir", seed=2, overwrite=True)
    loaded = load_bundle(path)
    assert loaded.kind == "ceir"
    assert torch.equal(loaded.weights["head.weight"], _weights(2)["head.weight"])
    assert loaded.arrays == {}  # the old bundle's arrays are gone, not mixed in
    assert sorted(os.listdir(tmp_path)) == ["b"]


def test_never_replaces_a_file_or_a_foreign_folder(tmp_path: Path) -> None:
    file = tmp_path / "notes.txt"
    file.write_text("keep me")
    with pytest.raises(BundleError, match="a file is in the way"):
        _save(file, overwrite=True)
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"jpg")
    with pytest.raises(BundleError, match="holds other files and is not a bundle"):
        _save(folder, overwrite=True)
    assert file.read_text() == "keep me" and (folder / "cat.jpg").read_bytes() == b"jpg"
    assert _leftovers(tmp_path) == []


def test_empty_folder_and_missing_parents_are_fine(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert load_bundle(_save(tmp_path / "empty")).kind == "concepthash"
    assert load_bundle(_save(tmp_path / "runs" / "deep" / "b")).kind == "concepthash"


# ---------------------------------------------------------------------------------------------------------
# update_bundle_arrays
# ---------------------------------------------------------------------------------------------------------


def test_update_arrays_keeps_weights_and_merges_metrics(tmp_path: Path) -> None:
    config = {"hyper": {"bits": 16}, "metrics": {"map": 0.5, "loss": 1.25}}
    arrays = {"codes": np.array([[1, 2]], dtype=np.uint8), "ids": np.array(["a", "b"])}
    path = _save(tmp_path / "b", config=config, arrays=arrays, half=True)
    (path / "README.txt").write_text("extra file")
    weight_bytes = (path / "weights.safetensors").read_bytes()
    created = read_bundle_config(path)["created"]

    umap = np.array([[0.5, -1.0], [2.0, 3.0]], dtype=np.float32)
    update_bundle_arrays(
        path,
        {"umap": umap, "ids": np.array(["x", "y", "z"])},
        metrics={"map": np.float64(0.75), "recall": float("nan")},
    )

    assert (path / "weights.safetensors").read_bytes() == weight_bytes
    assert (path / "README.txt").read_text() == "extra file"
    loaded = load_bundle(path)
    assert loaded.config["metrics"] == {"map": 0.75, "loss": 1.25, "recall": None}
    assert loaded.config["hyper"] == {"bits": 16} and loaded.config["created"] == created
    np.testing.assert_array_equal(loaded.arrays["codes"], arrays["codes"])
    np.testing.assert_array_equal(loaded.arrays["umap"], umap)
    assert loaded.arrays["ids"].tolist() == ["x", "y", "z"]
    assert _leftovers(tmp_path) == []


def test_update_arrays_can_change_an_array_from_numbers_to_strings(tmp_path: Path) -> None:
    path = _save(tmp_path / "b", arrays={"labels": np.array([0, 1])})
    update_bundle_arrays(path, {"labels": np.array(["sparrow", "finch"])})
    assert load_bundle(path).arrays["labels"].tolist() == ["sparrow", "finch"]
    assert not (path / "arrays.safetensors").exists()
    assert json.loads((path / "arrays.json").read_text()) == {"labels": ["sparrow", "finch"]}


def test_update_arrays_adds_metrics_section_and_failure_keeps_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _save(tmp_path / "b", config={})
    update_bundle_arrays(path, {}, metrics={"map": 0.5})
    assert read_bundle_config(path)["metrics"] == {"map": 0.5}
    before = (path / "config.json").read_bytes()

    def fail(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(bundle_module.st_numpy, "save_file", fail)
    with pytest.raises(RuntimeError):
        update_bundle_arrays(path, {"x": np.ones(2)}, metrics={"map": 0.9})
    assert (path / "config.json").read_bytes() == before
    assert sorted(os.listdir(path)) == ["config.json", "weights.safetensors"]
    assert _leftovers(tmp_path) == []


def test_update_arrays_rejects_bad_input(tmp_path: Path) -> None:
    path = _save(tmp_path / "b")
    with pytest.raises(BundleError, match="array 'bad' has dtype object"):
        update_bundle_arrays(path, {"bad": np.array([None], dtype=object)})
    with pytest.raises(BundleError, match="metrics must be a dict, not list"):
        update_bundle_arrays(path, {}, metrics=[0.5])
    with pytest.raises(BundleError, match="does not exist"):
        update_bundle_arrays(tmp_path / "missing", {})


# ---------------------------------------------------------------------------------------------------------
# find_bundles and check_shapes
# ---------------------------------------------------------------------------------------------------------


def test_find_bundles(tmp_path: Path) -> None:
    _save(tmp_path / "zeta", kind="clip")
    _save(tmp_path / "runs" / "alpha", kind="ceir")
    _save(tmp_path / "a" / "b" / "too_deep")
    _save(tmp_path / ".tmp-hidden")
    _write_config(tmp_path / "broken", "{oops")
    _write_config(tmp_path / "runs" / "foreign", json.dumps({"kind": "resnet", "format_version": 1}))
    _write_config(tmp_path / "future", json.dumps({"kind": "clip", "format_version": FORMAT_VERSION + 1}))
    (tmp_path / "plain").mkdir()
    (tmp_path / "file.txt").write_text("x")

    assert find_bundles(tmp_path) == [tmp_path / "runs" / "alpha", tmp_path / "zeta"]
    assert find_bundles(tmp_path / "zeta") == [tmp_path / "zeta"]
    assert find_bundles(tmp_path / "missing") == []
    with pytest.raises(BundleError, match="it is a file, not a folder"):
        find_bundles(tmp_path / "file.txt")


def test_check_shapes_passes_when_everything_fits() -> None:
    weights = _weights()
    check_shapes(weights, {name: tuple(t.shape) for name, t in weights.items()})
    check_shapes(weights, {name: t.shape for name, t in weights.items()})  # torch.Size works too


def test_check_shapes_message_for_a_mismatch() -> None:
    with pytest.raises(BundleError) as info:
        check_shapes({"head.weight": torch.zeros(4, 8)}, {"head.weight": (6, 8)}, path="runs/b")
    assert str(info.value) == (
        "Bundle runs/b does not fit the model: "
        "weights 'head.weight' has shape (4, 8) but the model expects (6, 8)."
    )


def test_check_shapes_lists_missing_unexpected_and_mismatched() -> None:
    weights = {"a": torch.zeros(2), "b": torch.zeros(3), "extra": torch.zeros(1)}
    expected = {"a": (2,), "b": (4,), "gone": (5, 5)}
    with pytest.raises(BundleError) as info:
        check_shapes(weights, expected)
    assert str(info.value) == (
        "The weights do not fit the model: missing weights 'gone'; unexpected weights 'extra'; "
        "weights 'b' has shape (3,) but the model expects (4,)."
    )


def test_check_shapes_shortens_long_lists() -> None:
    expected = {f"w{i}": (1,) for i in range(11)}
    with pytest.raises(BundleError, match=r"'w7' and 3 more\.$"):
        check_shapes({}, expected)


def test_kinds_constant() -> None:
    assert KINDS == ("clip", "concepthash", "ceir")


def test_find_broken_bundles_names_each_with_its_reason(tmp_path):
    save_bundle(tmp_path / "good", kind="clip", config={}, weights=_weights())
    (tmp_path / "bad-json").mkdir()
    (tmp_path / "bad-json" / "config.json").write_text("{oops")
    (tmp_path / "group" / "future").mkdir(parents=True)
    (tmp_path / "group" / "future" / "config.json").write_text(
        json.dumps({"kind": "clip", "format_version": FORMAT_VERSION + 1})
    )
    broken = dict(find_broken_bundles(tmp_path))
    assert set(broken) == {tmp_path / "bad-json", tmp_path / "group" / "future"}
    assert "config.json" in broken[tmp_path / "bad-json"]
    assert "newer" in broken[tmp_path / "group" / "future"]
    assert find_bundles(tmp_path) == [tmp_path / "good"]
