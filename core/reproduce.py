"""``conceptlens reproduce``: rebuild every shipped bundle and measure it, from fixed seeds.

Each step is the exact ``conceptlens`` command line that produced a bundle in ``pretrained/``;
after training, every bundle is evaluated with ``conceptlens eval --json`` on its test split and
on freshly drawn ToyBirds samples (``--seed``). The results go to ``results.json`` and a
``README.md`` (commands, training times, figures) in the output folder, so every number shipped
with ConceptLens comes from a command anyone can re-run.
"""

from __future__ import annotations

import json
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.bundle import read_bundle_config
from core.results import figure

FRESH_SEED = 123
SEED_STUDY_DIR = "runs/seed-study"
# Figures the seed study aggregates (fresh-seed evaluation), as (label, path into the eval result).
SEED_STUDY_FIGURES: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {}
SEED_STUDY_FIGURES["concepthash"] = (
    ("mAP", ("map",)),
    ("part swap: matched flip rate", ("part_swap", "matched_flip_rate_mean")),
    ("part swap: largest off-diagonal", ("part_swap", "largest_off_diagonal", "flip_rate")),
    ("localisation, overlap rule", ("localization_overlap", "mean_hit_rate")),
    ("attention overlap (diversity)", ("diversity",)),
    ("code unchanged under flip", ("flip_invariance",)),
)
SEED_STUDY_FIGURES["ceir"] = (
    ("latent ACC, inductive", ("protocols", "inductive", "ceir", "acc")),
    ("raw CLIP ACC, inductive", ("protocols", "inductive", "clip_embedding", "acc")),
    ("concept vectors ACC, inductive", ("protocols", "inductive", "concepts", "acc")),
    ("latent ACC, transductive", ("protocols", "transductive", "ceir", "acc")),
    ("raw CLIP ACC, transductive", ("protocols", "transductive", "clip_embedding", "acc")),
    ("label precision", ("labels", "precision")),
    ("labels that are distractors", ("labels", "distractor_share")),
    ("concept precision@5", ("concept_precision_at_5",)),
    ("concept precision@5, zero point at the mean", ("concept_precision_at_5_above_mean",)),
)


@dataclass(frozen=True)
class Step:
    name: str
    description: str
    argv: tuple[str, ...]


RUNS_FILE = Path(__file__).with_name("shipped_runs.toml")


def shipped_runs() -> dict[str, Any]:
    """The shipped runs as data (``core/shipped_runs.toml``)."""
    import tomllib

    return tomllib.loads(RUNS_FILE.read_text())


def shipped_steps(out: str = "pretrained", quick: bool = False) -> list[Step]:
    """The commands behind the shipped bundles (``quick`` shrinks them for a smoke test)."""
    runs = shipped_runs()
    sizes = runs["quick" if quick else "full"]

    def expand(argv: list[str], size: str) -> tuple[str, ...]:
        out_argv: list[str] = []
        for token in argv:
            if token == "@common":
                out_argv += runs["common"]["argv"]
            elif token == "@size":
                out_argv += sizes[size]
            else:
                out_argv.append(token.format(out=out, clip=f"{out}/toybirds-clip"))
        return tuple(out_argv)

    return [
        Step(step["name"], step["description"], expand(step["argv"], step.get("size", step["argv"][1])))
        for step in runs["step"]
    ]


def seed_variant(step: Step, seed: int, seed_dir: str) -> Step:
    """The same command with another training ``--seed``, writing to ``seed_dir/NAME-seedS``."""
    argv = list(step.argv)
    argv[argv.index("--seed") + 1] = str(seed)
    argv[argv.index("--out") + 1] = f"{seed_dir}/{step.name}-seed{seed}"
    return Step(f"{step.name}-seed{seed}", step.description, tuple(argv))


def seed_study(
    steps: list[Step],
    fresh: dict[str, dict[str, Any]],
    seeds: list[int],
    seed_dir: str = SEED_STUDY_DIR,
    overwrite: bool = False,
    log=print,
) -> dict[str, Any]:
    """Retrain every ConceptHash and CEIR step with each extra training seed; mean and std over seeds
    {0, *seeds} of ``SEED_STUDY_FIGURES`` for its kind.

    ``fresh`` holds the shipped (seed 0) bundles' fresh-seed evaluations.  Bundles already in
    ``seed_dir`` are kept unless ``overwrite``, so an interrupted study continues.
    """
    import numpy as np

    from core.kinds import evaluate_any

    study: dict[str, Any] = {"seeds": [0, *seeds], "fresh_seed": FRESH_SEED, "dir": seed_dir, "variants": {}}
    for step in steps:
        kind = step.argv[1]
        if step.argv[0] != "train" or kind not in SEED_STUDY_FIGURES:
            continue
        results = [fresh[step.name]]
        for seed in seeds:
            variant = seed_variant(step, seed, seed_dir)
            bundle = Path(variant.argv[variant.argv.index("--out") + 1])
            if overwrite or not bundle.is_dir():
                run_step(Step(variant.name, variant.description, variant.argv + ("--overwrite",)), log)
            log(f"evaluating {bundle} ...")
            results.append(evaluate_any(bundle, seed=FRESH_SEED, device="cpu"))
        figures = {}
        for label, path in SEED_STUDY_FIGURES[kind]:
            values = np.array([figure(r, path) for r in results])
            figures[label] = {
                "mean": float(values.mean()),
                "std": float(values.std(ddof=1)),
                "values": values.tolist(),
            }
        study["variants"][step.name] = figures | {"kind": kind}
    return study


