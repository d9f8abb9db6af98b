"""Which CEIR options to ship: each choice measured on a validation seed, never on the test seed.

``option_study`` draws ToyBirds with ``VALIDATION_SEED`` (the shipped bundles train on seed 0 and report
fresh figures on seed 123), embeds it once, and fits CEIR under every variant of ``VARIANTS`` with several
training seeds. The shipped defaults (``CEIRConfig``) must be ``chosen_variant``: a variant replaces them only
if its mean inductive latent ACC beats theirs by more than one standard deviation over seeds while its printed
labels stay trustworthy (appending class names, for instance, makes the class names the labels).
``conceptlens reproduce`` runs the study and writes the table into ``pretrained/README.md``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from core.ceir.bundle import image_embeddings
from core.ceir.evaluate import evaluate_arrays
from core.ceir.train import CEIRConfig, fit_ceir, with_bank_template
from core.data.spec import DataSpec, open_split
from core.progress import no_progress
from core.results import figure

VALIDATION_SEED = 7

# name -> changes to the default CEIRConfig ("vae." prefixes a VAE setting)
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "class names appended (--include-class-names)": {"include_class_names": True},
    "concept text not centred (--no-centre-concepts)": {"centre_concepts": False},
    "raw concept text, not the bank's caption template (--concept-template '{}')": {"concept_template": "{}"},
    "no class-relevance or activation filter (--class-relevance 0 --activation 0)": {
        "class_relevance_fraction": None,
        "activation_fraction": None,
    },
    "VAE latent 32": {"vae.latent_dim": 32},
    "VAE latent 8": {"vae.latent_dim": 8},
    "VAE 300 epochs": {"vae.epochs": 300},
}

# (label, path into evaluate_arrays' metrics) of the figures the study reports
FIGURES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("latent ACC, inductive", ("protocols", "inductive", "ceir", "acc")),
    ("raw CLIP ACC, inductive", ("protocols", "inductive", "clip_embedding", "acc")),
    ("latent ACC, transductive", ("protocols", "transductive", "ceir", "acc")),
    ("raw CLIP ACC, transductive", ("protocols", "transductive", "clip_embedding", "acc")),
    ("label precision", ("labels", "precision")),
    ("concept precision@5", ("concept_precision_at_5",)),
    ("concepts kept", ("n_concepts",)),
)


def variant_config(base: CEIRConfig, changes: dict[str, Any], seed: int) -> CEIRConfig:
    """``base`` with ``changes`` applied and every seed (run, projection, VAE) set to ``seed``."""
    top = {k: v for k, v in changes.items() if not k.startswith("vae.")}
    vae = {k.removeprefix("vae."): v for k, v in changes.items() if k.startswith("vae.")}
    return dataclasses.replace(
        base,
        **top,
        seed=seed,
        projection=dataclasses.replace(base.projection, seed=seed),
        vae=dataclasses.replace(base.vae, seed=seed, **vae),
    )


def option_study(
    backbone_spec: str | dict,
    data: DataSpec,
    bank: str = "toybirds",
    seeds: tuple[int, ...] = (0, 1, 2),
    variants: dict[str, dict[str, Any]] | None = None,
    base: CEIRConfig | None = None,
    log=print,
) -> dict[str, Any]:
    """Mean and std over training ``seeds`` of ``FIGURES`` for every variant, on ``VALIDATION_SEED`` data."""
    from core.backbones.clip import load_backbone
    from core.ceir.concept_bank import load_bank

    bank_source = load_bank(bank)
    base = with_bank_template(base or CEIRConfig(device="cpu"), bank_source)
    backbone = load_backbone(backbone_spec, device="cpu")
    data = data.with_seed(VALIDATION_SEED)
    train_split, test_split = open_split(data, "train"), open_split(data, "test")
    train_emb, test_emb = (
        image_embeddings(backbone, train_split, no_progress),
        image_embeddings(backbone, test_split),
    )
    concepts = bank_source.concepts
    study: dict[str, Any] = {"validation_seed": VALIDATION_SEED, "seeds": list(seeds), "variants": {}}
    for name, changes in (variants or VARIANTS).items():
        log(f"CEIR option study: {name} ...")
        runs = []
        for seed in seeds:
            config = variant_config(base, changes, seed)
            fitted = fit_ceir(
                concepts,
                list(train_split.classes),
                train_emb,
                backbone,
                train_emb,
                config,
                log=lambda *_: None,
            )
            runs.append(
                evaluate_arrays(
                    fitted.model,
                    config.vae,
                    train_split,
                    test_split,
                    train_emb,
                    test_emb,
                    seed,
                    config.kmeans_restarts,
                )
            )
        study["variants"][name] = {
            label: {
                "mean": float(np.mean([figure(r, path) for r in runs])),
                "std": float(np.std([figure(r, path) for r in runs])),
            }
            for label, path in FIGURES
        }
    return study


MIN_LABEL_PRECISION = 0.8  # a variant whose printed labels are mostly wrong cannot be the default


def chosen_variant(study: dict[str, Any], label: str = FIGURES[0][0]) -> str:
    """The variant the defaults should be: the one with the highest mean ``label`` among those whose label
    precision is at least ``MIN_LABEL_PRECISION``, if it beats "defaults" by more than the defaults' std
    over seeds; otherwise "defaults" (a difference inside the seed noise is no reason to change)."""
    variants = study["variants"]
    eligible = [n for n, v in variants.items() if v["label precision"]["mean"] >= MIN_LABEL_PRECISION]
    best = max(eligible, key=lambda name: variants[name][label]["mean"])
    base = variants["defaults"][label]
    return best if variants[best][label]["mean"] - base["mean"] > base["std"] else "defaults"
