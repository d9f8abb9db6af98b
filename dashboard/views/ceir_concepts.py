"""CEIR concepts and clusters: the latent map, concepts behind images and clusters, metrics, interventions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from lens.bundles import require
from lens.ceir import (
    ARRAYS,
    PRESENT_SHOWN,
    PROTOCOLS,
    RAW_TEMPLATE,
    SEPARATION_GROUPS,
    STAND_IN,
    TRAIN_CLUSTERS,
    TRAIN_CONCEPTS,
    TRAIN_IDS,
    TRAIN_LABELS,
    TRAIN_LATENTS,
    class_names,
    cluster_centres,
    cluster_composition,
    cluster_table,
    contributions_table,
    distances_table,
    edits_from_sliders,
    file_safe,
    filter_table,
    image_contributions_table,
    in_rows,
    intervention,
    intervention_choice,
    intervention_concepts,
    label_quality,
    latent_map,
    map_is_sampled,
    map_rows,
    metrics_table,
    presence_sentence,
    presence_thresholds,
    present_table,
    protocols_table,
    references_note,
    scatter,
    selected_indices,
    selection_concepts,
    separation_table,
    slider_bounds,
    slider_start,
    stored_contributions,
    top5_sentence,
    train_contributions,
    umap_frame,
    unedited,
    unlabelled_sentence,
)
from lens.data import bundle_images, display_name, picture, show_missing
from lens.figures import download_figure, download_table, image_grid, share_bars
from lens.tabs import SHADOW, kept, lazy_tabs

GRID_CAP = 24  # selected images shown at most
TOP_K = 10  # bars in the per-image chart
N_EDITABLE = 5  # sliders the intervention panel starts with: the image's top contributors
MAX_EDITABLE = 10  # concepts a person can pick to edit at once
SLIDERS_PER_ROW = 5
# The page's tabs; a visit draws the open one only (the map alone, at first), so it is ready sooner.
UMAP_ASKED = "ceir_umap_asked_"  # + bundle path: the person asked for the UMAP map of a large bundle
MAP, ONE_IMAGE, CLUSTERS, QUALITY = "Latent map", "One image: concepts and what-if", "Clusters", "Quality"


@st.cache_data(show_spinner=False, max_entries=8)
def cached_map(path: str, mtime: float, _latents: np.ndarray, compute: bool) -> tuple[np.ndarray, str]:
    return latent_map(path, _latents, compute)


def ask_for_umap(path: str) -> None:
    """Button callback: make the UMAP map of this bundle on the next run."""
    st.session_state[UMAP_ASKED + path] = True


@st.cache_data(show_spinner=False, max_entries=8)
def cached_contributions(
    path: str, mtime: float, _model, _vectors: np.ndarray, _clusters: np.ndarray
) -> np.ndarray:
    return train_contributions(_model, _vectors, _clusters)


@st.cache_data(show_spinner=False, max_entries=8)
def cached_presence(path: str, mtime: float, _vectors: np.ndarray) -> np.ndarray:
    """Each concept's presence threshold from the bundle's train vectors (about 2 s for 50,000 x 400)."""
    return presence_thresholds(_vectors)


@st.cache_data(show_spinner=False, max_entries=8)
def cached_centres(path: str, mtime: float) -> np.ndarray | None:
    """The bundle's cluster centres, or None when its weights cannot give them (the model then says why)."""
    try:
        return cluster_centres(path)
    except (ValueError, OSError):
        return None


def train_image(images, index: int):
    """Train image ``index``, found by the id the bundle stores, or None (and the reason under it) when the
    data behind the bundle cannot be read here or no longer holds it."""
    if images is None:
        return None
    image, problem = picture(images, index)
    if problem:
        st.caption(problem)
    return image


