"""A corpus of damaged bundles, made from the shipped ones in ``pretrained/`` (never changed).

Each :class:`Damage` is one thing a hostile user, a half-finished copy or a hand edit can do to one bundle:
an array of the ToyBirds CEIR or ConceptHash bundle given NaN, an infinite value, another dtype or rank or
length, ids out of range, or removed; a weight of any kind made NaN, infinite, whole numbers, another shape
or removed; every number a kind's layout declares (``core.validate``) set to a string, a negative number,
``1e999`` (JSON's infinity) or a huge number; sections, lists of texts and relations between numbers broken.

:func:`make_copy` builds one damaged copy in a folder of the caller's: files the damage leaves alone are
hard links to the shipped ones (a copy where linking is impossible) and every file the damage changes is
unlinked first and written anew, so the shipped bundles are never written to. A copy costs a few
milliseconds.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy as st_numpy

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "pretrained"
SOURCES = {"clip": "toybirds-clip", "concepthash": "toybirds-concepthash-csd", "ceir": "toybirds-ceir"}
HUGE = 10**18  # above every bound a layout sets, below what JSON and int64 can hold
INFINITY = "__infinity__"  # written into config.json as the literal 1e999


@dataclass(frozen=True)
class Damage:
    """One damage to one shipped bundle: what the refusal must name (``names``: the array, weight or key;
    ``file``: the file it is in) and the edit that does it (``apply(bundle)``)."""

    name: str
    kind: str
    names: str
    file: str
    apply: Callable[[Path], None]

    def __str__(self) -> str:
        return self.name


# --------------------------------------------------------------------------------------------------------
# Copies and the edits they get (every write replaces the file, never a shared hard link's content)
# --------------------------------------------------------------------------------------------------------


def make_copy(root: Path, damage: Damage | None, kind: str | None = None) -> Path:
    """A copy of the shipped bundle of ``damage.kind`` (or ``kind``) in ``root``, with ``damage`` done."""
    kind = damage.kind if damage is not None else kind
    name = damage.name.replace("/", "-") if damage is not None else f"good-{kind}"
    target = root / name
    target.mkdir(parents=True)
    for file in (SHIPPED / SOURCES[kind]).iterdir():
        try:
            os.link(file, target / file.name)
        except OSError:
            shutil.copy2(file, target / file.name)
    if damage is not None:
        damage.apply(target)
    return target


def _fresh(file: Path) -> Path:
    """``file`` unlinked, so what is written next is a new file (the shipped one keeps its content)."""
    file.unlink(missing_ok=True)
    return file


def _edit_arrays(bundle: Path, edit: Callable[[dict[str, np.ndarray]], None]) -> None:
    arrays = st_numpy.load_file(str(bundle / "arrays.safetensors"))
    edit(arrays)
    st_numpy.save_file(arrays, str(_fresh(bundle / "arrays.safetensors")))


def _edit_strings(bundle: Path, edit: Callable[[dict[str, list[str]]], None]) -> None:
    strings = json.loads((bundle / "arrays.json").read_text(encoding="utf-8"))
    edit(strings)
    _fresh(bundle / "arrays.json").write_text(json.dumps(strings), encoding="utf-8")


def _edit_weights(bundle: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    import safetensors.torch as st_torch

    weights = st_torch.load_file(str(bundle / "weights.safetensors"))
    edit(weights)
    st_torch.save_file(weights, str(_fresh(bundle / "weights.safetensors")), metadata={"format": "pt"})


def _edit_config(bundle: Path, edit: Callable[[dict[str, Any]], None]) -> None:
    config = json.loads((bundle / "config.json").read_text(encoding="utf-8"))
    edit(config)
    text = json.dumps(config, indent=2).replace(f'"{INFINITY}"', "1e999")
    _fresh(bundle / "config.json").write_text(text, encoding="utf-8")


def _set(config: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted key ("ceir.vae.latent_dim"; "x.y[]" sets the list x.y to ``[value]``), making sections."""
    *sections, last = key.split(".")
    node = config
    for name in sections:
        node = node.setdefault(name, {})
    node[last.removesuffix("[]")] = [value] if last.endswith("[]") else value


# --------------------------------------------------------------------------------------------------------
# Array damage
# --------------------------------------------------------------------------------------------------------


def _poke(name: str, value: float) -> Callable[[dict[str, np.ndarray]], None]:
    """Put ``value`` into the array's first row (the row a sentence then points at is 0)."""

    def edit(arrays: dict[str, np.ndarray]) -> None:
        array = arrays[name].copy()
        array.reshape(len(array), -1)[0, 0] = value
        arrays[name] = array

    return edit


