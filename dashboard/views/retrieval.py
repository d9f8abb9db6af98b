"""Retrieval: the same query searched by two ConceptHash models, one trained with L_csd and one without.

Each model encodes the query, searches its own stored database codes by Hamming distance, and
shows its top k; below come both models' stored metrics and their concept heatmaps for the query. A test
image's code and last-layer heatmaps come from the arrays each bundle stores, so the page draws without
loading a model; the models load for an upload, the rollout heatmaps, or a bundle saved without those arrays.
An upload that looks unlike a model's training images gets the out-of-distribution warning (lens.ood).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from lens.bundles import available, no_bundle_message, open_bundle
from lens.data import (
    bundle_images,
    data_json,
    display_name,
    missing_tile,
    open_data_split,
    picture,
    show_missing,
)
from lens.figures import (
    ATTENTION_SCALE,
    download_png,
    download_table,
    image_grid,
    labelled_grid,
    overlay,
    show_colour_scale,
)
from lens.hashing import DB_IDS, QUERY_IDS, concept_label, concept_names, is_cls_baseline, model_view
from lens.ood import show_upload_check, upload_verdict
from lens.picker import ALL as ALL_CLASSES
from lens.picker import pick_image
from lens.retrieval import (
    QUERY_CODES,
    TIE_RULE,
    aligned,
    class_ap_table,
    data_mismatch,
    default_pair,
    encode_query,
    failures_table,
    first_tie_group,
    first_wrong_rank,
    knows_class,
    metrics_table,
    only_in,
    open_code_store,
    pack_codes,
    precision_of,
    query_ap,
    result_caption,
    results_table,
    search,
    store_image,
    store_problem,
    store_results,
    store_stamp,
    stored_query,
    stored_query_aps,
    table_for_display,
    tie_sentence,
    tie_table,
)
from lens.uploads import IMAGE_TYPES, read_uploads, show_errors, thumbnail

THUMB = 96
MAX_K = 50
MAX_TIE_SHOWN = 120  # images of the first tie group drawn at most (its CSV lists all)


@dataclass(frozen=True)
class Query:
    """The image both models search with."""

    key: str  # cache key of its code and heatmaps
    image: Image.Image | None  # None: a test image its stored id no longer finds (its stored code works)
    class_name: str | None  # None for an upload: its results are not marked correct or not
    caption: str
    index: int | None = None  # a test image: its index in the test split of ``data``; None for an upload
    image_id: str | None = None  # that test image's id
    data: str | None = None  # the data spec (lens.data.data_json) whose test split holds it
    upload: str | None = None  # an upload's file name (the out-of-distribution check runs on it)


@dataclass(frozen=True)
class Results:
    """One model's answer to the query."""

    table: pd.DataFrame  # the top k, as results_table builds them
    indices: list[int]  # their rows in the model's database
    heatmaps: np.ndarray  # (M, H, W) the query's concept heatmaps under this model
    code: np.ndarray  # (K,) the query's ±1 code under this model


# ---------------------------------------------------------------------------------------------- cached


@st.cache_data(show_spinner=False, max_entries=8)
def _packed_db(path: str, mtime: float, _codes: np.ndarray) -> np.ndarray:
    """The bundle's stored database codes, packed once per bundle version."""
    return pack_codes(_codes)


@st.cache_data(show_spinner=False, max_entries=64)
def _encode_query(
    path: str, mtime: float, query_key: str, method: str, _loaded: Any, _image: Image.Image
) -> tuple[np.ndarray, np.ndarray]:
    """The query's ±1 code (K,) and its concept heatmaps (M, H, W) under one model (run here)."""
    return encode_query(_loaded, _image, method)


def query_code_and_heatmaps(info, loaded, query: Query, method: str) -> tuple[np.ndarray, np.ndarray]:
    """The query's ±1 code (K,) and heatmaps (M, H, W) under one bundle: a test image of the bundle's own data
    from the arrays the bundle stores (the heatmaps too for the last layer), else from its model."""
    stored = None
    if query.index is not None and query.data == data_json(loaded.data):
        stored = stored_query(loaded, query.index, query.image_id)
    if stored is not None and method == "last":
        return stored
    if query.image is None:
        raise ValueError(
            "the query's image file is missing, and this model "
            + ("keeps no stored code for it" if stored is None else f"needs the image for the {method} maps")
        )
    code, heatmaps = _encode_query(info.path, info.mtime, query.key, method, loaded.loaded(), query.image)
    return (code if stored is None else stored[0]), heatmaps