def contribution_bars(table):
    shown = table.iloc[::-1]  # plotly draws the first bar at the bottom
    colours = ["#2a9d8f" if v >= 0 else "#e76f51" for v in shown["contribution"]]
    fig = go.Figure(go.Bar(x=shown["contribution"], y=shown["label"], orientation="h", marker_color=colours))
    fig.update_layout(
        height=40 + 28 * len(shown),
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        xaxis_title="contribution to the image's cluster",
    )
    return fig


# Bar colour and legend entry of each role in the intervention's distance chart.
ROLES = {
    "before": ("#8d99ae", "the image's cluster before the edit"),
    "after": ("#2a9d8f", "its cluster after the edit"),
    "before & after": ("#2a9d8f", "its cluster, before and after the edit"),
    "other": ("#d9d9d9", "other clusters"),
}


def distance_bars(table):
    """One bar per cluster, one trace per role, so the legend says which bar is which."""
    fig = go.Figure()
    for role, (colour, name) in ROLES.items():
        rows = table[table["role"] == role]
        if len(rows):
            fig.add_bar(
                x=[f"cluster {c}" for c in rows["cluster"]],
                y=rows["distance"],
                marker_color=colour,
                name=name,
            )
    fig.update_layout(
        height=300,
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        yaxis_title="distance to the cluster centre",
        xaxis={"categoryorder": "array", "categoryarray": [f"cluster {c}" for c in table["cluster"]]},
        showlegend=True,
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "x": 0},
    )
    return fig


@dataclass(frozen=True)
class TrainSet:
    """A CEIR bundle's training images as the page shows them: their cached arrays and, when the data can be
    read here, the images themselves."""

    concepts: list[str]
    vectors: np.ndarray  # (N, C) z-scored concept activations
    latents: np.ndarray  # (N, latent_dim) each image's latent
    clusters: np.ndarray  # (N,) stored cluster of each image
    labels: np.ndarray  # (N,) true class of each image
    classes: list[str]
    ids: list[str]
    contributions: np.ndarray  # (N, C) each concept's contribution to the image's cluster
    centres: np.ndarray | None  # (k, latent_dim) cluster centres, None when only the model can give them
    images: Any  # the images, by the ids the bundle stores (core.data.stored.StoredImages), or None
    source: tuple[str, float]  # the bundle's path and stamp, which key the presence thresholds' cache

    def __len__(self) -> int:
        return len(self.vectors)

    @property
    def presence(self) -> np.ndarray:
        """(C,) each concept's presence threshold, from the train vectors: computed when a tab first asks
        (the map tab, opened first, does not), then cached for the bundle's version."""
        return cached_presence(*self.source, self.vectors)


def show_concept_bank(loaded) -> None:
    removed = filter_table(loaded.config)
    concepts = loaded.concepts
    bank = loaded.config.get("concept_bank") or {}
    n_input = bank.get("n_input", len(concepts) + len(removed))
    with st.expander(f"The concept bank: {len(concepts)} of {n_input} concepts kept", expanded=False):
        st.caption("Kept: " + ", ".join(concepts))
        if bank.get("template", RAW_TEMPLATE) != RAW_TEMPLATE:
            st.caption(f"The text tower read each concept in the caption “{bank['template']}”.")
        if not removed.empty:
            st.dataframe(removed, hide_index=True, key="ceir_removed")
            download_table(removed, "removed_concepts", key="ceir_dl_removed")