def _astype(name: str, dtype: str) -> Callable[[dict[str, np.ndarray]], None]:
    def edit(arrays: dict[str, np.ndarray]) -> None:
        arrays[name] = arrays[name].astype(dtype)

    return edit


def _reshape(name: str, shape: Callable[[tuple[int, ...]], tuple[int, ...]]) -> Callable[[dict], None]:
    """The array cut or padded (zeros, in its dtype) to ``shape(old shape)``."""

    def edit(arrays: dict[str, np.ndarray]) -> None:
        old = arrays[name]
        new = np.zeros(shape(old.shape), dtype=old.dtype)
        common = tuple(slice(0, min(a, b)) for a, b in zip(old.shape, new.shape, strict=False))
        if new.ndim == old.ndim:
            new[common] = old[common]
        arrays[name] = new

    return edit


def _drop(name: str) -> Callable[[dict], None]:
    def edit(arrays: dict) -> None:
        del arrays[name]

    return edit


def _ids_as_numbers(name: str) -> Callable[[Path], None]:
    """A string array moved out of arrays.json into arrays.safetensors as numbers."""

    def apply(bundle: Path) -> None:
        length = len(json.loads((bundle / "arrays.json").read_text())[name])
        _edit_strings(bundle, _drop(name))
        _edit_arrays(bundle, lambda arrays: arrays.update({name: np.arange(length)}))

    return apply


def _bfloat16_array(bundle: Path) -> None:
    import safetensors.torch as st_torch
    import torch

    arrays = st_numpy.load_file(str(bundle / "arrays.safetensors"))
    tensors = {name: torch.from_numpy(array) for name, array in arrays.items()}
    tensors["extra"] = torch.zeros(3, dtype=torch.bfloat16)
    st_torch.save_file(tensors, str(_fresh(bundle / "arrays.safetensors")))


def _arrays(kind: str, how: str, name: str, edit: Callable[[dict], None]) -> Damage:
    return Damage(f"{kind}/{name}/{how}", kind, name, "arrays.safetensors", lambda b: _edit_arrays(b, edit))


def _strings(kind: str, how: str, name: str, edit: Callable[[dict], None]) -> Damage:
    return Damage(f"{kind}/{name}/{how}", kind, name, "arrays.json", lambda b: _edit_strings(b, edit))


def _fingerprints(name: str, table: str) -> Callable[[dict], None]:
    """Add files' fingerprints (the shipped ToyBirds bundles have none) one row short of ``table``."""
    return lambda arrays: arrays.update({name: np.ones(len(arrays[table]) - 1, dtype=np.int64)})


def _rows(minus: int = 1) -> Callable[[tuple[int, ...]], tuple[int, ...]]:
    return lambda shape: (shape[0] - minus, *shape[1:])


def _width(delta: int) -> Callable[[tuple[int, ...]], tuple[int, ...]]:
    return lambda shape: (*shape[:-1], shape[-1] + delta)


