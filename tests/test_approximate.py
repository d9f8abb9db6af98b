"""Approximate faiss binary indexes: recall against exact search, built from a store, and in the bench."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("faiss")

from core import bench  # noqa: E402
from core.retrieval import hamming_topk  # noqa: E402
from core.retrieval.approximate import (  # noqa: E402
    build_approximate_index,
    build_store_index,
    id_recall_at_k,
    load_index,
    recall_at_k,
    search_approximate,
)
from core.retrieval.store import CodeStore  # noqa: E402
from tests.test_store import random_store  # noqa: E402


def clustered(n_db: int, n_queries: int, bits: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    config = bench.RetrievalBenchConfig(
        n_db=n_db, bits=bits, queries=n_queries, clusters=20, flip=0.05, seed=seed
    )
    return bench.bench_codes(config)


def test_recall_counts_ties_at_the_kth_distance_as_found() -> None:
    exact = np.array([[1, 2, 2, 3]])
    assert recall_at_k(np.array([[1, 2, 2, 3]]), exact) == 1.0
    assert recall_at_k(np.array([[1, 2, 3, 3]]), exact) == 0.75  # only one of the two 3s was in the exact 4
    assert recall_at_k(np.array([[1, 2, 4, 65]]), exact) == 0.5  # 65: a missing result
    assert id_recall_at_k(np.array([[0, 1, 7, 9]]), np.array([[0, 1, 2, 3]])) == 0.5


def test_ivf_scanning_every_list_is_exact() -> None:
    db, queries = clustered(2000, 30)
    index = build_approximate_index(db, "ivf", nlist=8)
    rows, dist = search_approximate(index, queries, 10, nprobe=8)
    exact_rows, exact_dist = hamming_topk(queries, db, 10)
    np.testing.assert_array_equal(dist, exact_dist)
    np.testing.assert_array_equal(rows, exact_rows)  # re-sorted by (distance, row), as exact search


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_indexes_find_most_neighbours_of_clustered_codes(kind: str) -> None:
    db, queries = clustered(5000, 50)
    index = build_approximate_index(db, kind)
    rows, dist = search_approximate(index, queries, 10)
    assert recall_at_k(dist, hamming_topk(queries, db, 10)[1]) > 0.9


def test_store_index_rows_are_store_rows(tmp_path) -> None:
    db = random_store(tmp_path / "store", [300, 0, 500, 200], 32)
    store = CodeStore(tmp_path / "store")
    path = build_store_index(store, "ivf", nlist=4)
    assert path == tmp_path / "store" / "index-ivf.faiss"
    rows, dist = search_approximate(load_index(path), db[[5, 450, 999]], 1, nprobe=4)
    assert dist[:, 0].tolist() == [0, 0, 0]
    np.testing.assert_array_equal(dist, store.search(db[[5, 450, 999]], 1)[1])
    with pytest.raises(ValueError, match="no approximate index"):
        load_index(tmp_path / "store" / "index-hnsw.faiss")


def test_bench_retrieval_reports_recall_of_approximate_indexes(tmp_path, capsys) -> None:
    from core.cli import main

    argv = ["bench", "retrieval", "--n-db", "3000", "--queries", "20", "--k", "5", "--repeats", "1"]
    argv += ["--naive-queries", "0", "--approximate", "ivf", "--approximate", "hnsw", "--clusters", "30"]
    assert main([*argv, "--json-out", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert "faiss IndexBinaryIVF" in out and "recall@5" in out
    import json

    rows = json.loads((tmp_path / "r.json").read_text())["approximate"]
    assert [r["index"] for r in rows] == ["faiss IndexBinaryIVF", "faiss IndexBinaryHNSW"]
    assert all(0.5 < r["recall_at_k"] <= 1 for r in rows)