def command_line(step: Step) -> str:
    return "conceptlens " + shlex.join(step.argv)


def run_step(step: Step, log=print) -> float:
    """Run one command in its own process (``python -m core ...``, so one run's state never leaks into the
    next and torchrun could run it the same way); returns wall seconds. Raises on failure."""
    import subprocess

    log(f"$ {command_line(step)}")
    started = time.perf_counter()
    code = subprocess.run([sys.executable, "-m", "core", *step.argv], check=False).returncode
    if code != 0:
        raise RuntimeError(f"'{command_line(step)}' failed with exit status {code}.")
    return time.perf_counter() - started


def evaluate_step(out: Path, step: Step, seed: int = FRESH_SEED) -> dict[str, Any]:
    from core.kinds import evaluate_any

    path = out / step.name
    return {
        "test": evaluate_any(path, device="cpu"),
        "fresh_seed": evaluate_any(path, seed=seed, device="cpu"),
    }


def warm_dashboard_caches(out: Path, log=print) -> None:
    """Compute the arrays the dashboard would otherwise compute on first view (CEIR's UMAP)."""
    try:
        from core.ceir.projection2d import ensure_umap
    except ImportError:
        return
    for bundle in sorted(out.glob("*ceir*")):
        log(f"UMAP for {bundle.name} ...")
        ensure_umap(bundle)


def reproduce(
    out: str | Path = "pretrained",
    quick: bool = False,
    only: list[str] | None = None,
    overwrite: bool = False,
    seeds: list[int] | None = None,
    seed_dir: str = SEED_STUDY_DIR,
    log=print,
) -> dict[str, Any]:
    """Train (or keep) and evaluate the shipped bundles; ``seeds`` adds the training-seed study, and the
    CEIR step (unless ``quick``) the option study on a validation seed.

    With ``only``, the other steps' entries of an existing ``results.json`` are kept, so one bundle can be
    rebuilt without re-measuring the rest.
    """
    out = Path(out)
    steps = [s for s in shipped_steps(str(out), quick) if not only or s.name in only]
    if not steps:
        raise ValueError(f"No step matches {only}; steps are: {', '.join(s.name for s in shipped_steps())}.")
    results: dict[str, Any] = {"machine": machine_description(), "steps": {}}
    previous = out / "results.json"
    if only and previous.is_file():
        results = json.loads(previous.read_text()) | {"machine": results["machine"]}
    for step in steps:
        bundle = out / step.name
        if bundle.is_dir() and not overwrite:
            seconds = float(read_bundle_config(bundle).get("train", {}).get("seconds", float("nan")))
            log(f"{bundle} exists; keeping it (--overwrite retrains).")
        else:
            argv = step.argv + (("--overwrite",) if overwrite else ())
            seconds = run_step(Step(step.name, step.description, argv), log)
        results["steps"][step.name] = {
            "command": command_line(step),
            "description": step.description,
            "train_seconds": round(seconds, 1),
        }
    warm_dashboard_caches(out, log)
    for step in steps:
        log(f"evaluating {step.name} ...")
        results["steps"][step.name] |= evaluate_step(out, step)
    order = [s.name for s in shipped_steps(str(out), quick)]
    results["steps"] = dict(sorted(results["steps"].items(), key=lambda item: order.index(item[0])))
    ceir = next((s for s in steps if s.argv[:2] == ("train", "ceir")), None)
    if ceir is not None and not quick:
        from core.ceir.options import option_study
        from core.data.spec import DataSpec

        backbone = ceir.argv[ceir.argv.index("--backbone") + 1]
        data = DataSpec.from_dict(read_bundle_config(out / ceir.name)["data"])
        results["ceir_options"] = option_study(backbone, data, log=log)
    if seeds:
        fresh = {name: step["fresh_seed"] for name, step in results["steps"].items() if name in order}
        study = seed_study(steps, fresh, seeds, seed_dir, overwrite=overwrite, log=log)
        if only and "seed_study" in results:
            study["variants"] = results["seed_study"]["variants"] | study["variants"]
        results["seed_study"] = study
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "README.md").write_text(render_readme(results))
    return results


