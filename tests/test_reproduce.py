"""`conceptlens reproduce`: the seed-study commands and the mean ± std it reports."""

from __future__ import annotations

import pytest

from core import reproduce
from core.ceir.options import FIGURES, chosen_variant


def test_seed_variant_changes_only_the_training_seed_and_the_output():
    step = next(s for s in reproduce.shipped_steps() if s.name == "toybirds-concepthash-csd")
    variant = reproduce.seed_variant(step, 2, "runs/study")
    changed = [(a, b) for a, b in zip(step.argv, variant.argv, strict=True) if a != b]
    assert changed == [
        ("0", "2"),
        ("pretrained/toybirds-concepthash-csd", "runs/study/toybirds-concepthash-csd-seed2"),
    ]
    assert variant.argv[variant.argv.index("--seed") + 1] == "2"


def test_a_step_that_names_its_size_gets_that_size_once_and_the_quick_one_in_a_smoke_test():
    full, quick = (
        next(s for s in reproduce.shipped_steps(quick=q) if s.name == "toybirds-concepthash-parts")
        for q in (False, True)
    )
    runs = reproduce.shipped_runs()
    assert full.argv.count("--epochs") == 1 and full.argv[full.argv.index("--epochs") + 1] == "120"
    assert full.argv[full.argv.index("--epochs") + 1] == runs["full"]["concepthash_long"][1]
    assert quick.argv.count("--epochs") == 1 and quick.argv[quick.argv.index("--epochs") + 1] == "1"
    plain = next(s for s in reproduce.shipped_steps() if s.name == "toybirds-concepthash-csd")
    assert plain.argv[plain.argv.index("--epochs") + 1] == runs["full"]["concepthash"][1]


def _result(map_value: float, matched: float) -> dict:
    return {
        "map": map_value,
        "part_swap": {"matched_flip_rate_mean": matched, "largest_off_diagonal": {"flip_rate": 0.1}},
        "localization_overlap": {"mean_hit_rate": 0.5},
        "diversity": 0.3,
        "flip_invariance": 1.0,
    }


def test_seed_study_aggregates_every_concepthash_step_over_seeds(monkeypatch, tmp_path):
    trained = []
    monkeypatch.setattr(reproduce, "run_step", lambda step, log: trained.append(step.argv) or 1.0)
    maps = {"1": 0.8, "2": 0.6}
    fake = lambda path, seed, device: _result(maps[str(path)[-1]], 0.5)  # noqa: E731
    monkeypatch.setattr("core.kinds.evaluate_any", fake)
    steps = [s for s in reproduce.shipped_steps() if s.name in ("toybirds-clip", "toybirds-concepthash-csd")]
    fresh = {"toybirds-concepthash-csd": _result(1.0, 0.5)}
    study = reproduce.seed_study(steps, fresh, [1, 2], str(tmp_path), log=lambda *_: None)
    assert len(trained) == 2 and all(
        "concepthash" in argv for argv in trained
    )  # the CLIP step is not retrained
    figures = study["variants"]["toybirds-concepthash-csd"]
    assert list(study["variants"]) == ["toybirds-concepthash-csd"] and study["seeds"] == [0, 1, 2]
    assert figures["mAP"]["values"] == [1.0, 0.8, 0.6]
    assert figures["mAP"]["mean"] == pytest.approx(0.8) and figures["mAP"]["std"] == pytest.approx(0.2)
    assert figures["part swap: matched flip rate"]["std"] == 0.0
    table = "\n".join(reproduce.render_seed_study(study))
    assert "| toybirds-concepthash-csd | 0.800 ± 0.200 | 0.500 ± 0.000 |" in table


def _ceir_result(latent: float) -> dict:
    scores = {"acc": latent, "acc_std": 0.0, "nmi": 0.9, "nmi_std": 0.0, "ari": 0.8, "ari_std": 0.0}
    protocol = {"ceir": scores, "clip_embedding": scores | {"acc": 0.95}, "concepts": scores}
    return {
        "protocols": {"inductive": protocol, "transductive": protocol},
        "labels": {"precision": 0.9, "distractor_share": 0.0},
        "concept_precision_at_5": 0.6,
        "concept_precision_at_5_above_mean": 0.5,
        "ig_completeness_error": {"median": 0.001, "p95": 0.004, "steps": 64},
    }