def show_latent_map(train: TrainSet, embedding: np.ndarray, method: str, path: str) -> None:
    """The map of the training latents, with the images and shared concepts of a selection in it."""
    st.subheader("The latent space")
    colour = kept(st.radio, "Colour by", ["cluster", "true label"], horizontal=True, key="ceir_colour")
    st.caption(
        f"{method} of the {len(train)} training latents (fixed random state). Drag a box or lasso to select "
        "images; their shared concepts appear below."
    )
    if method == STAND_IN:
        st.button(
            f"Make the UMAP map ({len(train)} points: about a minute on 2 cores, once; the bundle keeps it)",
            on_click=ask_for_umap,
            args=(path,),
            key="ceir_make_umap",
        )
    frame = umap_frame(embedding, train.clusters, train.labels, train.classes, train.ids)
    every = not map_is_sampled(len(frame)) or st.toggle(
        f"Draw all {len(frame):,} points (slower to draw and select in the browser)", key="ceir_every_point"
    )
    rows = map_rows(frame[colour].to_numpy(), every)
    if len(rows) < len(frame):
        st.caption(
            f"Showing {len(rows):,} of {len(frame):,} points: a fixed sample in proportion to the size of "
            f"each {colour}. A box or lasso selects among the points shown."
        )
    figure = scatter(frame.iloc[rows], colour, axes="PC" if method.startswith("PCA") else "UMAP")
    event = st.plotly_chart(
        figure, on_select="rerun", selection_mode=("points", "box", "lasso"), key="ceir_umap"
    )
    download_figure(figure, "ceir_umap", key="ceir_dl_umap")

    chosen = selected_indices(event.selection if event else None, len(train))
    if chosen and tuple(chosen) != st.session_state.get("ceir_selected"):
        # A new selection (or a click on one point) puts its first image in the one-image tab; the picker
        # there stays free until the selection changes again.
        st.session_state["ceir_image"] = chosen[0]
    st.session_state["ceir_selected"] = tuple(chosen)
    if chosen:
        show_selection(train, chosen)
    else:
        st.info(
            "Select points in the map (box or lasso, or click one) to see those images and the concepts they "
            f"share; the first one opens in the '{ONE_IMAGE}' tab."
        )


def open_in_one_image_tab(row: int) -> None:
    """Button callback: show training image ``row`` in the one-image tab and open that tab."""
    st.session_state["ceir_image"] = row
    st.session_state["ceir_tab"] = ONE_IMAGE


def show_selection(train: TrainSet, chosen: list[int]) -> None:
    st.subheader(f"Selected images ({len(chosen)})")
    pick, go_to = st.columns([3, 1], vertical_alignment="bottom")
    row = pick.selectbox(
        "One of them, with its concepts and a what-if",
        chosen,
        format_func=lambda i: f"{display_name(train.ids[i])} (cluster {train.clusters[i]})",
        key="ceir_selected_pick",
    )
    go_to.button(
        f"Open in '{ONE_IMAGE}'", on_click=open_in_one_image_tab, args=(int(row),), key="ceir_selected_open"
    )
    shown = chosen[:GRID_CAP]
    found = [picture(train.images, i, 90) if train.images is not None else (None, None) for i in shown]
    pictures = [
        (f"{display_name(train.ids[i]).rsplit('/', 1)[-1]} · cluster {train.clusters[i]}", image)
        for i, (image, _) in zip(shown, found, strict=True)
    ]
    show_missing([problem for _, problem in found])
    image_grid(
        [(caption, image) for caption, image in pictures if image is not None],
        columns=8,
        width=90,
        download="selected_images",
        key="ceir_dl_grid",
    )
    if len(chosen) > GRID_CAP:
        st.caption(f"Showing {GRID_CAP} of {len(chosen)} selected images.")
    shared = contributions_table(
        selection_concepts(train.concepts, train.vectors, train.contributions, chosen)
    )
    st.markdown("**Concepts they share** (largest mean contribution to their clusters)")
    st.dataframe(shared, hide_index=True, key="ceir_shared")
    download_table(shared, "selection_concepts", key="ceir_dl_shared")