# ---------------------------------------------------------------------------------------------- widgets


def _forget_out_of_range(key: str, low: int, high: int) -> None:
    """Drop a remembered widget value the current models cannot take, so the widget starts afresh."""
    value = st.session_state.get(key)
    if value is not None and not low <= value <= high:
        del st.session_state[key]


def pick_models() -> tuple[Any, Any] | None:
    """Two selectboxes (A defaults to the model with L_csd, B to the one without)."""
    infos = available("concepthash")
    pair = default_pair(infos)
    if pair is None:
        no_bundle_message("concepthash")
        return None
    paths = [info.path for info in infos]
    by_path = {info.path: info for info in infos}
    left, right = st.columns(2)
    chosen = []
    for column, key, label, default in (
        (left, "ret_model_a", "Model A", pair[0]),
        (right, "ret_model_b", "Model B", pair[1]),
    ):
        if st.session_state.get(key) not in paths:
            st.session_state.pop(key, None)
        path = column.selectbox(
            label,
            paths,
            index=paths.index(default.path),
            key=key,
            help="This page picks its own two models; the sidebar choice is not used.",
            format_func=lambda p: f"{Path(p).name}  ({by_path[p].summary.split(';')[0]})",
        )
        chosen.append(by_path[path])
    if chosen[0].path == chosen[1].path:
        st.info("Both sides show the same model; pick a different Model B to compare.")
    mismatch = data_mismatch(chosen[0].config, chosen[1].config)
    if mismatch:
        st.warning(mismatch)
    return chosen[0], chosen[1]


def pick_query(info_a) -> Query | None:
    """The query, or None after a message."""
    source = st.radio("Query", ["Test image", "Upload"], key="ret_source", horizontal=True)
    if source == "Upload":
        upload = st.file_uploader("An image to search with", type=IMAGE_TYPES, key="ret_upload")
        images, errors = read_uploads(upload)
        show_errors(errors)
        if not images:
            if not errors:
                st.info("Upload an image to search both databases with it.")
            return None
        name, image = images[0]
        digest = hashlib.sha1(image.tobytes() + repr(image.size).encode()).hexdigest()
        image.thumbnail((256, 256))
        return Query(f"upload:{digest}", image, None, f"query: {name} (uploaded)", upload=name)
    loaded_a = open_bundle(info_a)
    if loaded_a is None:
        return None
    try:
        data = data_json(loaded_a.data)
        images, note = bundle_images(loaded_a, "test", QUERY_IDS)
    except (ValueError, OSError) as exc:
        st.error(f"The test images of '{info_a.name}' could not be opened: {exc}")
        return None
    if note:
        st.caption(note)
    labels, classes = query_labels(data, info_a.path, info_a.mtime, images.ids)
    index = pick_image(
        images,
        labels,
        classes,
        key="ret_query",
        class_key="ret_class",
        what="test image",
        help=f"From the test split of {info_a.name}'s data, as the bundle stored it.",
    )
    if index is None:
        return None
    image, missing = picture(images, index)
    if missing:
        st.warning(missing)
    query_class = test_class(data, images.ids[index])
    return Query(
        f"test:{data}:{images.ids[index]}",
        image,
        query_class,
        f"query: {images.name(index)}" + (f" · {query_class}" if query_class else ""),
        index=index,
        image_id=images.ids[index],
        data=data,
    )


def test_class(data: str, image_id: str) -> str | None:
    """The class of the test image ``image_id`` in today's data, found by its id (None when the data cannot
    be read here or no longer holds it: the results are then not marked right or wrong)."""
    try:
        split = open_data_split(data, "test")
    except (ValueError, OSError):
        return None
    row = test_rows(data, len(split)).get(image_id)
    return None if row is None else split.classes[int(split.labels[row])]


