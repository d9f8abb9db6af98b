"""Tests for core.retrieval: packing, exact Hamming search (all backends), mAP and precision@k.

Every search result is compared with a brute force over unpacked codes and a stable sort; the metrics
with a per-query reference that builds the ranking explicitly.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from core.retrieval import (
    HammingIndex,
    average_precision,
    hamming_distances,
    hamming_topk,
    mean_average_precision,
    pack_codes,
    precision_at_k,
    ranking_by_hamming,
    unpack_codes,
)
from core.retrieval import hamming as hamming_module


def random_signs(rng: np.random.Generator, n: int, n_bits: int) -> np.ndarray:
    return rng.choice(np.array([-1, 1], dtype=np.int8), size=(n, n_bits))


def brute_distances(query_codes: np.ndarray, db_codes: np.ndarray) -> np.ndarray:
    return (query_codes[:, None, :] != db_codes[None, :, :]).sum(axis=2)


def brute_topk(query_codes: np.ndarray, db_codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    dist = brute_distances(query_codes, db_codes)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(dist, order, axis=1)


@pytest.fixture
def small_tiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force many tiles, many merges and the thread pool even on tiny inputs."""
    monkeypatch.setattr(hamming_module, "_MIN_TILE", 16)
    monkeypatch.setattr(hamming_module, "_TILE_ELEMENTS", 256)
    monkeypatch.setattr(hamming_module, "_THREAD_MIN_PAIRS", 0)


# ------------------------------------------------------------------------------------------------ packing