def show_one_image(train: TrainSet) -> int:
    """One training image's top concepts; the image's row."""
    st.subheader("One image's concepts")
    ids, clusters = train.ids, train.clusters
    rows = zip(ids, class_names(train.labels, train.classes), clusters, strict=True)
    names = [f"{display_name(image)} — {label} (cluster {cluster})" for image, label, cluster in rows]
    index = kept(
        st.selectbox, "Image", list(range(len(train))), key="ceir_image", format_func=names.__getitem__
    )
    left, right = st.columns([1, 3])
    with left:
        shown = train_image(train.images, index)
    if shown is not None:
        left.image(shown, caption=display_name(ids[index]), width=160)
    left.metric("Cluster", int(clusters[index]))
    vector, contributions = train.vectors[index], train.contributions[index]
    st.caption(
        presence_sentence(train.concepts, vector, train.presence),
        help="A concept is present when its score is above its presence threshold: Otsu's cut of the "
        "concept's scores on the training images (where they split into two groups), never below their mean.",
    )
    present = present_table(train.concepts, vector, train.presence)
    if len(present) > PRESENT_SHOWN:
        with st.expander(f"All {len(present)} concepts present in this image"):
            st.dataframe(present.round(3), hide_index=True, key="ceir_present")
            download_table(
                present, f"present_concepts_{file_safe(display_name(ids[index]))}", key="ceir_dl_present"
            )
    bars = contribution_bars(image_contributions_table(train.concepts, vector, contributions, k=TOP_K))
    with right:
        st.plotly_chart(bars, key="ceir_bars")
        st.caption(
            'Green bars argue for the image\'s cluster, orange ones against; "NOT …" means the concept '
            "is weaker than on an average training image."
        )
    download_table(
        image_contributions_table(train.concepts, vector, contributions),
        f"contributions_{file_safe(display_name(ids[index]))}",
        key="ceir_dl_contrib",
    )
    download_figure(bars, f"top_concepts_{file_safe(display_name(ids[index]))}", key="ceir_dl_bars_html")
    return index


def pick_editable(train: TrainSet, index: int) -> list[int]:
    """The concepts of the bank a person chose to edit in image ``index`` (its top contributors at first);
    any concept can be picked, the strongest contributors are offered first."""
    contributions = train.contributions[index]
    options = intervention_concepts(contributions, None)
    key = f"ceir_iv_pick_{index}"
    if key not in st.session_state and SHADOW + key not in st.session_state:
        st.session_state[key] = options[:N_EDITABLE]
    return kept(
        st.multiselect,
        f"Concepts to edit (any of the {len(options)}; type to search)",
        options,
        key=key,
        format_func=lambda i: intervention_choice(train.concepts, contributions, i),
        max_selections=MAX_EDITABLE,
        valid=lambda picked: isinstance(picked, list) and all(i in range(len(options)) for i in picked),
        help="Listed by how much each concept contributes to the image's cluster, largest first (the number "
        f"in parentheses); the panel starts with the top {N_EDITABLE}.",
    )


def show_intervention(train: TrainSet, loaded, index: int) -> None:
    """Sliders for the concepts picked (the image's top contributors at first) and where the edited image
    lands: untouched, from the bundle's arrays; edited, by the model (loaded then)."""
    st.subheader("What if? Edit the image's top concepts")
    vector = train.vectors[index]
    editable = pick_editable(train, index)
    prefix = f"ceir_iv_{index}_"

    def reset_sliders() -> None:
        # Setting (not popping) the state makes Streamlit send ``set_value`` so the browser sliders move back
        # too; a popped key left them showing the edits, and the next touch sent every old edit back.
        for i in editable:
            st.session_state[f"{prefix}{i}"] = slider_start(float(vector[i]))

    values = {}
    if not editable:
        st.info("Pick one or more concepts above to edit them.")
    for row in in_rows(editable, SLIDERS_PER_ROW):
        for column, i in zip(st.columns(SLIDERS_PER_ROW), row, strict=False):
            low, high = slider_bounds(float(vector[i]))
            values[i] = kept(
                column.slider,
                train.concepts[i],
                low,
                high,
                value=slider_start(float(vector[i])),
                step=0.05,
                key=f"{prefix}{i}",
                valid=lambda v, low=low, high=high: isinstance(v, int | float) and low <= v <= high,
                help="z-score: 0 is the training average",
            )
    st.button("Reset the sliders", on_click=reset_sliders, key="ceir_iv_reset")
    edits = edits_from_sliders(editable, vector, values)
    if edits or train.centres is None:
        before, after = intervention(loaded.model, vector, edits)
    else:
        before, after = unedited(vector, train.latents[index], train.centres)
    c1, c2 = st.columns(2)
    c1.metric("Cluster before", before.cluster)
    c2.metric(
        "Cluster after the edit",
        after.cluster,
        delta="moved" if after.cluster != before.cluster else "unchanged",
        delta_color="off",
        delta_arrow="off",
    )
    distances = distances_table(after.distances, before.cluster, after.cluster)
    distance_chart = distance_bars(distances)
    st.plotly_chart(distance_chart, key="ceir_distances")
    name = file_safe(display_name(train.ids[index]))
    download_table(distances, f"intervention_distances_{name}", key="ceir_dl_distances")
    download_figure(distance_chart, f"intervention_distances_{name}", key="ceir_dl_distances_html")