@st.cache_data(show_spinner=False, max_entries=8)
def query_labels(data: str, path: str, mtime: float, _ids) -> tuple[np.ndarray | None, list[str]]:
    """Each stored query's class in today's test split (-1 where it no longer holds the id) and the class
    names, for the picker's class filter; (None, []) when the data cannot be read here."""
    try:
        split = open_data_split(data, "test")
    except (ValueError, OSError):
        return None, []
    rows = test_rows(data, len(split))
    found = [rows.get(str(image_id)) for image_id in _ids]
    labels = np.array([-1 if row is None else int(split.labels[row]) for row in found], dtype=np.int64)
    return labels, list(split.classes)


@st.cache_data(show_spinner=False, max_entries=8)
def test_rows(data: str, count: int) -> dict[str, int]:
    """Each test image's row in today's test split of ``data``, by id."""
    split = open_data_split(data, "test")
    return {split.image_id(i): i for i in range(len(split))}


# ---------------------------------------------------------------------------------------------- drawing


def run_model(info, loaded, query: Query, k: int, method: str) -> Results | None:
    """Search one model's database with the query, or None after st.error."""
    try:
        code, heatmaps = query_code_and_heatmaps(info, loaded, query, method)
        hits = search(_packed_db(info.path, info.mtime, loaded.db_codes), code, k)
    except ValueError as exc:
        st.error(f"'{info.name}' could not search with this query: {exc}")
        return None
    except RuntimeError:  # PyTorch's own failure: its message names tensor shapes, not what went wrong here
        st.error(f"'{info.name}' could not compute the query's code or its {method} heatmaps.")
        return None
    n_db = len(loaded.db_codes)
    db_ids = loaded.arrays.get(DB_IDS, [str(i) for i in range(n_db)])
    table = results_table(
        info.name, hits, db_ids, loaded.db_labels, info.config.get("classes", []), query.class_name
    )
    return Results(table, [int(i) for i in hits["index"]], heatmaps, code)


def database_images(loaded, indices: list[int], side: int) -> list[Image.Image] | None:
    """The database images at ``indices``, found by the ids the bundle stores (grey tiles, and one warning,
    for those no longer found); None when the bundle's data cannot be opened here at all."""
    try:
        images, note = bundle_images(loaded, "train", DB_IDS)
    except (ValueError, OSError):
        return None
    if note:
        st.caption(note)
    found = [picture(images, i, side) for i in indices]
    show_missing([problem for _, problem in found])
    return [image for image, _ in found]


def draw_results(column, side: str, info, loaded, table, hits_index: list[int], query: Query) -> None:
    """Model ``side`` ("a" or "b", part of every widget key: both sides may show the same bundle)."""
    with column:
        st.subheader(info.name)
        precision = precision_of(table)
        note = "" if precision is None else f"; {precision:.0%} of these {len(table)} share the query's class"
        st.caption(f"{info.summary}{note}")
        wanted = query.class_name
        if wanted is not None and not knows_class(info.config.get("classes") or [], wanted):
            st.info(
                f"'{info.name}' has no class named like the query's ('{wanted}'): it was trained on other "
                "classes, so its results are not marked right or wrong."
            )
        images = database_images(loaded, hits_index, THUMB)
        captions = [
            result_caption(int(r), int(d), c)
            for r, d, c in zip(table["rank"], table["distance"], table["correct"], strict=True)
        ]
        if images is None:
            st.warning(f"The database images of '{info.name}' are not available here; showing ids only.")
            st.dataframe(table[["rank", "database id", "distance", "correct"]], hide_index=True)
        else:
            st.image(images, caption=captions, width=THUMB)
            labelled = [(f"{c} {n}", im) for c, n, im in zip(captions, table["class"], images, strict=True)]
            grid = partial(labelled_grid, labelled, 8, 96)
            download_png(grid, f"results-{info.name}", key=f"ret_png_{side}_{info.path}")