def machine_description() -> str:
    import os

    import torch

    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
        f"{sys.version.split()[0]}, torch {torch.__version__} (CPU)"
    )


def _fmt(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _hit_rates(loc: dict[str, Any]) -> str:
    return f"{loc['mean_hit_rate']:.3f} ({loc['random_baseline']:.3f} / {loc['oracle_ceiling']:.3f})"


def training_totals(results: dict[str, Any]) -> dict[str, tuple[float, int]]:
    """Per model kind (the word after ``train`` in each step's command): training seconds and bundles."""
    totals: dict[str, tuple[float, int]] = {}
    for step in results["steps"].values():
        words = shlex.split(step["command"])
        kind = words[words.index("train") + 1] if "train" in words else "other"
        seconds, count = totals.get(kind, (0.0, 0))
        totals[kind] = (seconds + float(step["train_seconds"]), count + 1)
    return totals


def render_readme(results: dict[str, Any]) -> str:
    lines = [
        "# Shipped bundles",
        "",
        "Every bundle here was trained on CPU by the command shown, from fixed seeds, and evaluated with",
        "`conceptlens eval BUNDLE --json` on its test split and on fresh ToyBirds samples (`--seed "
        f"{FRESH_SEED}`). Rebuild all of them (and this file) with `conceptlens reproduce --overwrite`;",
        "without `--overwrite` existing bundles are kept and only evaluated. Training times are wall-clock",
        "seconds of the training loop as stored in each bundle's config.json; the machine may have been",
        "running other work at the time, so read them as upper bounds.",
        "",
        f"Machine: {results['machine']}.",
        "",
        "Training time by model, every bundle of the kind together: "
        + "; ".join(
            f"{kind} {seconds:.0f} s ({count} bundle{'s' if count > 1 else ''})"
            for kind, (seconds, count) in training_totals(results).items()
        )
        + ".",
        "",
    ]
    for name, step in results["steps"].items():
        lines += [
            f"## {name}",
            "",
            step["description"] + ".",
            "",
            "```bash",
            step["command"],
            "```",
            "",
            f"Training time: {step['train_seconds']:.0f} s.",
            "",
        ]
        test, fresh = step.get("test", {}), step.get("fresh_seed", {})
        keys = [
            k
            for k in ("zero_shot_accuracy", "map", "acc", "nmi", "ari", "diversity", "concept_precision_at_5")
            if k in test
        ]
        if keys:
            lines += ["| metric | test split | fresh seed |", "|---|---|---|"]
            lines += [f"| {k} | {_fmt(test[k])} | {_fmt(fresh.get(k))} |" for k in keys]
            if "precision_at" in test:
                lines += [
                    f"| P@{k} | {_fmt(v)} | {_fmt(fresh['precision_at'][k])} |"
                    for k, v in test["precision_at"].items()
                ]
            if "part_value_accuracy" in test:
                fresh_parts = fresh["part_value_accuracy"]
                lines += [
                    f"| part-value accuracy, {part} | {_fmt(v)} | {_fmt(fresh_parts[part])} |"
                    for part, v in test["part_value_accuracy"].items()
                ]
                lines += [
                    "| text cosine, same colour on other parts (mean) | "
                    f"{_fmt(test['text_cosine']['same_value_other_part'])} | "
                    f"{_fmt(fresh['text_cosine']['same_value_other_part'])} |",
                    f"| linear-probe species accuracy | {_fmt(test['linear_probe_accuracy'])} | "
                    f"{_fmt(fresh['linear_probe_accuracy'])} |",
                ]
            for key, label in (("localization", "centre rule"), ("localization_overlap", "overlap rule")):
                if key in test:
                    lines.append(
                        f"| localisation, {label}: hit rate (random / oracle) | "
                        f"{_hit_rates(test[key])} | {_hit_rates(fresh[key])} |"
                    )
            if "part_swap" in test:
                swap, fswap = test["part_swap"], fresh["part_swap"]
                lines += [
                    f"| part swap: matched flip rate, mean (min) | {swap['matched_flip_rate_mean']:.3f} "
                    f"({swap['matched_flip_rate_min']:.3f}) | {fswap['matched_flip_rate_mean']:.3f} "
                    f"({fswap['matched_flip_rate_min']:.3f}) |",
                    f"| part swap: largest off-diagonal flip rate | "
                    f"{swap['largest_off_diagonal']['flip_rate']:.3f} | "
                    f"{fswap['largest_off_diagonal']['flip_rate']:.3f} |",
                ]
            if "protocols" in test:
                lines += ceir_rows(test, fresh)
            for key in ("flip_invariance", "map_train_database", "capacity_ceiling", "distinct_centres"):
                if key in test:
                    lines.append(f"| {key} | {_fmt(test[key])} | {_fmt(fresh.get(key))} |")
            lines.append("")
    if "ceir_options" in results:
        lines += render_option_study(results["ceir_options"])
    if "seed_study" in results:
        lines += render_seed_study(results["seed_study"])
    return "\n".join(lines)


def ceir_rows(test: dict[str, Any], fresh: dict[str, Any]) -> list[str]:
    """Table rows of a CEIR evaluation: both protocols (mean ± std over k-means seeds), labels, IG."""

    def protocol(result: dict[str, Any], name: str, method: str) -> str:
        scores = result["protocols"][name][method]
        return f"{scores['acc']:.3f} ± {scores['acc_std']:.3f}"

    rows = []
    methods = (("ceir", "latent"), ("clip_embedding", "raw CLIP"), ("concepts", "concept vectors"))
    for name in ("inductive", "transductive"):
        for method, title in methods:
            rows.append(
                f"| {title} ACC, {name} (3 k-means seeds) | {protocol(test, name, method)} | "
                f"{protocol(fresh, name, method)} |"
            )
    label_rows = (("precision", "printed labels that are true"), ("distractor_share", "... distractors"))
    for key, title in label_rows:
        rows.append(f"| {title} | {test['labels'][key]:.3f} | {fresh['labels'][key]:.3f} |")
    top5_rows = (
        (("concept_precision_at_5_above_mean",), "concept precision@5, zero point at the training mean"),
        (("concept_precision_references", "oracle"), "... of an oracle (the species' own colours)"),
        (("concept_precision_references", "family_only"), "... of a counterfeit that reads the body colour"),
    )
    for path, title in top5_rows:
        try:
            values = [figure(result, path) for result in (test, fresh)]
        except KeyError:  # evaluated before these figures existed
            continue
        rows.append(f"| {title} | {values[0]:.3f} | {values[1]:.3f} |")
    ig, fig = test["ig_completeness_error"], fresh["ig_completeness_error"]
    rows.append(
        f"| IG completeness error, median / p95 ({ig['steps']} steps) | "
        f"{ig['median']:.4f} / {ig['p95']:.4f} | {fig['median']:.4f} / {fig['p95']:.4f} |"
    )
    return rows


def render_seed_study(study: dict[str, Any]) -> list[str]:
    """Mean ± std over training seeds of each kind's figures (fresh-seed evaluation), one table per kind."""
    lines = [
        "## Training-seed study",
        "",
        f"Mean ± std over training seeds {', '.join(map(str, study['seeds']))} (seed 0 is the shipped "
        f"bundle; the others are the same command with another `--seed`, written to `{study['dir']}/`), each "
        f"evaluated with `--seed {study['fresh_seed']}`.",
        "",
    ]
    for kind, figures_of_kind in SEED_STUDY_FIGURES.items():
        variants = {n: f for n, f in study["variants"].items() if f.get("kind", "concepthash") == kind}
        if not variants:
            continue
        labels = [label for label, _ in figures_of_kind]
        lines += [
            "| bundle | " + " | ".join(labels) + " |",
            "|---|" + "---|" * len(labels),
        ]
        for name, figures in variants.items():
            cells = [f"{figures[label]['mean']:.3f} ± {figures[label]['std']:.3f}" for label in labels]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def render_option_study(study: dict[str, Any]) -> list[str]:
    """The CEIR option study (``core.ceir.options``): mean ± std over training seeds per variant."""
    from core.ceir.options import FIGURES, MIN_LABEL_PRECISION, chosen_variant

    labels = [label for label, _ in FIGURES]
    lines = [
        "## CEIR options, measured on a validation seed",
        "",
        "Each variant changes the defaults in one way; ToyBirds drawn with "
        f"`--seed {study['validation_seed']}` (not the test seed), mean ± std over training seeds "
        f"{', '.join(map(str, study['seeds']))}. A variant would replace the defaults only if its mean "
        "inductive latent ACC beat theirs by more than their standard deviation, with label precision at "
        f"least {MIN_LABEL_PRECISION}; chosen: **{chosen_variant(study)}**.",
        "",
        "| variant | " + " | ".join(labels) + " |",
        "|---|" + "---|" * len(labels),
    ]
    for name, figures in study["variants"].items():
        cells = [f"{figures[label]['mean']:.3f} ± {figures[label]['std']:.3f}" for label in labels]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*lines, ""]
