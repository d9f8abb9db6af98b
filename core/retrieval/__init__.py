"""Retrieval with binary codes: packed bits, exact Hamming top-k search, mAP and precision@k."""

from core.retrieval.hamming import (
    BACKENDS,
    HammingIndex,
    hamming_distances,
    hamming_topk,
    pack_codes,
    ranking_by_hamming,
    unpack_codes,
)
from core.retrieval.metrics import (
    average_precision,
    mean_average_precision,
    precision_at_k,
    query_average_precisions,
    retrieval_metrics,
)

__all__ = [
    "BACKENDS",
    "HammingIndex",
    "average_precision",
    "hamming_distances",
    "hamming_topk",
    "mean_average_precision",
    "pack_codes",
    "precision_at_k",
    "query_average_precisions",
    "ranking_by_hamming",
    "retrieval_metrics",
    "unpack_codes",
]
