"""Retrieval quality of binary codes: mAP by Hamming ranking and precision@k.

Conventions (the ones used by hashing papers such as ConceptHash):

* The database is ranked per query by Hamming distance, ties broken by the smaller database index
  (:func:`core.retrieval.hamming.ranking_by_hamming`), so results are deterministic.
* A database item is relevant to a query when they share a class: equal integer labels for
  single-label data ``(N,)``, or at least one common label for multi-hot data ``(N, C)``.
* Average precision of a ranked list is the mean of precision@i over the positions i of its relevant
  items, i.e. it is normalised by the number of relevant items *in the list*. For mAP@all that is every
  relevant item; for mAP@top it is the relevant items among the first ``top`` (the usual "mAP@1000").
  A query with no relevant item in its list has AP 0 and still counts in the mean.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from core.retrieval.hamming import _check_pair, hamming_topk, ranking_by_hamming

_MAX_RANKED_ELEMENTS = 1 << 25


def average_precision(relevance: np.ndarray) -> np.ndarray:
    """AP per row of ``relevance`` ``(Q, N)`` (bool, in ranked order); 0 for a row with nothing relevant."""
    relevance = np.asarray(relevance)
    if relevance.ndim != 2:
        raise ValueError(f"relevance must be 2-D (queries, ranked items), got shape {relevance.shape}.")
    if relevance.dtype != np.bool_:
        if not bool(np.isin(relevance, (0, 1)).all()):
            raise ValueError("relevance must be boolean (or 0/1), found other values.")
        relevance = relevance.astype(bool)
    hits = np.cumsum(relevance, axis=1, dtype=np.float64)
    ranks = np.arange(1, relevance.shape[1] + 1, dtype=np.float64)
    precision_sum = np.where(relevance, hits / ranks, 0.0).sum(axis=1)
    n_relevant = hits[:, -1] if relevance.shape[1] else np.zeros(relevance.shape[0])
    return np.divide(precision_sum, n_relevant, out=np.zeros_like(precision_sum), where=n_relevant > 0)


def _check_labels(
    query_labels: np.ndarray, db_labels: np.ndarray, n_queries: int, n_db: int
) -> tuple[np.ndarray, np.ndarray]:
    """Validate a pair of label arrays: both integer ``(n,)`` or both 0/1 multi-hot ``(n, C)``."""
    query_labels, db_labels = np.asarray(query_labels), np.asarray(db_labels)
    for name, labels, n_codes in (("query_labels", query_labels, n_queries), ("db_labels", db_labels, n_db)):
        if labels.ndim not in (1, 2):
            raise ValueError(f"{name} must be (N,) class ids or (N, C) multi-hot, got shape {labels.shape}.")
        if labels.shape[0] != n_codes:
            raise ValueError(f"{name} has {labels.shape[0]} rows but there are {n_codes} codes.")
        if labels.ndim == 1 and not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"{name} must hold integer class ids, got dtype {labels.dtype}.")
        if labels.ndim == 2 and not bool(np.isin(labels, (0, 1)).all()):
            raise ValueError(f"{name} is 2-D, so it must be multi-hot with only 0/1 entries.")
    if query_labels.ndim != db_labels.ndim:
        raise ValueError("query_labels and db_labels must both be class ids (1-D) or both multi-hot (2-D).")
    if query_labels.ndim == 2 and query_labels.shape[1] != db_labels.shape[1]:
        raise ValueError(
            f"query_labels has {query_labels.shape[1]} classes but db_labels has {db_labels.shape[1]}."
        )
    return query_labels, db_labels


def _relevance(query_labels: np.ndarray, db_labels: np.ndarray) -> np.ndarray:
    """``(q, N)`` bool: does database item n share a label with query q."""
    if query_labels.ndim == 1:
        return query_labels[:, None] == db_labels[None, :]
    # counts of shared labels are small integers, exact in float32
    return (query_labels.astype(np.float32) @ db_labels.astype(np.float32).T) > 0


def _check_batch_size(batch_size: object) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    return int(batch_size)


def _ranked_relevance(
    q_labels: np.ndarray, db_labels: np.ndarray, q_packed: np.ndarray, db_packed: np.ndarray, top: int | None
) -> np.ndarray:
    """Relevance of the ranked list (all of it, or its first ``top`` items) for a batch of queries."""
    if top is None:
        order = ranking_by_hamming(q_packed, db_packed)
    else:
        order, _ = hamming_topk(q_packed, db_packed, top)
    return np.take_along_axis(_relevance(q_labels, db_labels), order, axis=1)


def mean_average_precision(
    query_labels: np.ndarray,
    db_labels: np.ndarray,
    query_packed: np.ndarray,
    db_packed: np.ndarray,
    *,
    top: int | None = None,
    batch_size: int = 256,
) -> float:
    """mAP@all (``top=None``) or mAP@top of Hamming ranking; see the module notes for the conventions.

    Queries are processed ``batch_size`` at a time (fewer for mAP@all on databases over ~130k codes, so
    that the full rankings of one pass stay bounded).
    """
    aps = query_average_precisions(
        query_labels, db_labels, query_packed, db_packed, top=top, batch_size=batch_size
    )
    if len(aps) == 0:
        raise ValueError("query_packed is empty; mAP needs at least one query.")
    return float(aps.sum()) / len(aps)


def query_average_precisions(
    query_labels: np.ndarray,
    db_labels: np.ndarray,
    query_packed: np.ndarray,
    db_packed: np.ndarray,
    *,
    top: int | None = None,
    batch_size: int = 256,
) -> np.ndarray:
    """(Q,) each query's AP@all (``top=None``) or AP@top: the numbers :func:`mean_average_precision`
    averages, for pages that compare models query by query."""
    query_packed, db_packed = _check_pair(query_packed, db_packed)
    n_queries, n_db = query_packed.shape[0], db_packed.shape[0]
    query_labels, db_labels = _check_labels(query_labels, db_labels, n_queries, n_db)
    batch_size = _check_batch_size(batch_size)
    if top is not None and (isinstance(top, bool) or not isinstance(top, int | np.integer) or top < 1):
        raise ValueError(f"top must be None (mAP@all) or a positive integer, got {top!r}.")
    # the full ranking of a pass is (rows, N) int64: cap the rows so a pass stays near 300 MB
    rows = batch_size if top is not None else min(batch_size, max(1, _MAX_RANKED_ELEMENTS // max(n_db, 1)))
    aps = np.zeros(n_queries, dtype=np.float64)
    for lo in range(0, n_queries, rows):
        hi = min(lo + rows, n_queries)
        ranked = _ranked_relevance(query_labels[lo:hi], db_labels, query_packed[lo:hi], db_packed, top)
        aps[lo:hi] = average_precision(ranked)
    return aps


def precision_at_k(
    query_labels: np.ndarray,
    db_labels: np.ndarray,
    query_packed: np.ndarray,
    db_packed: np.ndarray,
    ks: Iterable[int] = (1, 5, 10),
) -> dict[int, float]:
    """Mean fraction of relevant items among the first k of the Hamming ranking, for each k in ``ks``."""
    query_packed, db_packed = _check_pair(query_packed, db_packed)
    n_queries, n_db = query_packed.shape[0], db_packed.shape[0]
    query_labels, db_labels = _check_labels(query_labels, db_labels, n_queries, n_db)
    ks = list(ks)
    if not ks:
        raise ValueError("ks is empty; give at least one cut-off k.")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= n_db:
            raise ValueError(f"each k in ks must be an integer from 1 to the database size {n_db}, got {k!r}")
    if n_queries == 0:
        raise ValueError("query_packed is empty; precision@k needs at least one query.")
    hits = {int(k): 0.0 for k in ks}
    k_max = max(hits)
    for lo in range(0, n_queries, 256):
        hi = min(lo + 256, n_queries)
        ranked = _ranked_relevance(query_labels[lo:hi], db_labels, query_packed[lo:hi], db_packed, k_max)
        cumulative = np.cumsum(ranked, axis=1)
        for k in hits:
            hits[k] += float(cumulative[:, k - 1].sum()) / k
    return {k: value / n_queries for k, value in hits.items()}


PRECISION_KS = (1, 5, 10)


def retrieval_metrics(
    db_codes: np.ndarray, db_labels: np.ndarray, query_codes: np.ndarray, query_labels: np.ndarray
) -> dict:
    """``map`` (mAP@all) and ``precision_at`` (P@k for k in :data:`PRECISION_KS`) of ±1 query codes ranked
    by Hamming distance against ±1 database codes. A small database (a few images per class of one's own
    folder) has no P@10: only the k it can rank are scored."""
    from core.retrieval.hamming import pack_codes

    db_packed, query_packed = pack_codes(db_codes), pack_codes(query_codes)
    ks = [k for k in PRECISION_KS if k <= len(db_codes)]
    precision = precision_at_k(query_labels, db_labels, query_packed, db_packed, ks=ks)
    return {
        "map": float(mean_average_precision(query_labels, db_labels, query_packed, db_packed)),
        "precision_at": {str(k): float(v) for k, v in precision.items()},
    }
