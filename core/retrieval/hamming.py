"""Packed binary codes and exact Hamming-distance search.

A code of ``K`` bits is stored as ``W = ceil(K / 64)`` little-endian ``np.uint64`` words: bit ``j`` of
the code is bit ``j % 64`` of word ``j // 64``; unused high bits of the last word are zero, so they never
add to a distance. A set bit means ``+1``, a clear bit ``-1``.

Search is exact. Results are ordered by (distance, database index): among equal distances the smaller
database index comes first, the same order as a stable sort of the full distance row. Three backends
give identical results:

* ``"numpy"`` (default): blocks of queries sweep the database in cache-sized tiles; a per-query bound
  (the current k-th distance) keeps only the few candidates that can still enter the top k, so no row is
  ever fully sorted. Query blocks run on a thread pool (NumPy releases the GIL inside the ufuncs).
* ``"naive"``: one query at a time, full distance row and stable argsort; the reference for benchmarks.
* ``"faiss"``: ``faiss.IndexBinaryFlat`` (``pip install faiss-cpu``), re-sorted by (distance, index) and
  corrected where ties at the k-th distance would make its answer differ.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

BACKENDS = ("numpy", "naive", "faiss")

_WORD_BITS = 64
_TILE_ELEMENTS = 1 << 18  # query-block x database-tile pairs per pass: 2 MiB of uint64 XOR results
_MIN_TILE = 1024  # database items per tile at least, so per-tile Python overhead stays small
_MAX_BLOCK = 64  # queries per block when the caller does not choose
_THREAD_MIN_PAIRS = 1 << 22  # below this many query x database pairs one thread is faster
_FULL_ROW_ELEMENTS = 1 << 22  # bound on the temporaries of functions that return full distance rows


# --------------------------------------------------------------------------------------------------
# packing
# --------------------------------------------------------------------------------------------------


def _codes_to_bits(codes: np.ndarray) -> np.ndarray:
    """Turn bool, {0,1} or {-1,0,+1} codes into a bool bit matrix (True = +1)."""
    if codes.dtype == np.bool_:
        return codes
    if not (np.issubdtype(codes.dtype, np.integer) or np.issubdtype(codes.dtype, np.floating)):
        raise ValueError(f"codes must be bool, integer or float, got dtype {codes.dtype}.")
    if codes.size == 0:
        return codes.astype(bool)
    valid = (codes == -1) | (codes == 0) | (codes == 1)
    if not bool(valid.all()):
        bad = codes[~valid].flat[0].item()
        raise ValueError(
            f"codes must hold only -1/+1 (sign codes, 0 read as +1) or 0/1 bits, found {bad!r}; "
            "binarise first, e.g. with codes >= 0."
        )
    if bool((codes == -1).any()):
        return codes >= 0
    return codes == 1


def pack_codes(codes: np.ndarray) -> np.ndarray:
    """Pack ``(N, K)`` binary codes into ``(N, ceil(K / 64))`` little-endian ``np.uint64`` words.

    Accepted inputs: ``bool`` (True = +1), sign codes in {-1, +1} as ints or floats, where a 0 counts
    as +1 (so ``np.sign`` output can be passed directly), or 0/1 bits. An array that holds no -1 at all
    is read as 0/1 bits (0 = -1); any -1 makes it a sign code. Padding bits are zero.
    """
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"codes must be a 2-D (N, K) array, got shape {codes.shape}.")
    n_items, n_bits = codes.shape
    if n_bits < 1:
        raise ValueError("codes must have at least one bit per item (K >= 1), got K = 0.")
    bits = _codes_to_bits(codes)
    n_words = math.ceil(n_bits / _WORD_BITS)
    packed_bytes = np.packbits(bits, axis=1, bitorder="little")
    padded = np.zeros((n_items, n_words * 8), dtype=np.uint8)
    padded[:, : packed_bytes.shape[1]] = packed_bytes
    return padded.view("<u8").astype(np.uint64)


def unpack_codes(packed: np.ndarray, n_bits: int) -> np.ndarray:
    """Inverse of :func:`pack_codes`: ``(N, W)`` uint64 words -> ``(N, n_bits)`` int8 codes in {-1, +1}."""
    packed = _check_packed("packed", packed)
    n_words = packed.shape[1]
    if isinstance(n_bits, bool) or not isinstance(n_bits, int | np.integer):
        raise ValueError(f"n_bits must be an integer, got {n_bits!r}.")
    if not 1 <= n_bits <= n_words * _WORD_BITS or math.ceil(n_bits / _WORD_BITS) != n_words:
        raise ValueError(
            f"n_bits={n_bits} does not fit packed codes of {n_words} words "
            f"(expected {(n_words - 1) * _WORD_BITS + 1}..{n_words * _WORD_BITS})."
        )
    as_bytes = np.ascontiguousarray(packed.astype("<u8", copy=False)).view(np.uint8)
    bits = np.unpackbits(as_bytes, axis=1, count=int(n_bits), bitorder="little")
    return (bits.astype(np.int8) * 2 - 1).astype(np.int8)


# --------------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------------


def _check_packed(name: str, packed: np.ndarray) -> np.ndarray:
    """Check that ``packed`` is a 2-D uint64 array with at least one word per code."""
    if not isinstance(packed, np.ndarray):
        raise ValueError(f"{name} must be a NumPy array of packed codes, got {type(packed).__name__}.")
    if packed.dtype != np.uint64:
        raise ValueError(f"{name} must have dtype uint64 (use pack_codes), got {packed.dtype}.")
    if packed.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_codes, n_words), got shape {packed.shape}.")
    if packed.shape[1] < 1:
        raise ValueError(f"{name} must have at least one 64-bit word per code, got shape {packed.shape}.")
    return packed


def _check_pair(query_packed: np.ndarray, db_packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate a query / database pair of packed code matrices with the same word count."""
    query_packed = _check_packed("query_packed", query_packed)
    db_packed = _check_packed("db_packed", db_packed)
    if query_packed.shape[1] != db_packed.shape[1]:
        raise ValueError(
            f"query_packed has {query_packed.shape[1]} words per code but db_packed has "
            f"{db_packed.shape[1]}; both must come from codes of the same length."
        )
    if db_packed.shape[0] == 0:
        raise ValueError("db_packed is empty; the database needs at least one code.")
    return query_packed, db_packed


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _distance_dtype(n_words: int) -> np.dtype:
    """Smallest unsigned type holding every distance plus one sentinel value (64 * W + 1)."""
    largest = n_words * _WORD_BITS + 1
    if largest <= np.iinfo(np.uint8).max:
        return np.dtype(np.uint8)
    if largest <= np.iinfo(np.uint16).max:
        return np.dtype(np.uint16)
    return np.dtype(np.int32)