def draw_ties(column, side: str, info, loaded, code: np.ndarray, k: int) -> None:
    """How many database images tie at each distance, and on request the whole nearest tie group."""
    packed = _packed_db(info.path, info.mtime, loaded.db_codes)
    ties = tie_table(packed, code, k)
    with column:
        st.markdown(f"**{info.name}** — {loaded.db_codes.shape[1]}-bit codes")
        st.dataframe(ties, hide_index=True, key=f"ret_ties_{side}_{info.path}")
        st.caption(tie_sentence(ties, k))
        download_table(ties, f"ties-{info.name}", key=f"ret_ties_csv_{side}_{info.path}")
        nearest, group = first_tie_group(packed, code)
        if not st.checkbox(
            f"Show the whole first tie group ({len(group)} images at distance {nearest})",
            key=f"ret_tie_group_{side}_{info.path}",
        ):
            return
        n_db = len(loaded.db_codes)
        db_ids = loaded.arrays.get(DB_IDS, [str(i) for i in range(n_db)])
        shown = [int(i) for i in group[:MAX_TIE_SHOWN]]
        images = database_images(loaded, shown, 72)
        if images is None:
            st.warning(f"The database images of '{info.name}' are not available here; the CSV lists them.")
        else:
            captions = [f"#{rank} · {db_ids[i]}" for rank, i in enumerate(shown, 1)]
            image_grid(list(zip(captions, images, strict=True)), columns=6, width=72)
        if len(group) > len(shown):
            st.caption(f"Showing {len(shown)} of {len(group)}; the CSV lists all of them.")
        listed = pd.DataFrame(
            {"rank": np.arange(1, len(group) + 1), "database id": [str(db_ids[i]) for i in group]}
        )
        download_table(listed, f"first-tie-group-{info.name}", key=f"ret_tie_csv_{side}_{info.path}")


def draw_heatmaps(column, side: str, info, image: Image.Image, heatmaps: np.ndarray, opacity: float) -> None:
    cls_baseline = is_cls_baseline(info.config)
    names, _ = concept_names(info.config.get("metrics", {}), cls_baseline)
    with column:
        if cls_baseline:
            st.markdown(f"**{info.name}** — the CLS baseline: one attention map, the CLS token's")
            captions = ["CLS token"]
        else:
            st.markdown(f"**{info.name}** — {len(heatmaps)} concepts")
            captions = [concept_label(m, names) for m in range(len(heatmaps))]
        shown = model_view(image, 2 * 140)  # the centre square the model saw, crisp at width 140
        overlays = [overlay(shown, heat, opacity) for heat in heatmaps]
        st.image(overlays, caption=captions, width=140)
        labelled = [("query", shown), *zip(captions, overlays, strict=True)]
        download_png(
            partial(labelled_grid, labelled, 6, scale=ATTENTION_SCALE),
            f"heatmaps-{info.name}",
            key=f"ret_heat_png_{side}_{info.path}",
        )


@st.cache_resource(show_spinner=False, max_entries=4)
def open_store(path: str, stamp: float):
    """A code store opened once per version (``stamp``: :func:`store_stamp`): shard lists and ids read, the
    codes memory-mapped shard by shard when searched."""
    return open_code_store(path)


def draw_store_search(info, result, k: int) -> None:
    """Model A's query code searched over a `conceptlens encode` store (any size: memory-mapped shards)."""
    st.subheader("Search a code store")
    st.caption(
        "A store written by `conceptlens encode BUNDLE --data folder:DIR --out STORE` with model A holds the "
        "codes of a whole collection (a million images is fine: each shard is memory-mapped and searched in "
        "turn, exactly). Its top results are shown from the store's own file list."
    )
    typed = st.text_input("Store folder", key="ret_store", placeholder="/data/photos-store")
    if not typed or not typed.strip():
        return
    path = Path(typed.strip()).expanduser()
    try:
        store = open_store(str(path), store_stamp(path))
    except (ValueError, OSError, KeyError, TypeError) as exc:
        st.error(f"'{path}' cannot be opened as a code store: {exc}")
        return
    problem = store_problem(store, info.path)
    if problem:
        st.error(problem)
        return
    started = time.perf_counter()
    table = store_results(store, result.code, k)
    seconds = time.perf_counter() - started
    folder = Path(str(store.manifest.get("folder", "")))
    st.caption(
        f"Top {len(table)} of {len(store):,} codes in {seconds:.2f} s"
        + ("" if store.complete else " (the store is not finished: its complete shards only)")
        + f"; images from {folder}."
    )
    found = [store_image(folder, name, THUMB) for name in table["image"]]
    show_missing([problem for _, problem in found])
    captions = [
        f"#{r} · d={d} · {display_name(i)}"
        for r, d, i in zip(table["rank"], table["distance"], table["image"], strict=True)
    ]
    image_grid(list(zip(captions, [image for image, _ in found], strict=True)), columns=8, width=THUMB)
    download_table(table, "store_results", key="ret_store_csv")


