"""`conceptlens reproduce`: the seed-study commands and the mean ± std it reports."""

from __future__ import annotations

import pytest

from core import reproduce


def test_seed_variant_changes_only_the_training_seed_and_the_output():
    step = next(s for s in reproduce.shipped_steps() if s.name == "toybirds-concepthash-csd")
    variant = reproduce.seed_variant(step, 2, "runs/study")
    changed = [(a, b) for a, b in zip(step.argv, variant.argv, strict=True) if a != b]
    assert changed == [
        ("0", "2"),
        ("pretrained/toybirds-concepthash-csd", "runs/study/toybirds-concepthash-csd-seed2"),
    ]
    assert variant.argv[variant.argv.index("--seed") + 1] == "2"


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
    monkeypatch.setattr("core.cli.evaluate_any", lambda path, seed, device: _result(maps[str(path)[-1]], 0.5))
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