@pytest.mark.parametrize("n_bits", [6, 8, 12, 64, 65, 128])
def test_pack_unpack_round_trip(n_bits: int) -> None:
    codes = random_signs(np.random.default_rng(n_bits), 37, n_bits)
    packed = pack_codes(codes)
    assert packed.dtype == np.uint64
    assert packed.shape == (37, -(-n_bits // 64))
    np.testing.assert_array_equal(unpack_codes(packed, n_bits), codes)
    assert unpack_codes(packed, n_bits).dtype == np.int8
    # the same code given as bool, 0/1 ints and float signs packs to the same words
    np.testing.assert_array_equal(pack_codes(codes > 0), packed)
    np.testing.assert_array_equal(pack_codes((codes > 0).astype(np.int64)), packed)
    np.testing.assert_array_equal(pack_codes(codes.astype(np.float32)), packed)
    # padding bits are zero
    if n_bits % 64:
        assert not (packed[:, -1] >> np.uint64(n_bits % 64)).any()


def test_pack_bit_layout_is_little_endian_words() -> None:
    codes = -np.ones((3, 65), dtype=np.int8)
    codes[0, [0, 2, 3]] = 1  # bits 0, 2, 3 -> 1 + 4 + 8
    codes[1, 63] = 1  # top bit of word 0
    codes[2, 64] = 1  # bit 0 of word 1
    packed = pack_codes(codes)
    assert packed.tolist() == [[13, 0], [1 << 63, 0], [0, 1]]


def test_pack_sign_codes_zero_counts_as_plus_one() -> None:
    packed = pack_codes(np.array([[-1.0, 0.0, 1.0, -1.0]]))
    assert packed.tolist() == [[0b0110]]
    np.testing.assert_array_equal(unpack_codes(packed, 4), [[-1, 1, 1, -1]])


# ------------------------------------------------------------------------------------------------ distances


@pytest.mark.parametrize("n_bits", [6, 65, 130])
def test_hamming_distances_match_brute_force(n_bits: int) -> None:
    rng = np.random.default_rng(1)
    query_codes, db_codes = random_signs(rng, 9, n_bits), random_signs(rng, 50, n_bits)
    dist = hamming_distances(pack_codes(query_codes), pack_codes(db_codes))
    assert dist.dtype == np.int32
    np.testing.assert_array_equal(dist, brute_distances(query_codes, db_codes))


def test_ranking_is_stable_argsort() -> None:
    rng = np.random.default_rng(2)
    query_codes, db_codes = random_signs(rng, 7, 6), random_signs(rng, 300, 6)
    ranking = ranking_by_hamming(pack_codes(query_codes), pack_codes(db_codes))
    expected = np.argsort(brute_distances(query_codes, db_codes), axis=1, kind="stable")
    np.testing.assert_array_equal(ranking, expected)


# ------------------------------------------------------------------------------------------------ top-k


@pytest.mark.parametrize(
    ("n_bits", "n_db", "n_queries", "k"),
    [
        (6, 400, 23, 50),
        (6, 400, 1, 7),
        (6, 30, 5, 100),
        (64, 900, 40, 25),
        (65, 500, 12, 1),
        (130, 300, 8, 40),
    ],
)
@pytest.mark.parametrize("tiny_tiles", [False, True])
def test_topk_matches_stable_brute_force(
    n_bits: int, n_db: int, n_queries: int, k: int, tiny_tiles: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if tiny_tiles:
        monkeypatch.setattr(hamming_module, "_MIN_TILE", 16)
        monkeypatch.setattr(hamming_module, "_TILE_ELEMENTS", 256)
        monkeypatch.setattr(hamming_module, "_THREAD_MIN_PAIRS", 0)
    rng = np.random.default_rng(n_bits + n_db + k)
    query_codes, db_codes = random_signs(rng, n_queries, n_bits), random_signs(rng, n_db, n_bits)
    expected_idx, expected_dist = brute_topk(query_codes, db_codes, min(k, n_db))
    for batch_size in (None, 1, 4):
        idx, dist = hamming_topk(
            pack_codes(query_codes), pack_codes(db_codes), k, batch_size=batch_size, n_threads=2
        )
        assert idx.dtype == np.int64 and dist.dtype == np.int32
        assert idx.shape == (n_queries, min(k, n_db))
        np.testing.assert_array_equal(idx, expected_idx)
        np.testing.assert_array_equal(dist, expected_dist)


def test_topk_ties_keep_smallest_indices() -> None:
    db = pack_codes(np.array([[1, 1], [-1, -1], [1, -1], [1, 1], [1, 1]]))
    idx, dist = hamming_topk(pack_codes(np.array([[1, 1]])), db, 3)
    assert idx.tolist() == [[0, 3, 4]] and dist.tolist() == [[0, 0, 0]]
    idx, dist = hamming_topk(pack_codes(np.array([[1, -1]])), db, 3)
    assert idx.tolist() == [[2, 0, 1]] and dist.tolist() == [[0, 1, 1]]


def test_naive_backend_equals_numpy(small_tiles: None) -> None:
    rng = np.random.default_rng(3)
    query, db = pack_codes(random_signs(rng, 30, 6)), pack_codes(random_signs(rng, 700, 6))
    for k in (1, 10, 200, 1000):
        naive = hamming_topk(query, db, k, backend="naive")
        fast = hamming_topk(query, db, k)
        np.testing.assert_array_equal(naive[0], fast[0])
        np.testing.assert_array_equal(naive[1], fast[1])


@pytest.mark.parametrize("n_bits", [6, 12, 64, 96])
def test_faiss_backend_equals_numpy(n_bits: int) -> None:
    pytest.importorskip("faiss")
    rng = np.random.default_rng(n_bits)
    query, db = pack_codes(random_signs(rng, 25, n_bits)), pack_codes(random_signs(rng, 600, n_bits))
    for k in (1, 17, 300, 600, 700):
        via_faiss = hamming_topk(query, db, k, backend="faiss")
        via_numpy = hamming_topk(query, db, k)
        np.testing.assert_array_equal(via_faiss[0], via_numpy[0])
        np.testing.assert_array_equal(via_faiss[1], via_numpy[1])
    index = HammingIndex(db, n_bits)
    expected = hamming_topk(query, db, 17)[0]
    for _ in range(2):  # the second search reuses the cached faiss index
        np.testing.assert_array_equal(index.search(query, 17, backend="faiss")[0], expected)


class AdversarialIndex:
    """Stands in for a faiss index: a valid k-nearest answer, but ties resolved towards *large* indices
    and rows returned in shuffled order, as faiss is free to do."""

    def __init__(self, db_codes: np.ndarray) -> None:
        self.db_codes = db_codes
        self.rng = np.random.default_rng(0)

    def search(self, query_bytes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        query_codes = np.unpackbits(query_bytes, axis=1, bitorder="little")[:, : self.db_codes.shape[1]]
        dist = brute_distances(query_codes.astype(np.int8) * 2 - 1, self.db_codes)
        n_db = dist.shape[1]
        order = np.lexsort((-np.arange(n_db)[None, :].repeat(len(dist), 0), dist), axis=1)[:, :k]
        for row in order:
            self.rng.shuffle(row)
        return np.take_along_axis(dist, order, axis=1).astype(np.int32), order


def test_faiss_tie_correction_gives_numpy_answer() -> None:
    rng = np.random.default_rng(6)
    query_codes, db_codes = random_signs(rng, 30, 6), random_signs(rng, 500, 6)
    query, db = pack_codes(query_codes), pack_codes(db_codes)
    for k in (1, 5, 40, 260, 500):
        expected = hamming_topk(query, db, k)
        got = hamming_module._faiss_topk(
            AdversarialIndex(db_codes), query, db, k, lambda q, k=k: hamming_topk(q, db, k)
        )
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])


def test_faiss_backend_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "faiss", None)  # makes `import faiss` raise ImportError
    packed = pack_codes(np.ones((3, 8)))
    with pytest.raises(ValueError, match="pip install faiss-cpu"):
        hamming_topk(packed, packed, 1, backend="faiss")


def test_hamming_index_matches_function(small_tiles: None) -> None:
    rng = np.random.default_rng(4)
    query, db = pack_codes(random_signs(rng, 11, 70)), pack_codes(random_signs(rng, 200, 70))
    index = HammingIndex(db, 70)
    assert len(index) == 200
    for backend in ("numpy", "naive"):
        got = index.search(query, 9, backend=backend)
        expected = hamming_topk(query, db, 9)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])