@st.cache_data(show_spinner=False, max_entries=8)
def query_aps(path: str, mtime: float, data: str, _loaded, _labels: np.ndarray) -> np.ndarray:
    """Each of the bundle's stored test queries' AP@all (NaN where its class is unknown today)."""
    arrays = _loaded.arrays
    return stored_query_aps(_loaded.db_codes, _loaded.db_labels, arrays[QUERY_CODES], _labels)


def draw_comparison(pair, loaded, results: list[Results], query: Query, k: int) -> None:
    """How the two models differ: on this query (AP, first wrong rank, what only one of them returns), per
    class of the test queries, and the queries where either does worst (each can be opened)."""
    st.subheader("How the two models differ")
    st.caption(TIE_RULE)
    names = tuple(info.name for info in pair)
    columns = (f"A: {names[0]}", f"B: {names[1]}")  # the same model may be on both sides
    a_only, b_only = only_in(results[0].table, results[1].table)
    stats = st.columns(4)
    for n, (info, result) in enumerate(zip(pair, results, strict=True)):
        wrong = first_wrong_rank(result.table)
        precision = precision_of(result.table)
        stats[2 * n].metric(f"{info.name}: P@{k}", "—" if precision is None else f"{precision:.2f}")
        text = "—" if query.class_name is None else ("none in the top k" if wrong is None else str(wrong))
        stats[2 * n + 1].metric("first wrong rank", text)
    st.markdown(
        f"**Only in {names[0]}'s top {k}:** {', '.join(map(display_name, a_only)) or 'none'}  \n"
        f"**Only in {names[1]}'s top {k}:** {', '.join(map(display_name, b_only)) or 'none'}"
    )
    this = [
        query_ap(
            result.code,
            _packed_db(info.path, info.mtime, model.db_codes),  # the packed codes the search ranked
            model.db_labels,
            model_classes(model),
            query.class_name,
        )
        for info, model, result in zip(pair, loaded, results, strict=True)
    ]
    line = " · ".join(
        f"{name}: {'—' if v is None else f'{v:.3f}'}" for name, v in zip(names, this, strict=True)
    )
    st.markdown(f"**AP of this query over the whole database** — {line}")
    if query.data is None or not st.toggle(
        "Compare the models over every test query (per class and the failures; computed once per bundle)",
        key="ret_compare_all",
    ):
        return
    stored = [model.arrays.get(QUERY_IDS) for model in loaded]
    if any(
        ids is None or model.arrays.get(QUERY_CODES) is None
        for ids, model in zip(stored, loaded, strict=True)
    ):
        st.info(
            "Per-query figures need the test codes each bundle stores; re-evaluate with "
            "`conceptlens eval BUNDLE --store`."
        )
        return
    labels, classes = query_labels(query.data, pair[0].path, pair[0].mtime, stored[0])
    if labels is None:
        st.info(
            "The per-class and failure tables need the test images' classes; the data cannot be read here."
        )
        return
    labels_b, _ = query_labels(query.data, pair[1].path, pair[1].mtime, stored[1])
    aps = [
        query_aps(info.path, info.mtime, query.data, model, lab)
        for info, model, lab in zip(pair, loaded, (labels, labels_b), strict=True)
    ]
    aps_a, aps_b = aps[0], aligned(aps[1], [str(i) for i in stored[1]], [str(i) for i in stored[0]])
    st.markdown("**Per class**: each model's mean AP over the test queries, largest differences first")
    table = class_ap_table(aps_a, aps_b, labels, classes, columns)
    st.dataframe(table, hide_index=True, width="stretch", key="ret_class_ap")
    download_table(table, "retrieval_class_ap", key="ret_class_ap_csv")
    st.markdown("**Failures**: the test queries either model answers worst")
    shown = [display_name(i) for i in stored[0]]
    of_class = [classes[c] if 0 <= c < len(classes) else "?" for c in labels]
    failures = failures_table(aps_a, aps_b, shown, of_class, columns)
    st.dataframe(failures.drop(columns="row"), hide_index=True, width="stretch", key="ret_failures")
    if len(failures):
        row = st.selectbox(
            "Open one as the query",
            failures["row"].tolist(),
            format_func=lambda r: f"{shown[r]} ({of_class[r]})",
            key="ret_failure_pick",
        )
        st.button("Search with it", on_click=open_query, args=(int(row),), key="ret_failure_open")