def _flat(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (math.prod(shape),)


HASH, CEIR, CLIP = "concepthash", "ceir", "clip"


def array_damage() -> list[Damage]:
    """Every array of the ConceptHash and CEIR bundles, damaged in the ways that matter for it."""
    h, c = HASH, CEIR
    return [
        # ConceptHash: codes are ±1, labels name one of the 24 classes, attention is finite on one grid
        _arrays(h, "zero", "db_codes", _poke("db_codes", 0)),
        _arrays(h, "two", "db_codes", _poke("db_codes", 2)),
        _arrays(h, "float", "db_codes", _astype("db_codes", "float32")),
        _arrays(h, "width", "db_codes", _reshape("db_codes", _width(1))),
        _arrays(h, "rank", "db_codes", _reshape("db_codes", _flat)),
        _arrays(h, "missing", "db_codes", _drop("db_codes")),
        _arrays(h, "negative", "db_labels", _poke("db_labels", -1)),
        _arrays(h, "beyond", "db_labels", _poke("db_labels", 24)),
        _arrays(h, "float", "db_labels", _astype("db_labels", "float32")),
        _arrays(h, "short", "db_labels", _reshape("db_labels", _rows())),
        _arrays(h, "missing", "db_labels", _drop("db_labels")),
        _arrays(h, "nan", "db_attention", _poke("db_attention", np.nan)),
        _arrays(h, "inf", "db_attention", _poke("db_attention", np.inf)),
        _arrays(h, "grid", "db_attention", _reshape("db_attention", _width(-1))),
        _arrays(h, "attended", "db_attention", _reshape("db_attention", lambda s: (s[0], 2, *s[2:]))),
        _arrays(h, "short", "query_codes", _reshape("query_codes", _rows())),
        _arrays(h, "three", "query_codes", _poke("query_codes", 3)),
        _arrays(h, "inf", "query_attention", _poke("query_attention", -np.inf)),
        _arrays(h, "short", "db_prints", _fingerprints("db_prints", "db_codes")),
        _arrays(h, "short", "query_prints", _fingerprints("query_prints", "query_codes")),
        _strings(h, "short", "db_ids", lambda s: s.update(db_ids=s["db_ids"][:-1])),
        _strings(h, "long", "query_ids", lambda s: s.update(query_ids=[*s["query_ids"], "x"])),
        Damage(f"{h}/db_ids/numbers", h, "db_ids", "arrays.safetensors", _ids_as_numbers("db_ids")),
        Damage(f"{h}/extra/bfloat16", h, "extra", "arrays.safetensors", _bfloat16_array),
        # CEIR: finite concept vectors, latents, map, contributions, fidelities and OOD reference; cluster
        # ids below the 24 stored centres, class ids below the 24 classes
        _arrays(c, "nan", "train_concepts", _poke("train_concepts", np.nan)),
        _arrays(c, "inf", "train_concepts", _poke("train_concepts", np.inf)),
        _arrays(c, "int", "train_concepts", _astype("train_concepts", "int32")),
        _arrays(c, "rank", "train_concepts", _reshape("train_concepts", _flat)),
        _arrays(c, "short", "train_concepts", _reshape("train_concepts", _rows())),
        _arrays(c, "width", "train_concepts", _reshape("train_concepts", _width(-1))),
        _arrays(c, "missing", "train_concepts", _drop("train_concepts")),
        _arrays(c, "nan", "train_latents", _poke("train_latents", np.nan)),
        _arrays(c, "width", "train_latents", _reshape("train_latents", _width(1))),
        _arrays(c, "missing", "train_latents", _drop("train_latents")),
        _arrays(c, "negative", "train_clusters", _poke("train_clusters", -1)),
        _arrays(c, "beyond", "train_clusters", _poke("train_clusters", 24)),
        _arrays(c, "float", "train_clusters", _astype("train_clusters", "float64")),
        _arrays(c, "missing", "train_clusters", _drop("train_clusters")),
        _arrays(c, "beyond", "train_labels", _poke("train_labels", 99)),
        _arrays(c, "negative", "train_labels", _poke("train_labels", -5)),
        _arrays(c, "missing", "train_labels", _drop("train_labels")),
        _arrays(c, "nan", "train_umap", _poke("train_umap", np.nan)),
        _arrays(c, "width", "train_umap", _reshape("train_umap", _width(1))),
        _arrays(c, "inf", "train_contributions", _poke("train_contributions", np.inf)),
        _arrays(c, "short", "train_contributions", _reshape("train_contributions", _rows(2))),
        _arrays(c, "nan", "concept_fidelity", _poke("concept_fidelity", np.nan)),
        _arrays(c, "length", "concept_fidelity", _reshape("concept_fidelity", _rows())),
        _arrays(c, "nan", "ood_reference", _poke("ood_reference", np.nan)),
        _arrays(c, "rank", "ood_reference", _reshape("ood_reference", _flat)),
        _arrays(c, "width", "ood_reference", _reshape("ood_reference", _width(-1))),
        _arrays(c, "short", "train_prints", _fingerprints("train_prints", "train_concepts")),
        _strings(c, "short", "train_ids", lambda s: s.update(train_ids=s["train_ids"][:-1])),
        Damage(f"{c}/train_ids/numbers", c, "train_ids", "arrays.safetensors", _ids_as_numbers("train_ids")),
    ]


# --------------------------------------------------------------------------------------------------------
# Weight damage
# --------------------------------------------------------------------------------------------------------


def _weight(kind: str, how: str, name: str, edit: Callable[[dict, str], None]) -> Damage:
    """A damaged weight: refused from weights.safetensors, or when the model is built ("weights 'x' ...")."""

    def apply(bundle: Path) -> None:
        _edit_weights(bundle, lambda weights: edit(weights, name))

    return Damage(f"{kind}/weight-{name}/{how}", kind, name, "weights", apply)


def _weight_value(value: float) -> Callable[[dict, str], None]:
    def edit(weights: dict, name: str) -> None:
        weights[name] = weights[name].clone()
        weights[name].view(-1)[0] = value

    return edit


def _weight_int(weights: dict, name: str) -> None:
    import torch

    weights[name] = weights[name].round().to(torch.int32)


def _weight_shape(weights: dict, name: str) -> None:
    weights[name] = weights[name].reshape(-1)[:-1].clone()


def _weight_drop(weights: dict, name: str) -> None:
    del weights[name]


def weight_damage() -> list[Damage]:
    """A weight of every kind made NaN or infinite (refused from the file), whole numbers, of another shape
    or removed (refused when the model is built: its sentence says which weight)."""
    return [
        _weight(HASH, "nan", "hash_head.weight", _weight_value(float("nan"))),
        _weight(HASH, "inf", "specificity", _weight_value(float("inf"))),
        _weight(HASH, "int", "hash_head.weight", _weight_int),
        _weight(HASH, "shape", "hash_head.weight", _weight_shape),
        _weight(HASH, "missing", "hash_head.weight", _weight_drop),
        _weight(CEIR, "nan", "projection.weight", _weight_value(float("nan"))),
        _weight(CEIR, "inf", "cluster_centers", _weight_value(float("inf"))),
        _weight(CEIR, "rank", "projection.weight", _weight_shape),
        _weight(CEIR, "missing", "cluster_centers", _weight_drop),
        _weight(CEIR, "int", "cluster_centers", _weight_int),
        _weight(CLIP, "nan", "visual.proj", _weight_value(float("nan"))),
        _weight(CLIP, "inf", "text_projection", _weight_value(float("-inf"))),
        _weight(CLIP, "int", "visual.proj", _weight_int),
        _weight(CLIP, "shape", "visual.proj", _weight_shape),
        _weight(CLIP, "missing", "visual.proj", _weight_drop),
    ]


# --------------------------------------------------------------------------------------------------------
# Config damage: every number a layout declares, and sections, texts and relations
# --------------------------------------------------------------------------------------------------------


def _config(kind: str, how: str, names: str, edit: Callable[[dict], None]) -> Damage:
    return Damage(f"{kind}/config-{names}/{how}", kind, names, "config.json", lambda b: _edit_config(b, edit))


def _setter(key: str, value: Any) -> Callable[[dict], None]:
    return lambda config: _set(config, key, value)


def number_damage() -> list[Damage]:
    """Every numeric key of every kind's layout as a string, a negative number, 1e999 and (where the key has
    an upper bound) a huge number."""
    from core.kinds import KINDS

    damage = []
    for kind in (CLIP, HASH, CEIR):
        for key, rule in KINDS[kind].arrays().numbers.items():
            shown = key.replace("[]", "[0]")
            values = {"string": "twelve", "negative": -3, "1e999": INFINITY}
            if math.isfinite(rule.high):
                values["huge"] = HUGE
            for how, value in values.items():
                damage.append(_config(kind, how, shown, _setter(key, value)))
    return damage


def _clip_width(config: dict) -> None:
    config["backbone"]["model_cfg"]["vision_cfg"]["head_width"] = 48  # 128 is no multiple of 48


def structure_damage() -> list[Damage]:
    """Sections that are not objects, texts that are not lists of texts, numbers that do not fit together, an
    infinity among the metrics."""
    return [
        _config(HASH, "string", "model", _setter("model", "six bits")),
        _config(CEIR, "list", "ceir.vae", _setter("ceir.vae", [16])),
        _config(CEIR, "string", "ceir.vae.hidden_dims", _setter("ceir.vae.hidden_dims", "256")),
        _config(HASH, "string", "classes", _setter("classes", "sparrow")),
        _config(CEIR, "numbers", "concepts", _setter("concepts", [1, 2, 3])),
        _config(HASH, "split", "model.bits", _setter("model.bits", 7)),
        _config(HASH, "heads", "model.generator_dim", _setter("model.generator_heads", 3)),
        _config(HASH, "list", "model.part_phrases", _setter("model.part_phrases", ["head", "wing"])),
        _config(CLIP, "heads", "backbone.model_cfg.vision_cfg.width", _clip_width),
        _config(CEIR, "1e999", "metrics.acc", _setter("metrics.acc", INFINITY)),
        _config(CLIP, "1e999", "metrics.n_test", _setter("metrics.n_test", INFINITY)),
    ]


def corpus() -> list[Damage]:
    """The whole tampering corpus (only reads the layouts: no file is touched until :func:`make_copy`)."""
    return [*array_damage(), *weight_damage(), *number_damage(), *structure_damage()]