def test_seed_study_gives_ceir_its_own_figures(monkeypatch, tmp_path):
    monkeypatch.setattr(reproduce, "run_step", lambda step, log: 1.0)
    monkeypatch.setattr("core.kinds.evaluate_any", lambda path, seed, device: _ceir_result(0.9))
    steps = [s for s in reproduce.shipped_steps() if s.name == "toybirds-ceir"]
    study = reproduce.seed_study(
        steps, {"toybirds-ceir": _ceir_result(0.96)}, [1, 2], str(tmp_path), log=print
    )
    figures = study["variants"]["toybirds-ceir"]
    assert figures["kind"] == "ceir"
    assert figures["latent ACC, inductive"]["values"] == [0.96, 0.9, 0.9]
    table = "\n".join(reproduce.render_seed_study(study))
    assert "| bundle | latent ACC, inductive | raw CLIP ACC, inductive |" in table
    assert "| toybirds-ceir | 0.920 ± 0.035 | 0.950 ± 0.000 |" in table


def test_ceir_rows_put_precision_beside_its_references_when_measured():
    fresh = _ceir_result(0.9) | {"concept_precision_references": {"oracle": 1.0, "family_only": 0.528}}
    rows = reproduce.ceir_rows(fresh, fresh)
    assert "| concept precision@5, zero point at the training mean | 0.500 | 0.500 |" in rows
    assert "| ... of a counterfeit that reads the body colour | 0.528 | 0.528 |" in rows
    older = reproduce.ceir_rows(_ceir_result(0.9), _ceir_result(0.9))  # evaluated before the references
    assert not any("counterfeit" in row for row in older) and any("zero point" in row for row in older)


def test_option_study_changes_the_defaults_only_for_a_clear_and_trustworthy_win():
    def figures(latent: float, precision: float = 0.9, std: float = 0.01) -> dict:
        return {label: {"mean": latent, "std": std} for label, _ in FIGURES} | {
            "label precision": {"mean": precision, "std": 0.0}
        }

    def study(**variants) -> dict:
        return {"validation_seed": 7, "seeds": [0, 1, 2], "variants": variants}

    assert chosen_variant(study(defaults=figures(0.90), x=figures(0.95))) == "x"  # beats by 0.05 > std 0.01
    assert chosen_variant(study(defaults=figures(0.90), x=figures(0.905))) == "defaults"  # inside the noise
    assert chosen_variant(study(defaults=figures(0.90), x=figures(0.99, precision=0.3))) == "defaults"
    table = "\n".join(reproduce.render_option_study(study(defaults=figures(0.9), x=figures(0.5))))
    assert "`--seed 7`" in table and "**defaults**" in table
    assert "| x | 0.500 ± 0.010 |" in table


def test_training_totals_add_up_each_kind():
    results = {
        "steps": {
            "a": {"command": "conceptlens train concepthash --out a", "train_seconds": 100.4},
            "b": {"command": "conceptlens train concepthash --out b", "train_seconds": 50.2},
            "c": {"command": "conceptlens train ceir --out c", "train_seconds": 7.0},
        }
    }
    assert reproduce.training_totals(results) == {"concepthash": (pytest.approx(150.6), 2), "ceir": (7.0, 1)}


def test_reproduce_only_keeps_the_other_steps(monkeypatch, tmp_path):
    """Rebuilding one bundle keeps the other steps' measured entries in results.json, in shipped order."""
    import json

    kept = {"command": "conceptlens train clip ...", "description": "clip", "train_seconds": 5.0}
    (tmp_path / "results.json").write_text(json.dumps({"machine": "old", "steps": {"toybirds-clip": kept}}))
    monkeypatch.setattr(reproduce, "run_step", lambda step, log: 2.0)
    monkeypatch.setattr(reproduce, "evaluate_step", lambda out, step: {"test": {}, "fresh_seed": {}})
    monkeypatch.setattr(reproduce, "warm_dashboard_caches", lambda out, log: None)
    reproduce.reproduce(tmp_path, only=["toybirds-concepthash-csd"], log=lambda *_: None)
    results = json.loads((tmp_path / "results.json").read_text())
    assert list(results["steps"]) == ["toybirds-clip", "toybirds-concepthash-csd"]
    assert results["steps"]["toybirds-clip"] == kept
    assert results["steps"]["toybirds-concepthash-csd"]["train_seconds"] == 2.0
