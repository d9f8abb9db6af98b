"""Evaluate a ConceptHash model: retrieval quality and, on ToyBirds, interpretability.

* ``map``: mAP@all by Hamming ranking (database = train split, queries = test split, ties
  broken by database index); ``precision_at``: P@1/5/10.
* ``localization`` (ToyBirds): pointing game. For each query image and concept, the patch the
  concept attends to most (last layer, heads averaged) is a *hit* for a part when that part's
  mask covers the patch centre. Concepts are matched one-to-one to parts by Hungarian
  assignment on the hit-rate matrix. The random baseline of a part is the hit rate of a
  uniformly random patch, i.e. the part's mask area sampled at patch centres.
* ``diversity``: mean pairwise cosine between the concepts' attention maps (the L_csd value on
  the query images; lower = concepts look at different places).
* ``subcode_part_nmi``: M x parts matrix of NMI between each sub-code's value (its K/M bits
  read as an integer) and each part's colour in each image: the species parts (head, wing, body)
  and, as a nuisance check, the tail, whose colour is drawn per image and says nothing about the
  species.  A part-specific 6-bit code reaches 1 for one species part per sub-code (the species
  parts share only 0.04 NMI with one another).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.metrics import normalized_mutual_info_score

from core.backbones.clip import Backbone
from core.concepthash.losses import csd_loss
from core.concepthash.model import ConceptHash
from core.data.spec import DataSpec, ImageSplit, ToyBirdsSplit, open_split
from core.data.toybirds import PARTS
from core.retrieval import mean_average_precision, pack_codes, precision_at_k

PRECISION_KS = (1, 5, 10)


def sign_codes(u: torch.Tensor | np.ndarray) -> np.ndarray:
    """{-1, +1} int8 codes from continuous codes (0 -> +1)."""
    values = u.numpy() if isinstance(u, torch.Tensor) else np.asarray(u)
    return np.where(values >= 0, 1, -1).astype(np.int8)


def subcode_values(codes: np.ndarray, n_concepts: int) -> np.ndarray:
    """(N, M) integer value of every concept's sub-code (its bits, +1 -> 1, read little-endian)."""
    n, bits = codes.shape
    per = bits // n_concepts
    binary = (codes.reshape(n, n_concepts, per) > 0).astype(np.int64)
    return (binary << np.arange(per)).sum(axis=-1)


def retrieval_metrics(
    db_codes: np.ndarray, db_labels: np.ndarray, query_codes: np.ndarray, query_labels: np.ndarray
) -> dict[str, Any]:
    db_packed, query_packed = pack_codes(db_codes), pack_codes(query_codes)
    precision = precision_at_k(query_labels, db_labels, query_packed, db_packed, ks=PRECISION_KS)
    return {
        "map": float(mean_average_precision(query_labels, db_labels, query_packed, db_packed)),
        "precision_at": {str(k): float(v) for k, v in precision.items()},
    }


def patch_centre_masks(split: ToyBirdsSplit, i: int, grid: tuple[int, int]) -> np.ndarray:
    """(parts, gh*gw) bool: does each part's mask cover each patch centre of image i."""
    sample = split.sample(i)
    gh, gw = grid
    height, width = next(iter(sample.masks.values())).shape
    ys = ((np.arange(gh) + 0.5) * height / gh).astype(int)
    xs = ((np.arange(gw) + 0.5) * width / gw).astype(int)
    return np.stack([sample.masks[part][np.ix_(ys, xs)].reshape(-1) for part in PARTS])


def interpretability_metrics(
    attention: np.ndarray, codes: np.ndarray, split: ToyBirdsSplit, grid: tuple[int, int], n_concepts: int
) -> dict[str, Any]:
    """Localisation, diversity and sub-code/part NMI on ToyBirds queries.

    ``attention`` is (N, M, P) concept->patch attention of the N query images.
    """
    n, m, _ = attention.shape
    hits = np.zeros((m, len(PARTS)))
    area = np.zeros(len(PARTS))
    pointed = attention.argmax(axis=-1)  # (N, M)
    for i in range(n):
        centres = patch_centre_masks(split, i, grid)
        hits += centres[:, pointed[i]].T
        area += centres.mean(axis=1)
    hit_rate, random_rate = hits / n, area / n
    rows, cols = linear_sum_assignment(hit_rate, maximize=True)
    concepts = [
        {
            "concept": int(r),
            "part": PARTS[c],
            "hit_rate": float(hit_rate[r, c]),
            "random": float(random_rate[c]),
        }
        for r, c in zip(rows, cols, strict=True)
    ]
    values = subcode_values(codes, n_concepts)
    nmi = [
        [float(normalized_mutual_info_score(split.part_labels(part), values[:, k])) for part in PARTS]
        for k in range(n_concepts)
    ]
    return {
        "localization": {
            "parts": list(PARTS),
            "concepts": concepts,
            "hit_rates": hit_rate.round(4).tolist(),
            "mean_hit_rate": float(np.mean([c["hit_rate"] for c in concepts])),
            "random_baseline": float(np.mean([c["random"] for c in concepts])),
        },
        "diversity": float(csd_loss(torch.from_numpy(attention))),
        "subcode_part_nmi": {"parts": list(PARTS), "matrix": nmi},
    }


@torch.no_grad()
def encode_with_attention(
    model: ConceptHash, pixels: torch.Tensor, batch_size: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """Binary codes (N, K) and last-layer concept->patch attention (N, M, P)."""
    model.eval()
    codes, attention = [], []
    for start in range(0, len(pixels), batch_size):
        out = model(pixels[start : start + batch_size].to(model.backbone.device), attention_layers="last")
        codes.append(sign_codes(out.u.cpu()))
        attention.append(out.concept_attention.cpu().numpy())
    return np.concatenate(codes), np.concatenate(attention)


def evaluate_model(
    model: ConceptHash,
    backbone: Backbone,
    database: ImageSplit,
    queries: ImageSplit,
    database_pixels: torch.Tensor | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """All metrics, and the arrays a bundle caches for the dashboard (database codes, labels, ids)."""
    if database_pixels is None:
        database_pixels = backbone.preprocess_split(database)
    db_codes = sign_codes(model.encode(database_pixels))
    query_codes, attention = encode_with_attention(model, backbone.preprocess_split(queries))
    metrics = retrieval_metrics(db_codes, database.labels, query_codes, queries.labels)
    metrics["n_database"], metrics["n_queries"] = len(database), len(queries)
    if isinstance(queries, ToyBirdsSplit):
        metrics |= interpretability_metrics(
            attention,
            query_codes,
            queries,
            backbone.grid_size,
            model.config.n_concepts if model.config.mode == "concepts" else 1,
        )
    arrays = {
        "db_codes": db_codes,
        "db_labels": database.labels.astype(np.int64),
        "db_ids": np.array([database.image_id(i) for i in range(len(database))]),
    }
    return metrics, arrays


def evaluate_bundle(path: str, seed: int | None = None, device: str = "auto") -> dict[str, Any]:
    """``conceptlens eval`` for ConceptHash: metrics on the bundle's data (fresh ToyBirds with ``seed``)."""
    from core.concepthash.train import load_concepthash

    loaded = load_concepthash(path, device=device)
    data: DataSpec = loaded.data if seed is None else loaded.data.with_seed(seed)
    metrics, _ = evaluate_model(
        loaded.model, loaded.backbone, open_split(data, "train"), open_split(data, "test")
    )
    return {"kind": "concepthash", "bundle": str(loaded.path), "data": data.to_dict(), **metrics}