def show_clusters(train: TrainSet) -> None:
    st.subheader("Clusters and their concepts")
    per_cluster = cluster_table(train.concepts, train.vectors, train.contributions, train.clusters)
    composition = cluster_composition(train.clusters, train.labels, train.classes)
    concepts_side, species_side = st.columns([3, 2])
    with concepts_side:
        st.dataframe(per_cluster, hide_index=True, key="ceir_clusters")
        download_table(per_cluster, "cluster_concepts", key="ceir_dl_clusters")
    with species_side:
        st.dataframe(
            composition,
            hide_index=True,
            key="ceir_composition",
            # purity before the names: 200 long class names must not push it out of view
            column_order=["cluster", "size", "purity", "majority species", "species"],
            column_config=share_bars("purity", "purity")
            | {
                "majority species": st.column_config.TextColumn("majority species", width="medium"),
                "species": st.column_config.TextColumn("species", width="large"),
            },
        )
        st.caption("Species in each training cluster; purity is the share of its most common species.")
        download_table(composition, "cluster_composition", key="ceir_dl_composition")


def show_metrics(stored: dict) -> None:
    """The clustering metrics and the concept and label quality the bundle stored."""
    st.subheader("Clustering quality on the test split")
    metrics = metrics_table(stored)
    if metrics.empty:
        st.info("This bundle stores no clustering metrics.")
    else:
        st.dataframe(metrics.round(4), hide_index=True, key="ceir_metrics")
        download_table(metrics, "clustering_metrics", key="ceir_dl_metrics")
    protocols = protocols_table(stored)
    if not protocols.empty:
        restarts = (stored.get("protocols") or {}).get("kmeans_restarts")
        best_of = f", each the best of {restarts} k-means++ starts" if isinstance(restarts, int) else ""
        st.markdown(f"**Both protocols, mean ± std over k-means seeds{best_of}**")
        st.caption(" · ".join(f"{name}: {meaning}" for name, meaning in PROTOCOLS))
        st.dataframe(protocols, hide_index=True, key="ceir_protocols")
        download_table(protocols, "clustering_protocols", key="ceir_dl_protocols")
    precision = stored.get("concept_precision_at_5")
    columns = st.columns(4)
    if isinstance(precision, int | float):
        columns[0].metric(
            "Concept precision@5",
            f"{precision:.3f}",
            help=(
                "Share of each test image's top-5 present concepts that are true attributes of its species "
                "(its head, wing and body colours). A concept is present when it scores above its presence "
                "threshold: Otsu's cut of its scores on the training images, never below their mean. An "
                "image with fewer than five present concepts is scored on those it has, so the best is 1.0; "
                "with five present, three true ones give 0.6." + references_note(stored)
            ),
        )
    quality = label_quality(stored)
    if quality is not None and quality.true_share is not None:
        columns[1].metric(
            "Printed labels that are true",
            f"{quality.true_share:.3f}",
            help="Of the labels `conceptlens label` prints for the test images, the share that are true "
            "species attributes.",
        )
    if quality is not None and quality.distractor_share is not None:
        columns[2].metric(
            "Printed labels that are distractors",
            f"{quality.distractor_share:.3f}",
            help="Of those labels, the share naming something the world never draws (e.g. 'webbed feet').",
        )
    if quality is not None and quality.unlabelled_share is not None:
        columns[3].metric(
            "Test images without a label",
            f"{quality.unlabelled_share:.0%}",
            help="The share of test images for which `conceptlens label` prints no label.",
        )
    unlabelled = unlabelled_sentence(stored)
    if unlabelled and quality is not None and quality.true_share is None:
        st.warning(unlabelled)  # no label printed at all: say it plainly, not as a precision of 0
    elif unlabelled:
        st.caption(unlabelled)
    top5 = top5_sentence(stored)
    if top5:
        st.caption(top5)
    separation = separation_table(stored)
    if not separation.empty:
        st.markdown("**Does each concept read its part?**")
        st.caption(
            "Each species-colour concept's score (z-scored) on the test birds, by group: "
            + " · ".join(f"{name}: {meaning}" for name, meaning in SEPARATION_GROUPS)
            + ". A concept that reads its part scores high only when present (ROC AUC 1); one that reads the "
            "colour anywhere also scores high elsewhere."
        )
        st.dataframe(separation.round(3), hide_index=True, key="ceir_separation")
        download_table(separation, "concept_separation", key="ceir_dl_separation")


