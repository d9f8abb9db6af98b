"""Approximate Hamming search with faiss binary indexes, for stores too big to scan for every query.

Two kinds (``pip install faiss-cpu``):

* ``"ivf"``: ``faiss.IndexBinaryIVF``. The codes are clustered into ``nlist`` lists (k-means on a sample);
  a query scans only the ``nprobe`` lists nearest to it. Build cost: one k-means plus one pass to add.
* ``"hnsw"``: ``faiss.IndexBinaryHNSW``, a navigable small-world graph; a query walks it with a beam of
  ``ef_search``. No training, but adding is slower than IVF's.

Exact search (:meth:`~core.retrieval.store.CodeStore.search`) stays the reference: :func:`recall_at_k`
says what share of the exact top k an approximate answer found. Ties at the k-th distance are common with
short codes, and any item at that distance is as near as the one exact search kept, so recall counts
*distances*: an approximate result counts when it is no farther than the exact k-th neighbour, up to the
number of exact neighbours at each distance (:func:`id_recall_at_k` is the stricter same-ids share).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

APPROXIMATE_KINDS = ("ivf", "hnsw")
_WORD_BITS = 64
TRAIN_PER_LIST = 40  # k-means sample: this many codes per IVF list (faiss warns below 39)


def _faiss():
    try:
        import faiss
    except ImportError as err:
        raise ValueError("Approximate search needs the faiss package: pip install faiss-cpu.") from err
    return faiss


def _as_bytes(packed: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(packed).astype("<u8", copy=False).view(np.uint8)


def default_nlist(n_codes: int) -> int:
    """IVF lists: about sqrt(N), so a list holds about sqrt(N) codes."""
    return max(1, round(math.sqrt(n_codes)))


def even_sample(parts: Sequence[np.ndarray], size: int) -> np.ndarray:
    """About ``size`` rows taken at an even stride from every part (shards stay memory-mapped)."""
    total = sum(len(part) for part in parts)
    step = max(1, total // max(1, size))
    return np.concatenate([np.asarray(part[::step]) for part in parts])


def build_approximate_index(
    parts: Sequence[np.ndarray] | np.ndarray,
    kind: str = "ivf",
    *,
    nlist: int | None = None,
    hnsw_m: int = 32,
):
    """A faiss binary index over packed codes (one array, or a store's shards in row order)."""
    if kind not in APPROXIMATE_KINDS:
        raise ValueError(
            f"The approximate index must be one of {', '.join(APPROXIMATE_KINDS)}, not {kind!r}."
        )
    faiss = _faiss()
    parts = [parts] if isinstance(parts, np.ndarray) else list(parts)
    n_codes = sum(len(part) for part in parts)
    if n_codes == 0:
        raise ValueError("There are no codes to index.")
    dim = parts[0].shape[1] * _WORD_BITS
    if kind == "hnsw":
        index = faiss.IndexBinaryHNSW(dim, hnsw_m)
    else:
        lists = min(nlist or default_nlist(n_codes), n_codes)
        index = faiss.IndexBinaryIVF(faiss.IndexBinaryFlat(dim), dim, lists)
        index.train(_as_bytes(even_sample(parts, TRAIN_PER_LIST * lists)))
    for part in parts:
        index.add(_as_bytes(np.asarray(part)))
    return index


def search_approximate(
    index, query_packed: np.ndarray, k: int, *, nprobe: int = 16, ef_search: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, distances)``, ``(Q, k)``, ordered by (distance, row); a query that found fewer than k
    codes has rows -1 and distances ``64 * W + 1`` at the end."""
    faiss = _faiss()
    if isinstance(index, faiss.IndexBinaryIVF):
        index.nprobe = nprobe
    elif isinstance(index, faiss.IndexBinaryHNSW):
        index.hnsw.efSearch = max(ef_search, k)
    distances, rows = index.search(_as_bytes(query_packed), k)
    missing = rows < 0
    distances = np.where(missing, query_packed.shape[1] * _WORD_BITS + 1, distances).astype(np.int32)
    order = np.lexsort((np.where(missing, np.iinfo(np.int64).max, rows), distances), axis=-1)
    return np.take_along_axis(rows, order, axis=1).astype(np.int64), np.take_along_axis(
        distances, order, axis=1
    )


def recall_at_k(approximate_dist: np.ndarray, exact_dist: np.ndarray) -> float:
    """Share of the exact top k an approximate top k found, ties at equal distance counted as found."""
    k = exact_dist.shape[1]
    high = int(max(exact_dist.max(), approximate_dist.max())) + 2
    offsets = (np.arange(len(exact_dist)) * high)[:, None]

    def histogram(dist: np.ndarray) -> np.ndarray:
        return np.bincount((dist + offsets).ravel(), minlength=len(dist) * high).reshape(len(dist), high)

    found = np.minimum(histogram(approximate_dist), histogram(exact_dist)).sum(axis=1)
    return float(found.mean() / k)


def id_recall_at_k(approximate_rows: np.ndarray, exact_rows: np.ndarray) -> float:
    """Share of the exact top-k rows that the approximate answer holds (ties not forgiven)."""
    hits = [len(np.intersect1d(a, e)) for a, e in zip(approximate_rows, exact_rows, strict=True)]
    return float(np.mean(hits) / exact_rows.shape[1])


def save_index(index, path: str | Path) -> Path:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    _faiss().write_index_binary(index, str(tmp))
    tmp.replace(path)
    return path


def load_index(path: str | Path):
    if not Path(path).is_file():
        raise ValueError(f"There is no approximate index at {path}; build one first.")
    return _faiss().read_index_binary(str(path))


def index_path(store_root: str | Path, kind: str) -> Path:
    """Where a store keeps its approximate index of ``kind``."""
    return Path(store_root) / f"index-{kind}.faiss"


def build_store_index(store, kind: str = "ivf", *, nlist: int | None = None, hnsw_m: int = 32) -> Path:
    """Build the approximate index of a :class:`~core.retrieval.store.CodeStore`'s codes (shards read
    memory-mapped, in row order) and save it in the store; index rows are store rows."""
    if "codes" not in store.manifest["arrays"]:
        raise ValueError(f"The {store.kind} store {store.root} holds no binary codes to index.")
    index = build_approximate_index(list(store.arrays("codes")), kind, nlist=nlist, hnsw_m=hnsw_m)
    return save_index(index, index_path(store.root, kind))