def _available_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# --------------------------------------------------------------------------------------------------
# full distance rows
# --------------------------------------------------------------------------------------------------


def _word_columns(packed: np.ndarray) -> np.ndarray:
    """``(W, N)`` C-contiguous copy of the packed words, so each word's column streams from memory."""
    return np.ascontiguousarray(packed.T)


def _distances_into(
    query_block: np.ndarray,
    db_cols: np.ndarray,
    start: int,
    stop: int,
    out: np.ndarray,
    xor_buf: np.ndarray,
    count_buf: np.ndarray,
) -> np.ndarray:
    """Write Hamming distances of ``query_block`` against database items ``start:stop`` into ``out``."""
    for word in range(db_cols.shape[0]):
        np.bitwise_xor(query_block[:, word, None], db_cols[word, None, start:stop], out=xor_buf)
        if word == 0:
            np.bitwise_count(xor_buf, out=out)
        else:
            np.add(out, np.bitwise_count(xor_buf, out=count_buf), out=out)
    return out


def _distance_rows(query_packed: np.ndarray, db_cols: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Full ``(Q, N)`` distance matrix in ``dtype``, computed in query blocks to bound temporaries."""
    n_queries, n_db = query_packed.shape[0], db_cols.shape[1]
    result = np.empty((n_queries, n_db), dtype=dtype)
    block = max(1, _FULL_ROW_ELEMENTS // max(n_db, 1))
    for lo in range(0, n_queries, block):
        hi = min(lo + block, n_queries)
        xor_buf = np.empty((hi - lo, n_db), dtype=np.uint64)
        count_buf = np.empty((hi - lo, n_db), dtype=np.uint8)
        _distances_into(query_packed[lo:hi], db_cols, 0, n_db, result[lo:hi], xor_buf, count_buf)
    return result


def hamming_distances(query_packed: np.ndarray, db_packed: np.ndarray) -> np.ndarray:
    """All pairwise Hamming distances, ``(Q, N)`` int32, by XOR and ``np.bitwise_count`` of the words."""
    query_packed, db_packed = _check_pair(query_packed, db_packed)
    dtype = _distance_dtype(db_packed.shape[1])
    return _distance_rows(query_packed, _word_columns(db_packed), dtype).astype(np.int32)


def ranking_by_hamming(query_packed: np.ndarray, db_packed: np.ndarray) -> np.ndarray:
    """Full ranking ``(Q, N)`` int64 of database indices per query: by distance, ties by smaller index."""
    query_packed, db_packed = _check_pair(query_packed, db_packed)
    dtype = _distance_dtype(db_packed.shape[1])
    db_cols = _word_columns(db_packed)
    n_queries, n_db = query_packed.shape[0], db_packed.shape[0]
    ranking = np.empty((n_queries, n_db), dtype=np.int64)
    block = max(1, _FULL_ROW_ELEMENTS // n_db)
    for lo in range(0, n_queries, block):
        hi = min(lo + block, n_queries)
        # a stable sort of small unsigned integers is a radix sort in NumPy: linear time.
        dist = _distance_rows(query_packed[lo:hi], db_cols, dtype)
        ranking[lo:hi] = np.argsort(dist, axis=1, kind="stable")
    return ranking


# --------------------------------------------------------------------------------------------------
# numpy backend: bounded candidate selection
# --------------------------------------------------------------------------------------------------


def _kth_smallest_per_row(dist: np.ndarray, k: int, n_values: int) -> np.ndarray:
    """k-th smallest value of each row of a small-integer matrix, via one joint per-row histogram."""
    n_rows = dist.shape[0]
    offsets = (np.arange(n_rows, dtype=np.int64) * n_values)[:, None]
    hist = np.bincount((dist + offsets).ravel(), minlength=n_rows * n_values).reshape(n_rows, n_values)
    return np.argmax(np.cumsum(hist, axis=1) >= k, axis=1)


def _take_first_k(
    rows: np.ndarray, dists: np.ndarray, idx: np.ndarray, n_rows: int, k: int, d_base: int, i_base: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the k entries smallest by (distance, index); every row must have at least k entries."""
    if n_rows * d_base * i_base < np.iinfo(np.int64).max:
        keys = (rows * d_base + dists) * i_base + idx
        keys.sort()
        idx = keys % i_base
        rest = keys // i_base
        dists, rows = rest % d_base, rest // d_base
    else:  # keys would overflow int64: sort the three columns instead
        order = np.lexsort((idx, dists, rows))
        rows, dists, idx = rows[order], dists[order], idx[order]
    counts = np.bincount(rows, minlength=n_rows)
    starts = np.cumsum(counts) - counts
    positions = starts[:, None] + np.arange(k)
    return dists[positions].astype(np.int32), idx[positions]


def _flat_true(mask_buf: np.ndarray, n: int) -> np.ndarray:
    """Flat positions of True among the first ``n`` entries of ``mask_buf`` (which has ``n + 8`` or more).

    Candidates are rare, so the mask is scanned as 8-byte words first (``words != 0`` is a fast SIMD
    pass, and ``np.flatnonzero`` then runs over 8x fewer entries: about a third of the cost of
    ``np.flatnonzero`` on the bytes); only words holding a True are looked at byte by byte.
    """
    n_words = -(-n // 8)
    mask_buf[n : n_words * 8] = False
    hit_words = np.flatnonzero(mask_buf[: n_words * 8].view(np.uint64) != 0)
    if hit_words.size == 0:
        return hit_words
    positions = (hit_words[:, None] * 8 + np.arange(8)).ravel()
    return positions[mask_buf[positions]]


class _BlockSearch:
    """Exact top-k of one block of queries against the whole database (the numpy backend's unit).

    The database is swept in tiles in index order. ``bound[q]`` is the distance of query q's current
    k-th best item: a later item (larger index) can enter the top k only with a strictly smaller
    distance, so only those are kept as candidates and merged in now and then. The very first tile
    seeds the bounds from per-row histograms instead, so it does not flood the candidate list.
    """

    def __init__(self, queries: np.ndarray, db_cols: np.ndarray, k: int, tile: int, dtype: np.dtype) -> None:
        self.queries, self.db_cols, self.k, self.tile, self.dtype = queries, db_cols, k, tile, dtype
        n_rows = queries.shape[0]
        self.sentinel = db_cols.shape[0] * _WORD_BITS + 1  # a distance no real item can have
        self.n_db = db_cols.shape[1]
        self.best_d = np.full((n_rows, k), self.sentinel, dtype=np.int64)
        self.best_i = np.full((n_rows, k), self.n_db, dtype=np.int64)
        self.bound = np.full((n_rows, 1), self.sentinel, dtype=dtype)
        self.pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (rows, distances, indices)
        self.n_pending = 0

    def run(self) -> tuple[np.ndarray, np.ndarray]:
        n_rows = self.queries.shape[0]
        size = n_rows * min(self.tile, self.n_db)
        xor_buf = np.empty(size, dtype=np.uint64)
        count_buf = np.empty(size, dtype=np.uint8)
        dist_buf = np.empty(size, dtype=self.dtype)
        mask_buf = np.zeros(size + 8, dtype=bool)  # room to pad each tile's mask to whole 8-byte words
        for start in range(0, self.n_db, self.tile):
            stop = min(start + self.tile, self.n_db)
            shape = (n_rows, stop - start)
            n = shape[0] * shape[1]
            dist = _distances_into(
                self.queries,
                self.db_cols,
                start,
                stop,
                dist_buf[:n].reshape(shape),
                xor_buf[:n].reshape(shape),
                count_buf[:n].reshape(shape),
            )
            bound = self.bound
            if start == 0 and shape[1] >= self.k:  # seed the bounds from the first tile's histograms
                kth = _kth_smallest_per_row(dist, self.k, self.sentinel + 1)
                bound = (kth + 1).astype(self.dtype)[:, None]
            np.less(dist, bound, out=mask_buf[:n].reshape(shape))
            self._collect(_flat_true(mask_buf, n), dist, start)
            if self.n_pending >= n_rows * self.k or stop == self.n_db:
                self._merge()
        return self.best_i, self.best_d.astype(np.int32)

    def _collect(self, flat: np.ndarray, dist: np.ndarray, start: int) -> None:
        if flat.size == 0:
            return
        rows, cols = np.divmod(flat, dist.shape[1])
        self.pending.append((rows, dist.ravel()[flat].astype(np.int64), cols + start))
        self.n_pending += flat.size

    def _merge(self) -> None:
        if not self.pending:
            return
        n_rows = self.best_d.shape[0]
        rows = np.concatenate([np.repeat(np.arange(n_rows), self.k)] + [p[0] for p in self.pending])
        dists = np.concatenate([self.best_d.ravel()] + [p[1] for p in self.pending])
        idx = np.concatenate([self.best_i.ravel()] + [p[2] for p in self.pending])
        self.pending, self.n_pending = [], 0
        best_d, self.best_i = _take_first_k(
            rows, dists, idx, n_rows, self.k, d_base=self.sentinel + 1, i_base=self.n_db + 1
        )
        self.best_d = best_d.astype(np.int64)
        self.bound = self.best_d[:, -1:].astype(self.dtype)


def _numpy_topk(
    query_packed: np.ndarray,
    db_packed: np.ndarray,
    k: int,
    batch_size: int | None,
    n_threads: int | None,
    db_cols: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    n_queries, n_db = query_packed.shape[0], db_packed.shape[0]
    if db_cols is None:
        db_cols = _word_columns(db_packed)
    threads = n_threads if n_threads is not None else _available_cpus()
    if n_queries * n_db < _THREAD_MIN_PAIRS:
        threads = 1
    block = batch_size or max(1, min(_MAX_BLOCK, math.ceil(n_queries / threads)))
    tile = max(_MIN_TILE, _TILE_ELEMENTS // block)
    dtype = _distance_dtype(db_packed.shape[1])
    starts = list(range(0, n_queries, block))

    def one_block(lo: int) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(query_packed[lo : lo + block])
        return _BlockSearch(queries, db_cols, k, tile, dtype).run()

    if threads > 1 and len(starts) > 1:
        with ThreadPoolExecutor(max_workers=min(threads, len(starts))) as pool:
            parts = list(pool.map(one_block, starts))
    else:
        parts = [one_block(lo) for lo in starts]
    if not parts:
        return np.empty((0, k), dtype=np.int64), np.empty((0, k), dtype=np.int32)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# --------------------------------------------------------------------------------------------------
# naive and faiss backends
# --------------------------------------------------------------------------------------------------


def _naive_topk(query_packed: np.ndarray, db_packed: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Reference: per query, the full distance row and a stable argsort."""
    indices = np.empty((query_packed.shape[0], k), dtype=np.int64)
    distances = np.empty((query_packed.shape[0], k), dtype=np.int32)
    for row, query in enumerate(query_packed):
        dist = np.bitwise_count(np.bitwise_xor(db_packed, query[None, :])).sum(axis=1, dtype=np.int32)
        order = np.argsort(dist, kind="stable")[:k]
        indices[row], distances[row] = order, dist[order]
    return indices, distances


def _packed_to_bytes(packed: np.ndarray) -> np.ndarray:
    """``(N, W)`` uint64 words -> ``(N, 8 W)`` uint8, the layout faiss binary indexes take."""
    return np.ascontiguousarray(packed.astype("<u8", copy=False)).view(np.uint8)


def _build_faiss_index(db_packed: np.ndarray):  # returns faiss.IndexBinaryFlat (optional dependency)
    try:
        import faiss
    except ImportError as err:
        raise ValueError("backend='faiss' needs the faiss package: pip install faiss-cpu.") from err
    # All 64 W bits are indexed; the padding bits are zero in every code, so distances are unchanged.
    index = faiss.IndexBinaryFlat(db_packed.shape[1] * _WORD_BITS)
    index.add(_packed_to_bytes(db_packed))
    return index


def _faiss_topk(
    index, query_packed: np.ndarray, db_packed: np.ndarray, k: int, numpy_fallback
) -> tuple[np.ndarray, np.ndarray]:
    """faiss search made identical to the numpy backend.

    faiss returns *a* set of nearest items, with an arbitrary choice among ties. We ask for ``2 k``
    items and sort them by (distance, index). When the last returned distance is larger than the k-th,
    every item at the k-th distance was returned, so the first k are exactly the numpy answer; the
    remaining queries (heavy ties) are answered by ``numpy_fallback``.
    """
    n_db = db_packed.shape[0]
    wanted = min(n_db, 2 * k)
    distances, indices = index.search(_packed_to_bytes(query_packed), wanted)
    order = np.lexsort((indices, distances), axis=-1)
    distances = np.take_along_axis(distances, order, axis=1)
    indices = np.take_along_axis(indices, order, axis=1).astype(np.int64)
    if wanted < n_db:
        unresolved = np.flatnonzero(distances[:, -1] == distances[:, k - 1])
    else:
        unresolved = np.empty(0, dtype=np.int64)
    indices, distances = indices[:, :k].copy(), distances[:, :k].astype(np.int32)
    if unresolved.size:
        indices[unresolved], distances[unresolved] = numpy_fallback(query_packed[unresolved])
    return indices, distances


# --------------------------------------------------------------------------------------------------
# public search API
# --------------------------------------------------------------------------------------------------


def _check_search_args(k: object, backend: str, batch_size: object, n_threads: object, n_db: int) -> int:
    k = _check_positive_int("k", k)
    if n_threads is not None:
        _check_positive_int("n_threads", n_threads)
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}.")
    if batch_size is not None:
        _check_positive_int("batch_size", batch_size)
    return min(k, n_db)


def hamming_topk(
    query_packed: np.ndarray,
    db_packed: np.ndarray,
    k: int,
    *,
    backend: str = "numpy",
    batch_size: int | None = None,
    n_threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest database codes per query by Hamming distance.

    Returns ``(indices, distances)``, both ``(Q, k)``: int64 database indices and int32 distances,
    ordered by distance with ties broken by the smaller database index. ``k`` larger than the database
    is reduced to its size. ``batch_size`` is the number of queries per block (numpy backend);
    ``n_threads`` defaults to the CPUs this process may use.
    """
    query_packed, db_packed = _check_pair(query_packed, db_packed)
    k = _check_search_args(k, backend, batch_size, n_threads, db_packed.shape[0])
    if backend == "naive":
        return _naive_topk(query_packed, db_packed, k)
    if backend == "faiss":
        index = _build_faiss_index(db_packed)
        return _faiss_topk(
            index, query_packed, db_packed, k, lambda q: _numpy_topk(q, db_packed, k, batch_size, n_threads)
        )
    return _numpy_topk(query_packed, db_packed, k, batch_size, n_threads)


class HammingIndex:
    """A database of packed codes, searched exactly by Hamming distance.

    Keeps the word-major copy the numpy backend streams over and, once used, the faiss index, so
    repeated searches do not rebuild them.
    """

    def __init__(self, packed_db: np.ndarray, n_bits: int) -> None:
        packed_db = _check_packed("packed_db", packed_db)
        if packed_db.shape[0] == 0:
            raise ValueError("packed_db is empty; the database needs at least one code.")
        n_bits = _check_positive_int("n_bits", n_bits)
        n_words = packed_db.shape[1]
        if math.ceil(n_bits / _WORD_BITS) != n_words:
            raise ValueError(f"n_bits={n_bits} does not match packed codes of {n_words} words.")
        if n_bits % _WORD_BITS and bool((packed_db[:, -1] >> np.uint64(n_bits % _WORD_BITS)).any()):
            raise ValueError(f"packed_db has bits set beyond n_bits={n_bits}; pack it with pack_codes.")
        self.packed_db = packed_db
        self.n_bits = n_bits
        self._db_cols = _word_columns(packed_db)
        self._faiss_index = None

    def __len__(self) -> int:
        return self.packed_db.shape[0]

    def search(
        self,
        query_packed: np.ndarray,
        k: int,
        *,
        backend: str = "numpy",
        batch_size: int | None = None,
        n_threads: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Same as :func:`hamming_topk` against this database."""
        query_packed, db = _check_pair(query_packed, self.packed_db)
        k = _check_search_args(k, backend, batch_size, n_threads, len(self))
        if backend == "naive":
            return _naive_topk(query_packed, db, k)

        def numpy_search(queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return _numpy_topk(queries, db, k, batch_size, n_threads, self._db_cols)

        if backend == "faiss":
            if self._faiss_index is None:
                self._faiss_index = _build_faiss_index(db)
            return _faiss_topk(self._faiss_index, query_packed, db, k, numpy_search)
        return numpy_search(query_packed)
