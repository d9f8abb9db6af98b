"""Retrieval over a `conceptlens encode` store from the dashboard: model A's query code searched over the
store's memory-mapped shards, exactly (checked against brute force), the results drawn from the store's own
file list; a store of another model, or a folder that is no store, gets one sentence."""

from __future__ import annotations

import numpy as np
import pytest

from core.retrieval import hamming_distances, pack_codes

PAGE = "retrieval"


@pytest.fixture(scope="module")
def stores(tiny_bundles, tmp_path_factory):
    from core.cli import main
    from core.encode import EncodeConfig, encode_folder

    root = tmp_path_factory.mktemp("stores")
    assert (
        main(["toybirds", "render", "--out", str(root / "render"), "--split", "test", "--count", "14"]) == 0
    )
    made = {}
    for name in ("toy-hash-csd", "toy-hash-nocsd"):
        made[name] = root / f"store-{name}"
        encode_folder(
            str(tiny_bundles / name),
            f"folder:{root / 'render' / 'images'}",
            made[name],
            EncodeConfig(shard_size=5, device="cpu"),  # 3 shards: the search merges them
            log=lambda *_: None,
        )
    return made


def open_retrieval(dashboard):
    app = dashboard(PAGE)
    assert not app.exception, [e.value for e in app.exception]
    return app


def test_the_store_search_is_exact_and_shows_the_stores_images(dashboard, stores):
    from lens.retrieval import open_code_store

    app = open_retrieval(dashboard)
    assert app.selectbox(key="ret_model_a").value.endswith("toy-hash-csd")
    app.text_input(key="ret_store").set_value(str(stores["toy-hash-csd"])).run()
    assert not app.exception and not app.error, [e.value for e in app.error]
    k = app.slider(key="ret_k").value
    store = open_code_store(stores["toy-hash-csd"])
    # model A's code for test image 0, as the page searched with it: its stored query code
    from core.bundle import read_bundle_arrays
    from core.concepthash.arrays import ARRAYS, QUERY_ARRAYS

    path = app.selectbox(key="ret_model_a").value
    arrays = read_bundle_arrays(path, ARRAYS) | read_bundle_arrays(path, QUERY_ARRAYS)
    code = arrays["query_codes"][0]
    packed = store.load("codes")
    distances = hamming_distances(pack_codes(code[None].astype(np.int8)), packed)[0]
    order = np.lexsort((np.arange(len(distances)), distances))[:k]
    ids = store.ids
    expected = [f"#{rank} · d={int(distances[row])} · {ids[row]}" for rank, row in enumerate(order, 1)]
    captions = [c for image in app.get("image") for c in image.captions if c.startswith("#") and " · d=" in c]
    shown = [c for c in captions if any(c.endswith(ids[row]) for row in order)]
    assert shown[-k:] == expected, (shown, expected)
    assert any(f"Top {k} of {len(store):,} codes" in c.value for c in app.caption)


@pytest.mark.parametrize(
    "which, words", [("other", "was encoded by toy-hash-nocsd"), ("none", "cannot be opened")]
)
def test_a_store_the_model_cannot_search_gets_one_sentence(dashboard, stores, tmp_path, which, words):
    app = open_retrieval(dashboard)
    target = stores["toy-hash-nocsd"] if which == "other" else tmp_path
    app.text_input(key="ret_store").set_value(str(target)).run()
    assert not app.exception, [e.value for e in app.exception]
    errors = [e.value for e in app.error]
    assert len(errors) == 1 and words in errors[0], errors