def main() -> None:
    st.title("CEIR concepts and clusters")
    info, loaded = require("ceir")
    if loaded is None:
        return
    st.caption(f"Model: **{info.name}** — {info.summary}.")

    missing = [name for name in ARRAYS.required if name not in loaded.arrays]
    if missing:
        st.error(
            f"The bundle '{info.name}' lacks the cached arrays {', '.join(missing)}; train it again with "
            "`conceptlens train ceir`."
        )
        return

    vectors = loaded.arrays[TRAIN_CONCEPTS].astype(np.float32)
    clusters = loaded.arrays[TRAIN_CLUSTERS].astype(np.int64)
    latents = loaded.arrays[TRAIN_LATENTS].astype(np.float32)
    asked = bool(st.session_state.get(UMAP_ASKED + info.path))
    with st.spinner(f"Computing the 2-D map of {len(vectors)} latents (first time only) ..."):
        try:
            embedding, method = cached_map(info.path, info.mtime, latents, asked)
        except (ValueError, OSError) as exc:
            st.error(f"The 2-D map of '{info.name}' could not be computed: {exc}")
            return
    mtime = info.mtime  # after the map was stored in the bundle
    contributions = stored_contributions(loaded.arrays)
    if contributions is None:  # a bundle saved before bundles stored them
        contributions = cached_contributions(info.path, mtime, loaded.model, vectors, clusters)
    try:
        images, note = bundle_images(loaded, "train", TRAIN_IDS)
        if note:
            st.caption(note)
    except (OSError, ValueError):
        images = None
        st.warning("The training images behind this bundle cannot be read here, so no pictures are shown.")
    train = TrainSet(
        concepts=loaded.concepts,
        vectors=vectors,
        latents=latents,
        clusters=clusters,
        labels=loaded.arrays[TRAIN_LABELS].astype(np.int64),
        classes=list(loaded.config.get("classes") or []),
        ids=[str(i) for i in loaded.arrays.get(TRAIN_IDS, np.arange(len(vectors)))],
        contributions=contributions,
        centres=cached_centres(info.path, mtime),
        images=images,
        source=(info.path, mtime),
    )

    def quality() -> None:
        show_metrics(loaded.metrics)
        show_concept_bank(loaded)

    lazy_tabs(
        {
            MAP: lambda: show_latent_map(train, embedding, method, info.path),
            ONE_IMAGE: lambda: show_intervention(train, loaded, show_one_image(train)),
            CLUSTERS: lambda: show_clusters(train),
            QUALITY: quality,
        },
        key="ceir_tab",
    )


main()