# ------------------------------------------------------------------------------------------------ metrics


def reference_ranking(query_code: np.ndarray, db_codes: np.ndarray) -> list[int]:
    distances = [int((query_code != code).sum()) for code in db_codes]
    return sorted(range(len(db_codes)), key=lambda i: (distances[i], i))


def reference_relevant(query_label: np.ndarray, db_label: np.ndarray) -> bool:
    if np.ndim(query_label) == 0:
        return bool(query_label == db_label)
    return any(a == 1 and b == 1 for a, b in zip(query_label, db_label, strict=True))


def reference_ap(relevant_in_order: list[bool]) -> float:
    hits, total = 0, 0.0
    for position, relevant in enumerate(relevant_in_order, start=1):
        if relevant:
            hits += 1
            total += hits / position
    return total / hits if hits else 0.0


def reference_metrics(query_labels, db_labels, query_codes, db_codes, top, ks):
    aps, precisions = [], {k: [] for k in ks}
    for q_label, q_code in zip(query_labels, query_codes, strict=True):
        ranking = reference_ranking(q_code, db_codes)
        relevant = [reference_relevant(q_label, db_labels[i]) for i in ranking]
        aps.append(reference_ap(relevant if top is None else relevant[:top]))
        for k in ks:
            precisions[k].append(sum(relevant[:k]) / k)
    return float(np.mean(aps)), {k: float(np.mean(v)) for k, v in precisions.items()}


def test_average_precision_hand_computed() -> None:
    ap = average_precision(np.array([[1, 0, 1, 0, 0, 1], [0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0]], dtype=bool))
    np.testing.assert_allclose(ap, [(1 / 1 + 2 / 3 + 3 / 6) / 3, 0.0, 1 / 2])