def model_classes(model) -> list[str]:
    """A loaded bundle's class names (config.json's list)."""
    return list(model.config.get("classes") or [])


def open_query(row: int) -> None:
    """Button callback: make stored test query ``row`` the page's query (every class, so it is listed)."""
    st.session_state["ret_source"] = "Test image"
    st.session_state["ret_class"] = ALL_CLASSES
    st.session_state["ret_query"] = row


def main() -> None:
    st.title("Retrieval: with vs without L_csd")
    st.markdown(
        "The same query, searched by two ConceptHash models — by default one trained with the "
        "spatial diversity loss L_csd and one without. Each model encodes the query and ranks its "
        "own database (the train split) by Hamming distance; ✓ marks results of the query's class."
    )
    pair = pick_models()
    if pair is None:
        return
    controls, view = st.columns([2, 1])
    with controls:
        query = pick_query(pair[0])
        loaded = [open_bundle(info) for info in pair]  # arrays only: a model loads when a query needs it
        if query is None or any(model is None for model in loaded):
            return
        n_db = min(len(model.db_codes) for model in loaded)
        top = max(2, min(MAX_K, n_db))
        _forget_out_of_range("ret_k", 1, top)
        k = st.slider("Top k", 1, top, min(8, n_db), key="ret_k")
        method = st.radio(
            "Heatmap",
            ["last", "rollout"],
            key="ret_method",
            horizontal=True,
            help="last: the last layer's concept-token attention; rollout: through every block the model "
            "runs (concept tokens that join only the last blocks start where they join).",
        )
        opacity = st.slider("Heatmap opacity", 0.0, 1.0, 0.5, 0.05, key="ret_opacity")
    with view:
        shown = query.image if query.image is not None else missing_tile(160)
        st.image(thumbnail(shown, 160), caption=query.caption, width=160)

    results = [run_model(info, model, query, k, method) for info, model in zip(pair, loaded, strict=True)]
    if any(result is None for result in results):
        return
    if query.upload is not None:
        pairs = zip(pair, loaded, strict=True)
        verdicts = [(info, upload_verdict(info, model, query.image, query.key)) for info, model in pairs]
        show_upload_check(query.upload, verdicts, "its codes, nearest images and heatmaps are unreliable")
    st.subheader(f"Top {k} results")
    for side, column, info, model, result in zip("ab", st.columns(2), pair, loaded, results, strict=True):
        draw_results(column, side, info, model, result.table, result.indices, query)
    both = pd.concat([result.table for result in results], ignore_index=True)
    with st.expander("Results as a table"):
        st.dataframe(both, hide_index=True, width="stretch")
    download_table(both, "retrieval_results", key="ret_csv")

    draw_comparison(pair, loaded, results, query, k)

    st.subheader("Ties: how many database images share each distance")
    st.caption(
        "A short code has few distances (a 6-bit code has 7), so many database images tie; which of them "
        "make the top k is decided by database index, not by how alike they are."
    )
    for side, column, info, model, result in zip("ab", st.columns(2), pair, loaded, results, strict=True):
        draw_ties(column, side, info, model, result.code, k)

    st.subheader("Stored metrics")
    metrics = metrics_table({info.name: info.config for info in pair})
    st.dataframe(table_for_display(metrics), hide_index=True, width="stretch")
    st.caption(
        "From each bundle's evaluation on its test split (the same numbers `conceptlens eval BUNDLE` "
        "prints): mAP and P@k by Hamming ranking; diversity is the mean pairwise cosine of the "
        "concepts' attention maps (lower = concepts look at different places); hit rate is how "
        "often a concept's most-attended patch lands on its matched bird part, next to a random "
        "patch's rate."
    )
    download_table(metrics, "retrieval_metrics", key="ret_metrics_csv")

    draw_store_search(pair[0], results[0], k)

    st.subheader("Concept heatmaps for the query")
    for side, column, info, result in zip("ab", st.columns(2), pair, results, strict=True):
        image = query.image if query.image is not None else missing_tile(280)
        draw_heatmaps(column, side, info, image, result.heatmaps, opacity)
    show_colour_scale()


main()
