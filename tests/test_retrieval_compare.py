"""The retrieval page's comparison of two models query by query: per-query AP against brute force, the first
wrong rank, what only one model returns, per-class AP and the failures list (issue: "make with vs without
L_csd say something")."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from core.retrieval import mean_average_precision, pack_codes, query_average_precisions
from lens.retrieval import (
    aligned,
    class_ap_table,
    failures_table,
    first_wrong_rank,
    only_in,
    stored_query_aps,
)
from tests.test_retrieval import reference_ap


def brute_ap(db: np.ndarray, db_labels: np.ndarray, query: np.ndarray, label: int) -> float:
    """AP by hand: rank by Hamming distance (ties: smaller index first), mean precision at relevant ranks."""
    distances = [(int((row != query).sum()), i) for i, row in enumerate(db)]
    return reference_ap([db_labels[i] == label for _, i in sorted(distances)])


def test_per_query_ap_is_brute_force_and_its_mean_is_the_stored_map():
    rng = np.random.default_rng(3)
    db = rng.choice([-1, 1], size=(60, 6))
    labels = rng.integers(0, 4, 60)
    queries = rng.choice([-1, 1], size=(9, 6))
    q_labels = rng.integers(0, 4, 9)
    aps = query_average_precisions(q_labels, labels, pack_codes(queries), pack_codes(db))
    expected = [brute_ap(db, labels, q, int(c)) for q, c in zip(queries, q_labels, strict=True)]
    assert aps == pytest.approx(expected)
    assert aps.mean() == pytest.approx(
        mean_average_precision(q_labels, labels, pack_codes(queries), pack_codes(db))
    )
    unknown = q_labels.copy()
    unknown[2] = -1  # a query whose class today's data no longer knows
    found = stored_query_aps(db, labels, queries, unknown)
    assert np.isnan(found[2]) and np.delete(found, 2) == pytest.approx(np.delete(expected, 2))


def table(ids, correct) -> pd.DataFrame:
    return pd.DataFrame(
        {"rank": range(1, len(ids) + 1), "database id": ids, "correct": pd.array(correct, dtype="boolean")}
    )


def test_first_wrong_rank_and_what_only_one_model_returns():
    a = table(["x", "y", "z", "w"], [True, True, False, True])
    b = table(["y", "v", "x", "u"], [True, True, True, True])
    assert first_wrong_rank(a) == 3 and first_wrong_rank(b) is None
    assert first_wrong_rank(table(["x"], [None])) is None  # an upload: nothing is marked
    assert only_in(a, b) == (["z", "w"], ["v", "u"])


def test_model_bs_figures_line_up_with_model_as_queries_by_id():
    assert aligned(np.array([0.1, 0.2, 0.3]), ["q1", "q2", "q3"], ["q3", "q9", "q1"]) == pytest.approx(
        [0.3, np.nan, 0.1], nan_ok=True
    )


def test_per_class_ap_lists_the_largest_differences_first():
    aps_a = np.array([1.0, 0.5, 0.2, 0.4, np.nan])
    aps_b = np.array([1.0, 0.7, 0.9, 0.4, 0.1])
    labels = np.array([0, 0, 1, 2, -1])
    found = class_ap_table(aps_a, aps_b, labels, ["red", "blue", "green"], ("A", "B"))
    assert found["class"].tolist() == ["blue", "red", "green"]
    assert found["queries"].tolist() == [1, 2, 1]
    assert found["B − A"].tolist() == pytest.approx([0.7, 0.1, 0.0])


def test_failures_are_the_queries_with_the_lowest_ap_under_either_model():
    aps_a = np.array([0.9, 0.2, 0.8, np.nan, 0.6])
    aps_b = np.array([0.1, 0.7, 0.8, 0.5, 0.6])
    found = failures_table(aps_a, aps_b, list("abcde"), ["k"] * 5, ("A", "B"), n=3)
    assert found["row"].tolist() == [0, 1, 3] and found["query"].tolist() == ["a", "b", "d"]


def test_the_page_shows_this_querys_ap_and_opens_a_failure_as_the_query(dashboard, tiny_bundles):
    """The query's AP on the page is the brute-force AP of the stored codes with today's test labels; asked
    for, the failures list is sorted by the lower AP, and "Search with it" makes that query the page's
    query."""
    import json

    from core.bundle import read_bundle_arrays
    from core.data import DataSpec, open_split

    bundle = tiny_bundles / "toy-hash-csd"
    arrays = read_bundle_arrays(bundle)
    config = json.loads((bundle / "config.json").read_text())
    test_labels = open_split(DataSpec.from_dict(config["data"]), "test").labels
    expected = brute_ap(
        np.sign(arrays["db_codes"]),
        arrays["db_labels"],
        np.sign(arrays["query_codes"][0]),
        int(test_labels[0]),
    )
    app = dashboard("retrieval")
    assert not app.exception, [e.value for e in app.exception]
    assert any(s.value == "How the two models differ" for s in app.subheader)
    line = next(m.value for m in app.markdown if m.value.startswith("**AP of this query"))
    assert f"toy-hash-csd: {expected:.3f}" in line, (line, expected)
    assert not [d for d in app.dataframe if list(d.value.columns[:2]) == ["query", "class"]], "asked for only"
    app.toggle(key="ret_compare_all").set_value(True).run()
    assert not app.exception, [e.value for e in app.exception]
    failures = next(d.value for d in app.dataframe if list(d.value.columns[:2]) == ["query", "class"])
    assert len(failures) > 0 and failures.iloc[:, 2:].min(axis=1).is_monotonic_increasing
    worst = app.selectbox(key="ret_failure_pick").value
    app.button(key="ret_failure_open").click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert app.selectbox(key="ret_query").value == worst


def test_one_querys_ap_matches_its_class_by_name_and_is_none_for_a_class_the_model_lacks():
    from lens.retrieval import query_ap

    rng = np.random.default_rng(5)
    db = rng.choice([-1, 1], size=(40, 8))
    labels = rng.integers(0, 3, 40)
    code = rng.choice([-1, 1], size=8)
    classes = ["001.Red_Bird", "002.Blue_Bird", "003.Green_Bird"]
    packed = pack_codes(db)
    assert query_ap(code, packed, labels, classes, "blue bird") == pytest.approx(
        brute_ap(db, labels, code, 1)
    )
    assert query_ap(code, packed, labels, classes, "purple bird") is None
    assert query_ap(code, packed, labels, classes, None) is None
