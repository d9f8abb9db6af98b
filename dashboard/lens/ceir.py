"""Plain helpers for the CEIR concepts and clusters page (no Streamlit): tables, selections, interventions.

The page ``ceir_concepts.py`` only reads widgets and draws; what deserves a test — which train images a
lasso selected, what a selection's shared concepts are, which slider edits make an intervention — lives
here. The open-world labels page has its own helpers in :mod:`lens.labels`.

Importing this module imports no PyTorch: the page draws from the bundle's arrays (and its cluster centres,
read from the weights file), and the two helpers that run the model (:func:`train_contributions` for a
bundle saved before bundles stored the contributions, :func:`intervention` once a slider moves) import the
model's code when called.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from core.ceir.arrays import ARRAYS as ARRAYS  # the bundle's array keys, for the page
from core.ceir.arrays import TRAIN_CLUSTERS as TRAIN_CLUSTERS
from core.ceir.arrays import TRAIN_CONCEPTS as TRAIN_CONCEPTS
from core.ceir.arrays import TRAIN_CONTRIBUTIONS as TRAIN_CONTRIBUTIONS
from core.ceir.arrays import TRAIN_IDS as TRAIN_IDS
from core.ceir.arrays import TRAIN_LABELS as TRAIN_LABELS
from core.ceir.arrays import TRAIN_LATENTS as TRAIN_LATENTS
from core.ceir.concept_bank import RAW_TEMPLATE as RAW_TEMPLATE  # a bank read without a caption
from core.ceir.presence import presence_thresholds as presence_thresholds
from core.ceir.presence import present_concepts
from core.ceir.projection2d import MAX_WAITED_POINTS, ensure_umap, known_map, pca_2d, projection_method
from core.ceir.reading import (
    ConceptContribution,
    Intervention,
    cluster_top_concepts,
    landing,
    read_cluster_centres,
    top_contributions,
)
from core.sampling import proportional_sample
from lens.figures import distinct_colours

# Order and names of the rows of the clustering metrics table (keys as stored in bundle metrics).
METHODS: tuple[tuple[str, str], ...] = (
    ("ceir", "CEIR"),
    ("clip_embedding", "k-means on CLIP embeddings"),
    ("concepts", "k-means on concept vectors"),
)
SCORES: tuple[tuple[str, str], ...] = (("acc", "ACC"), ("nmi", "NMI"), ("ari", "ARI"))


def train_contributions(model: Any, concept_vectors: np.ndarray, clusters: np.ndarray, batch_size: int = 256):
    """(N, C) contributions of every train image's concepts to its stored cluster, computed by the model (for
    a bundle saved before bundles stored them as ``train_contributions``)."""
    from core.ceir.explain import contributions_in_batches  # the model's code: PyTorch

    return contributions_in_batches(model, concept_vectors, clusters, batch_size)


def stored_contributions(arrays: Mapping[str, np.ndarray]) -> np.ndarray | None:
    """(N, C) float32 contributions the bundle stores, or None for a bundle saved before it stored them."""
    stored = arrays.get(TRAIN_CONTRIBUTIONS)
    return None if stored is None else np.asarray(stored, dtype=np.float32)


def cluster_centres(bundle_path: str) -> np.ndarray:
    """The bundle's k-means centres (k, latent_dim), read from its weights without loading the model;
    ValueError (a ``BundleError`` among them) or OSError when it cannot give them."""
    return read_cluster_centres(bundle_path)


def latent_map(bundle_path: str, latents: np.ndarray, compute: bool = False) -> tuple[np.ndarray, str]:
    """The (N, 2) map of a CEIR bundle's training ``latents`` and how it was made, in the page's words.

    A map already made (stored in the bundle, or cached) comes at once; otherwise UMAP computes it (and stores
    it) when there are at most :data:`MAX_WAITED_POINTS` latents or ``compute`` is set; above that the page
    gets the latents' first two principal components at once, and UMAP only on request (20,000 latents take
    about a minute on 2 cores). ValueError (a ``BundleError`` among them) or OSError when the bundle cannot
    give one."""
    made = known_map(bundle_path)
    if made is not None:
        return made, latent_map_method(len(made))
    if compute or len(latents) <= MAX_WAITED_POINTS:
        return ensure_umap(bundle_path), latent_map_method(len(latents))
    return pca_2d(latents), STAND_IN


STAND_IN = "PCA (a stand-in until the UMAP map is made)"


def latent_map_method(n_points: int) -> str:
    """How UMAP maps ``n_points`` latents, in the page's words."""
    return "UMAP" if projection_method(n_points) == "umap" else "PCA (too few points for UMAP)"


