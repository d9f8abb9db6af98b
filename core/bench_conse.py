"""Measure ConSE's labels on the sample photos that ship inside installed packages.

``python -m core.bench_conse`` prints, for a grid of ConSE settings (T, tau, calibration,
description style), the precision@5 on the labelled check set ``conse_checkset.json`` (expected
concepts from the ``general`` bank, written down before tuning), then each photo's top-5 for the best
setting. The check set is small (one photo per subject), so read it as a sanity check, not a benchmark.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core.backbones import conse
from core.ceir.concept_bank import load_bank
from core.data.samples import sample_photos

CHECKSET = Path(__file__).parent / "backbones" / "conse_checkset.json"
GRID = {
    "top_t": (1, 5, 10, 20),
    "temperature": (1.0, 2.0),
    "calibration": (0.0, 0.5, 1.0),
    "descriptions": conse.DESCRIPTION_STYLES,
}


@dataclass
class Result:
    config: conse.ConSEConfig
    precision: float
    top5: dict[str, list[str]]


def evaluate(
    backbone: conse.ConSEBackbone, photos: dict[str, Image.Image], expected: dict[str, list[str]]
) -> list[Result]:
    """precision@5 for every setting in ``GRID`` (logits and text embeddings computed once)."""
    bank = load_bank("general")
    concepts = bank.concepts
    text = backbone.encode_texts(bank.prompts()).cpu()
    logits = backbone.logits(backbone.preprocess_images(list(photos.values()))).cpu()
    descriptions = {s: conse.description_embeddings(backbone.text_model, s) for s in GRID["descriptions"]}
    results = []
    for top_t, tau, strength, style in itertools.product(*GRID.values()):
        config = conse.ConSEConfig(top_t, tau, strength, style)
        embedding = conse.conse_embeddings(logits, descriptions[style], top_t, tau)
        embedding = embedding - strength * descriptions[style].mean(0)
        scores = (embedding @ text.T).numpy()
        top5 = {
            n: [concepts[i] for i in np.argsort(-row, kind="stable")[:5]]
            for n, row in zip(photos, scores, strict=True)
        }
        hits = [len(set(top5[n]) & set(expected[n])) / 5 for n in photos]
        results.append(Result(config, float(np.mean(hits)), top5))
    return results


def main() -> None:
    checkset = json.loads(CHECKSET.read_text())
    photos = sample_photos()
    expected = {n: checkset["photos"][n] for n in photos}
    with torch.no_grad():
        results = evaluate(conse.load_conse(), photos, expected)
    print(f"{len(photos)} photos; precision@5 by setting (T, tau, calibration, descriptions):")
    for r in sorted(results, key=lambda r: -r.precision):
        c = r.config
        print(
            f"  T={c.top_t:<3} tau={c.temperature:<4g} cal={c.calibration:<4g} {c.descriptions:<9} "
            f"{r.precision:.3f}"
        )
    best = max(results, key=lambda r: r.precision)
    default = next(r for r in results if r.config == conse.ConSEConfig())
    for title, r in (("best", best), ("default", default)):
        print(f"\n{title}: {r.config} precision@5 = {r.precision:.3f}")
        for name, labels in r.top5.items():
            hits = sum(label in expected[name] for label in labels)
            print(f"  {name}: {', '.join(labels)}  ({hits}/5)")


if __name__ == "__main__":
    main()
