"""The bundles shipped in pretrained/ load, and their stored metrics match a fresh `conceptlens eval`."""

from __future__ import annotations

import json

import pytest

from core.bundle import find_bundles, read_bundle_config
from core.kinds import evaluate_any
from core.reproduce import shipped_steps
from tests.conftest import ROOT

PRETRAINED = ROOT / "pretrained"
# name -> kind, from the shipped runs (core/shipped_runs.toml): "train KIND ..."
SHIPPED = {step.name: step.argv[1] for step in shipped_steps()}
# Stored metrics were computed on the machine that trained the bundle; another CPU may round differently.
TOLERANCE = 0.02


def test_every_shipped_bundle_is_there_with_its_kind():
    found = {path.name: read_bundle_config(path)["kind"] for path in find_bundles(PRETRAINED)}
    assert found == SHIPPED


def test_shipped_bundles_are_small():
    total = sum(p.stat().st_size for p in PRETRAINED.rglob("*") if p.is_file())
    assert total < 100 * 2**20


def test_results_file_matches_the_bundles():
    results = json.loads((PRETRAINED / "results.json").read_text())
    assert set(results["steps"]) == set(SHIPPED)
    for name, step in results["steps"].items():
        stored = read_bundle_config(PRETRAINED / name)["metrics"]
        for key in ("map", "acc", "zero_shot_accuracy"):
            if key in stored:
                assert step["test"][key] == pytest.approx(stored[key], abs=TOLERANCE)


def headline(result: dict) -> dict[str, float]:
    values = {
        k: result[k]
        for k in ("map", "diversity", "acc", "nmi", "ari", "zero_shot_accuracy", "concept_precision_at_5")
        if k in result
    }
    values |= {f"P@{k}": v for k, v in result.get("precision_at", {}).items()}
    for name, protocol in result.get("protocols", {}).items():
        if isinstance(protocol, dict):  # per method: ACC under this protocol (mean over k-means seeds)
            values |= {f"{name} {m} acc": v["acc"] for m, v in protocol.items() if isinstance(v, dict)}
    if "labels" in result:
        values["label precision"] = result["labels"]["precision"]
    if "localization" in result:
        values["hit_rate"] = result["localization"]["mean_hit_rate"]
    return values


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_stored_metrics_match_a_fresh_eval(name):
    path = PRETRAINED / name
    stored = read_bundle_config(path)["metrics"]
    fresh = evaluate_any(path, device="cpu")
    expected = headline(stored)
    assert expected, f"{name} stores no metrics"
    got = headline(fresh)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=TOLERANCE), key


def test_shipped_ceir_defaults_are_the_option_study_choice():
    """The defaults CEIR ships with are what the validation-seed option study chose (core.ceir.options)."""
    from core.ceir.options import chosen_variant

    results = json.loads((PRETRAINED / "results.json").read_text())
    assert chosen_variant(results["ceir_options"]) == "defaults"