def metrics_table(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """CEIR next to its baselines: one row per method with ACC, NMI and ARI (absent methods left out)."""
    baselines = metrics.get("baselines") or {}
    sources = {"ceir": metrics, **{name: baselines.get(name) for name, _ in METHODS[1:]}}
    rows = []
    for key, title in METHODS:
        values = sources.get(key)
        if not isinstance(values, Mapping) or not any(
            isinstance(values.get(s), int | float) for s, _ in SCORES
        ):
            continue
        row: dict[str, Any] = {"method": title}
        for score, column in SCORES:
            value = values.get(score)
            row[column] = float(value) if isinstance(value, int | float) else np.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=["method", *(c for _, c in SCORES)])


FILTER_NAMES = {
    "length": "length",
    "class_name": "too close to a class name",
    "class_relevance": "class relevance",
    "near_duplicate": "near-duplicate",
    "never_activated": "never activated",
    "fidelity": "fidelity",
}


def filter_table(config: Mapping[str, Any]) -> pd.DataFrame:
    """The bank concepts training removed: one row per concept with the filter and its reason (the
    ``concept_bank.removed`` section of a bundle's config; older bundles store one flat mapping)."""
    removed = (config.get("concept_bank") or {}).get("removed") or {}
    rows = []
    for key, value in removed.items():
        if isinstance(value, Mapping):  # per filter: concept -> reason
            rows += [
                {"concept": c, "filter": FILTER_NAMES.get(key, key), "reason": r} for c, r in value.items()
            ]
        else:
            rows.append({"concept": key, "filter": "", "reason": str(value)})
    return pd.DataFrame(rows, columns=["concept", "filter", "reason"])


PROTOCOLS: tuple[tuple[str, str], ...] = (
    ("inductive", "inductive (k-means fit on train, test assigned)"),
    ("transductive", "transductive, the paper's (VAE on train + test, k-means fit on test)"),
)