@pytest.mark.parametrize("multi_hot", [False, True])
@pytest.mark.parametrize("top", [None, 10])
def test_map_and_precision_match_reference(multi_hot: bool, top: int | None) -> None:
    rng = np.random.default_rng(5 + multi_hot)
    n_bits, n_db, n_queries = 6, 120, 25  # 6 bits: many ties, so the index tie-break matters
    query_codes, db_codes = random_signs(rng, n_queries, n_bits), random_signs(rng, n_db, n_bits)
    if multi_hot:
        db_labels = (rng.random((n_db, 5)) < 0.3).astype(np.int64)
        query_labels = (rng.random((n_queries, 5)) < 0.3).astype(np.int64)
        query_labels[0] = 0  # a query with no relevant item at all
    else:
        db_labels = rng.integers(0, 4, n_db)
        query_labels = rng.integers(0, 5, n_queries)  # label 4 is never in the database
        query_labels[0] = 4
    ks = (1, 5, 10, 120)
    expected_map, expected_precision = reference_metrics(
        query_labels, db_labels, query_codes, db_codes, top, ks
    )
    query, db = pack_codes(query_codes), pack_codes(db_codes)
    got = mean_average_precision(query_labels, db_labels, query, db, top=top, batch_size=7)
    assert got == pytest.approx(expected_map, abs=1e-12)
    got_precision = precision_at_k(query_labels, db_labels, query, db, ks=ks)
    assert got_precision.keys() == expected_precision.keys()
    for k in ks:
        assert got_precision[k] == pytest.approx(expected_precision[k], abs=1e-12)


def test_query_without_relevant_items_scores_zero() -> None:
    codes = pack_codes(np.array([[1, 1, -1], [1, -1, -1], [-1, -1, -1]]))
    db_labels = np.array([0, 0, 1])
    # query 0 (label 0): ranking 0, 1, 2 -> AP 1; query 1 (label 2): nothing relevant -> AP 0
    got = mean_average_precision(np.array([0, 2]), db_labels, codes[:2], codes)
    assert got == pytest.approx(0.5)
    assert precision_at_k(np.array([0, 2]), db_labels, codes[:2], codes, ks=(1, 3)) == pytest.approx(
        {1: 0.5, 3: (2 / 3) / 2}
    )


# ------------------------------------------------------------------------------------------------ validation


def test_input_validation_errors() -> None:
    packed_64 = pack_codes(np.ones((4, 64)))
    packed_128 = pack_codes(np.ones((4, 128)))
    with pytest.raises(ValueError, match="words per code"):
        hamming_topk(packed_64, packed_128, 1)
    with pytest.raises(ValueError, match="dtype uint64"):
        hamming_distances(packed_64.astype(np.int64), packed_64)
    with pytest.raises(ValueError, match="2-D"):
        hamming_topk(packed_64[0], packed_64, 1)
    with pytest.raises(ValueError, match="2-D"):
        pack_codes(np.ones(8))
    with pytest.raises(ValueError, match="found 2"):
        pack_codes(np.array([[1, 2, -1]]))
    with pytest.raises(ValueError, match="dtype"):
        pack_codes(np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="n_bits=65"):
        unpack_codes(packed_64, 65)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        hamming_topk(packed_64, packed_64, 0)
    with pytest.raises(ValueError, match="backend"):
        hamming_topk(packed_64, packed_64, 1, backend="gpu")
    with pytest.raises(ValueError, match="empty"):
        hamming_topk(packed_64, packed_64[:0], 1)
    with pytest.raises(ValueError, match="bits set beyond"):
        HammingIndex(packed_64, 10)
    with pytest.raises(ValueError, match="db_labels has 3 rows"):
        mean_average_precision(np.zeros(4, int), np.zeros(3, int), packed_64, packed_64)
    with pytest.raises(ValueError, match="both be class ids"):
        precision_at_k(np.zeros(4, int), np.zeros((4, 2), int), packed_64, packed_64)
    with pytest.raises(ValueError, match="database size 4"):
        precision_at_k(np.zeros(4, int), np.zeros(4, int), packed_64, packed_64, ks=(5,))