def protocols_table(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """One row per method, ACC and NMI as mean ± std over k-means seeds under each protocol
    (empty for a bundle trained before the protocols were measured)."""
    protocols = metrics.get("protocols")
    rows = []
    if isinstance(protocols, Mapping):
        for key, title in METHODS:
            row: dict[str, Any] = {"method": title}
            for protocol, _ in PROTOCOLS:
                scores = (protocols.get(protocol) or {}).get(key) or {}
                for score in ("acc", "nmi"):
                    if isinstance(scores.get(score), int | float):
                        spread = scores.get(f"{score}_std", 0.0)
                        row[f"{protocol} {score.upper()}"] = f"{scores[score]:.3f} ± {spread:.3f}"
            if len(row) > 1:
                rows.append(row)
    columns = ["method", *(f"{p} {s}" for p, _ in PROTOCOLS for s in ("ACC", "NMI"))]
    return pd.DataFrame(rows, columns=columns)


SEPARATION_GROUPS = (
    ("present", "its part has the colour"),
    ("elsewhere", "another part has it"),
    ("absent", "no part has it"),
)


def separation_table(metrics: Mapping[str, Any]) -> pd.DataFrame:
    """One row per species-colour concept: its ROC AUC and mean z-score on each group of test birds
    (``concept_separation`` of a ToyBirds bundle; empty for other bundles and older ones)."""
    per_concept = (metrics.get("concept_separation") or {}).get("per_concept") or {}
    rows = [
        {"concept": concept, "ROC AUC": values.get("auc")}
        | {f"mean z, {name}": values.get(name) for name, _ in SEPARATION_GROUPS}
        for concept, values in per_concept.items()
        if isinstance(values, Mapping)
    ]
    columns = ["concept", "ROC AUC", *(f"mean z, {name}" for name, _ in SEPARATION_GROUPS)]
    return pd.DataFrame(rows, columns=columns)


TOP5_KINDS = (
    ("true", "true species colours"),
    ("wrong_colour", "another colour of a species part"),
    ("distractor", "distractors the world never draws"),
    ("nuisance", "crest, wing pattern or tail"),
)


def top5_sentence(metrics: Mapping[str, Any]) -> str | None:
    """What fills the test images' top five present concepts (``concept_top5`` of a ToyBirds bundle), in
    one sentence, with the precision@5 of the old zero point (the training mean) where the bundle stores it;
    None for other bundles and older ones."""
    top5 = metrics.get("concept_top5")
    if not isinstance(top5, Mapping) or not all(isinstance(top5.get(k), int | float) for k, _ in TOP5_KINDS):
        return None
    shares = " · ".join(f"{top5[key]:.0%} {meaning}" for key, meaning in TOP5_KINDS)
    present = top5.get("present_per_image")
    if not isinstance(present, int | float):  # stored before presence thresholds: above the training mean
        sentence = f"What fills each test image's top five positive concepts: {shares}."
        positives = top5.get("positives_per_image")
        if isinstance(positives, int | float):
            sentence += f" On average {positives:.1f} concepts per image score above their training mean."
        return sentence
    sentence = (
        f"What fills each test image's top five present concepts: {shares}. On average {present:.1f} "
        "concepts per image are present (above their presence threshold)"
    )
    above_mean = metrics.get("concept_precision_at_5_above_mean")
    positives = top5.get("positives_per_image")
    if isinstance(above_mean, int | float) and isinstance(positives, int | float):
        sentence += (
            f"; {positives:.1f} score above their training mean, and counting those the precision@5 "
            f"would be {above_mean:.3f}"
        )
    return sentence + "."


def _share(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class LabelQuality:
    """What the labels ``conceptlens label`` prints for a ToyBirds bundle's test images are worth (the
    bundle's ``labels`` metrics): shares of the printed labels, None when no label was printed (a share of
    nothing is no precision), and the share of images left without one (None for bundles evaluated before it
    was measured)."""

    true_share: float | None
    distractor_share: float | None
    unlabelled_share: float | None


def label_quality(metrics: Mapping[str, Any]) -> LabelQuality | None:
    """The stored label quality, or None for a bundle that stores none."""
    stored = metrics.get("labels")
    if not isinstance(stored, Mapping):
        return None
    unlabelled = _share(stored.get("unlabelled_share"))
    if unlabelled is not None and unlabelled >= 1:
        return LabelQuality(None, None, unlabelled)
    quality = LabelQuality(
        _share(stored.get("precision")), _share(stored.get("distractor_share")), unlabelled
    )
    return None if quality == LabelQuality(None, None, None) else quality


def unlabelled_sentence(metrics: Mapping[str, Any]) -> str | None:
    """The share of test images left without a label, in a sentence; None when every image got one or the
    bundle does not say."""
    quality = label_quality(metrics)
    if quality is None or not quality.unlabelled_share:
        return None
    n = metrics.get("n_test")
    images = f"the {n} test images" if isinstance(n, int) and n > 0 else "the test images"
    if quality.unlabelled_share >= 1:
        return (
            f"100% of {images} are unlabelled: `conceptlens label` printed no label for any of them, so "
            "there are no printed labels to count as true or as distractors."
        )
    return (
        f"{quality.unlabelled_share:.0%} of {images} are unlabelled (no concept carried enough of the "
        "evidence for its cluster); the shares of true and distractor labels count the others' labels."
    )


def references_note(metrics: Mapping[str, Any]) -> str:
    """What the precision@5 of its references (``concept_precision_references``) is, as a sentence starting
    with a space; empty when the bundle stores none."""
    references = metrics.get("concept_precision_references")
    if not isinstance(references, Mapping):
        return ""
    oracle, family = references.get("oracle"), references.get("family_only")
    if not isinstance(oracle, int | float) or not isinstance(family, int | float):
        return ""
    return (
        f" On the same images an oracle (the species' own colours) scores {oracle:.3f}, and concepts that "
        f"read only the body colour, wherever it is, {family:.3f}."
    )


PRESENT_SHOWN = 8  # present concepts the one-image sentence names; a large bank's others wait in a table


def presence_sentence(
    concepts: list[str], vector: np.ndarray, thresholds: np.ndarray, shown: int = PRESENT_SHOWN
) -> str:
    """Which concepts one image's vector has above their presence thresholds, highest score first (the order
    the concept precision@5 reads them in), in a sentence: all of them, or the first ``shown`` and how many
    there are (a 400-concept bank can show 150 in one image)."""
    present = present_concepts(vector, thresholds, concepts)
    if not present:
        return "No concept is above its presence threshold in this image."
    start = "Present in this image (above each concept's presence threshold): "
    if len(present) <= shown:
        return start + ", ".join(present) + "."
    return start + f"{len(present)} concepts, the {shown} highest: " + ", ".join(present[:shown]) + "."


def present_table(concepts: list[str], vector: np.ndarray, thresholds: np.ndarray) -> pd.DataFrame:
    """Every concept present in one image (the sentence's order): its score, its presence threshold and how
    far above the threshold it is, all z-scores."""
    scores = np.asarray(vector, dtype=np.float64)
    cuts = np.asarray(thresholds, dtype=np.float64)
    index = {name: j for j, name in enumerate(concepts)}
    rows = [
        {
            "concept": name,
            "score": scores[index[name]],
            "threshold": cuts[index[name]],
            "above it by": scores[index[name]] - cuts[index[name]],
        }
        for name in present_concepts(vector, thresholds, concepts)
    ]
    return pd.DataFrame(rows, columns=["concept", "score", "threshold", "above it by"])


def class_names(labels: np.ndarray, classes: Sequence[str]) -> list[str]:
    """Each label's class name (the number itself when the bundle names no such class)."""
    return [classes[int(y)] if 0 <= int(y) < len(classes) else str(int(y)) for y in labels]


def umap_frame(
    embedding: np.ndarray,
    clusters: np.ndarray,
    labels: np.ndarray,
    classes: Sequence[str],
    ids: Sequence[str],
) -> pd.DataFrame:
    """One row per train image for the scatter plot; ``index`` is the image's row in the train arrays."""
    names = class_names(labels, classes)
    return pd.DataFrame(
        {
            "index": np.arange(len(embedding)),
            "x": embedding[:, 0],
            "y": embedding[:, 1],
            "cluster": [f"cluster {int(c)}" for c in clusters],
            "true label": names,
            "id": list(ids),
        }
    )


def selected_indices(selection: Mapping[str, Any] | None, n_points: int) -> list[int]:
    """Train-image rows chosen in the scatter plot, sorted and unique.

    Points carry their row in ``customdata[0]`` (one plotly trace per colour renumbers ``point_index``);
    a point without customdata falls back to ``point_index``. Out-of-range entries are ignored.
    """
    if not selection:
        return []
    chosen: set[int] = set()
    for point in selection.get("points") or []:
        custom = point.get("customdata")
        raw = custom[0] if isinstance(custom, list | tuple) and custom else custom
        if raw is None:
            raw = point.get("point_index")
        try:
            index = int(raw)
        except (TypeError, ValueError):
            continue
        if 0 <= index < n_points:
            chosen.add(index)
    return sorted(chosen)


def selection_concepts(
    concepts: list[str],
    activations: np.ndarray,
    contributions: np.ndarray,
    indices: Sequence[int],
    k: int = 8,
) -> list[ConceptContribution]:
    """Concepts with the largest positive mean contribution over the selection ("NOT" by mean activation)."""
    if len(indices) == 0:
        return []
    rows = np.asarray(indices, dtype=int)
    return top_contributions(
        concepts, activations[rows].mean(axis=0), contributions[rows].mean(axis=0), k, positive_only=True
    )


def contributions_table(items: Sequence[ConceptContribution]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "label": c.label,
                "concept": c.concept,
                "activation": c.activation,
                "contribution": c.contribution,
            }
            for c in items
        ],
        columns=["label", "concept", "activation", "contribution"],
    )


def image_contributions_table(
    concepts: list[str], activations: np.ndarray, contributions: np.ndarray, k: int | None = None
) -> pd.DataFrame:
    """One image's ``k`` concepts with the largest |contribution|, largest first; every concept (the
    downloadable CSV) when ``k`` is None."""
    return contributions_table(
        top_contributions(concepts, activations, contributions, k=len(concepts) if k is None else k)
    )


def file_safe(text: str) -> str:
    """An image id usable in a download's file name (ids may hold slashes)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "image"


def cluster_table(
    concepts: list[str], activations: np.ndarray, contributions: np.ndarray, clusters: np.ndarray, k: int = 5
) -> pd.DataFrame:
    """Per cluster: its size and the labels of its top concepts by mean positive contribution."""
    tops = cluster_top_concepts(concepts, activations, contributions, clusters, k)
    rows = [
        {
            "cluster": cluster,
            "size": int((clusters == cluster).sum()),
            "top concepts": ", ".join(c.label for c in items) or "—",
        }
        for cluster, items in sorted(tops.items())
    ]
    return pd.DataFrame(rows, columns=["cluster", "size", "top concepts"])


def cluster_composition(clusters: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> pd.DataFrame:
    """Per cluster: its size, its most common species, the purity (that species' share of the cluster) and
    every species in it with its count, most common first (ties by name)."""
    clusters, labels = np.asarray(clusters), np.asarray(labels)
    if len(clusters) != len(labels):
        raise ValueError(f"There are {len(clusters)} cluster assignments but {len(labels)} labels.")
    rows = []
    for cluster in np.unique(clusters):
        species, counts = np.unique(labels[clusters == cluster], return_counts=True)
        named = sorted(
            (
                (classes[int(y)] if 0 <= int(y) < len(classes) else str(int(y)), int(n))
                for y, n in zip(species, counts, strict=True)
            ),
            key=lambda item: (-item[1], item[0]),
        )
        size = int(counts.sum())
        rows.append(
            {
                "cluster": int(cluster),
                "size": size,
                "majority species": named[0][0],
                "purity": named[0][1] / size,
                "species": ", ".join(f"{name} {n}" for name, n in named),
            }
        )
    return pd.DataFrame(rows, columns=["cluster", "size", "majority species", "purity", "species"])


def intervention_concepts(contributions: np.ndarray, k: int | None = 5) -> list[int]:
    """Indices of one image's ``k`` concepts with the largest |contribution| (the ones worth editing first);
    every concept in that order when ``k`` is None (what the intervention's picker offers)."""
    order = np.argsort(-np.abs(contributions), kind="stable")
    return [int(i) for i in (order if k is None else order[:k])]


def intervention_choice(concepts: Sequence[str], contributions: np.ndarray, i: int) -> str:
    """How the intervention's picker names concept ``i``: the concept and its contribution to the image's
    cluster."""
    return f"{concepts[i]} ({float(contributions[i]):+.3f})"


def in_rows(items: Sequence[Any], per_row: int) -> list[list[Any]]:
    """``items`` cut into rows of at most ``per_row`` (sliders that wrap instead of shrinking)."""
    return [list(items[start : start + per_row]) for start in range(0, len(items), per_row)]


def slider_bounds(activation: float, limit: float = 3.0) -> tuple[float, float]:
    """A z-score slider range: ``[-limit, limit]``, widened to whole numbers to include the current value."""
    return float(min(-limit, np.floor(activation))), float(max(limit, np.ceil(activation)))


def slider_start(activation: float) -> float:
    """A slider's starting value: the activation rounded to the slider's 0.05 step."""
    return round(round(float(activation) / 0.05) * 0.05, 2)


def edits_from_sliders(
    concepts: Sequence[int], activations: np.ndarray, values: Mapping[int, float]
) -> dict[int, float]:
    """Only sliders moved away from their start become edits, so an untouched panel changes nothing."""
    return {
        int(i): float(values[i])
        for i in concepts
        if i in values and abs(float(values[i]) - slider_start(activations[i])) > 1e-9
    }


def intervention(
    model: Any, activations: np.ndarray, edits: Mapping[int, float]
) -> tuple[Intervention, Intervention]:
    """Where one image's z-scored concept vector lands before and after ``edits`` (concept index -> value):
    each an :class:`Intervention` with its cluster and its distance to every cluster centre."""
    import torch  # the model's code: loaded when a person edits a concept

    from core.ceir.explain import intervene

    vector = torch.from_numpy(activations)
    return intervene(model, vector, {}), intervene(model, vector, dict(edits))


def unedited(
    activations: np.ndarray, latent: np.ndarray, centres: np.ndarray
) -> tuple[Intervention, Intervention]:
    """:func:`intervention` with no edits, from what the bundle stores (the image's latent and the cluster
    centres) instead of the model: where the image lands, before and after alike."""
    where = landing(activations, latent, centres)
    return where, where


def distances_table(distances: np.ndarray, original: int, edited: int) -> pd.DataFrame:
    """Distance of the (edited) latent to every cluster centre, marking the old and the new cluster."""
    roles = []
    for cluster in range(len(distances)):
        role = []
        if cluster == original:
            role.append("before")
        if cluster == edited:
            role.append("after")
        roles.append(" & ".join(role) or "other")
    return pd.DataFrame(
        {"cluster": np.arange(len(distances)), "distance": distances.astype(float), "role": roles}
    )


COLOURS = qualitative.Dark24 + qualitative.Light24
WEBGL_POINTS = 5000  # a map with more points is drawn with WebGL (SVG slows the browser down)
DRAWN_POINTS = 4000  # a larger map draws a sample this big unless asked for every point
MAX_LEGEND = 40  # more colours than this: one trace coloured point by point, no legend (hover names each)


def map_is_sampled(n_points: int) -> bool:
    """Whether a map of ``n_points`` draws a sample unless asked for every point."""
    return n_points > DRAWN_POINTS


def map_rows(colours: np.ndarray, every: bool, limit: int | None = None) -> np.ndarray:
    """The rows the map draws, in order: all of them when ``every`` or when there are no more than ``limit``
    (default :data:`DRAWN_POINTS`), else a fixed sample of ``limit`` in proportion to each colour's share
    (``core.sampling``), so the map shows every cluster or class at its size."""
    n, limit = len(colours), DRAWN_POINTS if limit is None else limit
    if every or n <= limit:
        return np.arange(n)
    return np.sort(proportional_sample(np.arange(n), np.asarray(colours), limit, seed=0))


def scatter(frame, colour: str, axes: str = "UMAP"):
    """The latent map, one trace per value of ``colour`` (so the legend toggles it), or, above
    :data:`MAX_LEGEND` values, one trace coloured point by point without a legend (Chromium took 3.4 s to draw
    200 traces of 4,000 points and 1.3 s for one); each point carries its row, id, cluster and true label as
    customdata (its row first: ``selected_indices`` reads it). ``axes`` names the map's axes ("UMAP 1", or
    "PC 1" for the principal components).

    Built from graph objects, not plotly express: the same figure about four times faster (profiled), and
    the page draws it on every visit."""
    order = sorted(frame[colour].unique(), key=lambda v: (len(v), v))  # "cluster 2" before "cluster 10"
    custom = frame[["index", "id", "cluster", "true label"]].to_numpy(dtype=object)
    xs, ys = frame["x"].to_numpy(), frame["y"].to_numpy()
    colours = distinct_colours(len(order), COLOURS)  # 200 classes: 200 colours, none repeated
    many = len(frame) > WEBGL_POINTS  # drawn with WebGL, smaller markers
    trace = go.Scattergl if many else go.Scatter
    hover = "id=%{customdata[1]}<br>cluster=%{customdata[2]}<br>true label=%{customdata[3]}<extra></extra>"
    marker = {"size": 4 if many else 7, "opacity": 0.85}
    if len(order) > MAX_LEGEND:  # one trace, a colour per point: 200 traces take seconds to draw
        colour_of = dict(zip(order, colours, strict=True))
        points = [colour_of[v] for v in frame[colour]]
        one = trace(
            x=xs,
            y=ys,
            mode="markers",
            marker=marker | {"color": points},
            customdata=custom,
            hovertemplate=hover,
        )
        fig = go.Figure(one, layout={"showlegend": False})
    else:
        groups = frame.groupby(colour, sort=False).indices
        fig = go.Figure(
            [
                trace(
                    x=xs[groups[value]],
                    y=ys[groups[value]],
                    mode="markers",
                    name=str(value),
                    marker=marker | {"color": colours[n]},
                    customdata=custom[groups[value]],
                    hovertemplate=hover,
                )
                for n, value in enumerate(order)
            ]
        )
    fig.update_layout(
        height=520,
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        dragmode="lasso",
        legend_title_text=colour,
        xaxis_title=f"{axes} 1",
        yaxis_title=f"{axes} 2",
    )
    return fig
