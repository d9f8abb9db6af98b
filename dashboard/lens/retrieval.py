"""Plain logic behind the retrieval page (a model with vs without L_csd); no Streamlit in here.

The page compares two ConceptHash bundles: which pair to show first (:func:`default_pair`), the query's
code and heatmaps under one bundle (:func:`stored_query` for a test image, from the arrays the bundle stores;
:func:`encode_query` runs the model, for an upload or the rollout heatmaps), the top-k Hamming search of that
code in the bundle's stored database codes (:func:`search`), the results as a table with correct / incorrect
marks (:func:`results_table`), and the metrics both bundles stored when they were evaluated
(:func:`metrics_table`). Nothing here imports PyTorch until :func:`encode_query` runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from itertools import permutations
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
from PIL import Image

from core.concepthash.arrays import QUERY_ATTENTION, QUERY_IDS
from core.concepthash.arrays import QUERY_CODES as QUERY_CODES  # the page reads the stored test codes by it
from core.concepthash.codes import sign_codes
from core.data import DataSpec
from core.retrieval import hamming_distances, hamming_topk, pack_codes, query_average_precisions
from lens.hashing import heatmaps_of_stored, n_attended

RESULT_COLUMNS = ["rank", "model", "database id", "distance", "correct", "class"]
_NO_CSD = re.compile(r"no[-_ ]?csd")


class BundleLike(Protocol):
    """What :func:`default_pair` reads of a bundle (``lens.bundles.BundleInfo`` has it)."""

    name: str
    config: dict[str, Any]


# --------------------------------------------------------------------------------------------------
# choosing the pair
# --------------------------------------------------------------------------------------------------


def csd_weight(config: Mapping[str, Any]) -> float | None:
    """The L_csd weight a ConceptHash bundle was trained with, or None when its config does not say."""
    value = config.get("model", {}).get("csd_weight")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _comparable(a: BundleLike, b: BundleLike) -> bool:
    """Same data and same backbone: the only difference worth showing is then the training."""
    same_data = a.config.get("data") == b.config.get("data")
    return same_data and a.config.get("backbone") == b.config.get("backbone")


def _is_csd_pair(a: BundleLike, b: BundleLike) -> bool:
    weight_a, weight_b = csd_weight(a.config), csd_weight(b.config)
    return weight_a is not None and weight_b is not None and weight_a > 0 and weight_b == 0


def _name_score(a: BundleLike, b: BundleLike) -> int:
    """How well the names say "with L_csd" / "without L_csd" (e.g. ``x-csd`` and ``x-nocsd``)."""
    name_a, name_b = a.name.lower(), b.name.lower()
    score = 0
    if _NO_CSD.search(name_b):
        score += 2
    if "csd" in name_a and not _NO_CSD.search(name_a):
        score += 1
    if _NO_CSD.sub("csd", name_b) == name_a:
        score += 1
    if a.config.get("model", {}).get("mode", "concepts") == "concepts":
        score += 1
    return score


def default_pair(infos: Sequence[BundleLike]) -> tuple[BundleLike, BundleLike] | None:
    """The two bundles to compare first: (trained with L_csd, trained without), else the first two.

    A pair qualifies when A's ``model.csd_weight`` is > 0, B's is 0 and both share data and backbone;
    among those, names such as ``*-csd`` / ``*-nocsd`` win, then list order. Without such a pair,
    any with/without pair, then simply the first two bundles (or one bundle twice). None when empty.
    """
    if not infos:
        return None
    pairs = list(permutations(range(len(infos)), 2))
    for strict in (True, False):
        found = [
            (i, j)
            for i, j in pairs
            if _is_csd_pair(infos[i], infos[j]) and (not strict or _comparable(infos[i], infos[j]))
        ]
        if found:
            i, j = max(found, key=lambda p: (_name_score(infos[p[0]], infos[p[1]]), -p[0], -p[1]))
            return infos[i], infos[j]
    return infos[0], infos[1 if len(infos) > 1 else 0]


def data_label(config: Mapping[str, Any]) -> str:
    """A short human description of a bundle's data set, e.g. ``toybirds (seed 0, 64 px)``."""
    data = config.get("data", {})
    kind = data.get("kind", "unknown data")
    if kind == "toybirds":
        return f"toybirds (seed {data.get('seed')}, {data.get('image_size')} px)"
    return f"{kind} at {data.get('root')}"


# What makes two bundles' data the same images, by data kind: ToyBirds is drawn from its seed, size, counts
# and world version; a folder is read from its root (split by seed when it has no train/ and test/).
SAME_DATA_FIELDS = {
    "toybirds": ("seed", "image_size", "train_per_class", "test_per_class", "world"),
    "folder": ("root", "seed"),
}
FIELD_NAMES = {
    "kind": "data set",
    "root": "folder",
    "seed": "seed",
    "image_size": "image size",
    "train_per_class": "train images per class",
    "test_per_class": "test images per class",
    "world": "ToyBirds world",
}


def data_differences(config_a: Mapping[str, Any], config_b: Mapping[str, Any]) -> list[str]:
    """What differs between two bundles' data, as ``"seed: 0 vs 7"`` items (empty when they are the same
    images): the data set, then what makes its images for that kind (:data:`SAME_DATA_FIELDS`; other kinds
    by their root). Stored specs are read with the defaults a spec fills in, so an older bundle that lacks a
    field compares as the spec it stands for."""
    a, b = _spec_dict(config_a), _spec_dict(config_b)
    if a.get("kind") != b.get("kind"):
        return [f"data set: {a.get('kind')} vs {b.get('kind')}"]
    fields = SAME_DATA_FIELDS.get(str(a.get("kind")), ("root",))
    return [f"{FIELD_NAMES[f]}: {a.get(f)} vs {b.get(f)}" for f in fields if a.get(f) != b.get(f)]


def _spec_dict(config: Mapping[str, Any]) -> dict[str, Any]:
    data = dict(config.get("data") or {})
    try:
        return DataSpec.from_dict(data).to_dict()
    except (ValueError, TypeError):
        return data


def data_mismatch(config_a: Mapping[str, Any], config_b: Mapping[str, Any]) -> str | None:
    """One warning sentence naming what differs when two bundles were trained on different data, else
    None."""
    differences = data_differences(config_a, config_b)
    if not differences:
        return None
    return (
        f"The two models use different data ({'; '.join(differences)}): the query comes from model A's "
        "test split and each model searches its own database, so the comparison is not like for like."
    )


def class_key(name: Any) -> str:
    """A class name as compared across data sets: a number prefix ("024."), underscores, case and spacing
    do not count, so CUB's "024.Red_faced_Cormorant" is the same class as "red faced cormorant"."""
    text = re.sub(r"^\s*\d+\s*[._-]\s*", "", str(name))
    return " ".join(text.replace("_", " ").lower().split())


def knows_class(classes: Sequence[str], query_class: str | None) -> bool:
    """Whether a model's classes include the query's (by :func:`class_key`): then its results are marked."""
    return query_class is not None and class_key(query_class) in {class_key(c) for c in classes}


# --------------------------------------------------------------------------------------------------
# search and results
# --------------------------------------------------------------------------------------------------


def encode_query(loaded: Any, image: Image.Image, method: str) -> tuple[np.ndarray, np.ndarray]:
    """The query's ±1 code (K,) and its concept heatmaps (M, H, W) under one ConceptHash bundle's model."""
    from core.concepthash.attention import concept_heatmaps  # the model's code: PyTorch

    pixels = loaded.backbone.preprocess_images([image])
    code = sign_codes(loaded.model.encode(pixels))[0]
    heatmaps = concept_heatmaps(loaded.model, pixels, method)[0]
    return code, heatmaps


def stored_query(loaded: Any, index: int, image_id: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Test image ``index``'s ±1 code (K,) and last-layer heatmaps (M, H, W, at the data's image size) from
    the arrays the bundle stores (no model run, no PyTorch); the caller makes sure the query comes from the
    bundle's own data. None when they cannot stand in for the model: a bundle saved before it stored them,
    arrays that do not fit the bundle, or another image at ``index`` (its id is not the stored one)."""
    arrays = loaded.arrays
    codes, attention, ids = (arrays.get(name) for name in (QUERY_CODES, QUERY_ATTENTION, QUERY_IDS))
    if codes is None or attention is None or ids is None:
        return None
    bits, attended = np.asarray(loaded.db_codes).shape[1], n_attended(loaded.config)
    if codes.ndim != 2 or codes.shape[1] != bits or attention.ndim != 4 or attention.shape[1] != attended:
        return None
    if not len(codes) == len(attention) == len(ids) or not 0 <= index < len(codes) or ids[index] != image_id:
        return None
    return codes[index].astype(np.int8), heatmaps_of_stored(loaded, attention[index : index + 1])[0]


def _packed_query(query_code: np.ndarray) -> np.ndarray:
    """One ±1 query code (K,) packed as a (1, W) matrix; ValueError for anything else."""
    code = np.asarray(query_code)
    if code.ndim == 1:
        code = code[None, :]
    if code.ndim != 2 or code.shape[0] != 1:
        raise ValueError(
            f"The query must be one code of shape (K,), not shape {np.asarray(query_code).shape}."
        )
    return pack_codes(code)


def search(db_packed: np.ndarray, query_code: np.ndarray, k: int) -> pd.DataFrame:
    """Top-k database items for one ±1 query code: columns ``rank`` (1..k), ``index``, ``distance``.

    Ordered by Hamming distance, ties by the smaller database index (``core.retrieval.hamming_topk``).
    ``k`` above the database size returns the whole database.
    """
    indices, distances = hamming_topk(_packed_query(query_code), db_packed, k)
    return pd.DataFrame(
        {
            "rank": np.arange(1, indices.shape[1] + 1),
            "index": indices[0].astype(np.int64),
            "distance": distances[0].astype(np.int64),
        }
    )


TIE_COLUMNS = ["distance", "database images", "ranks", "in the top k"]


def tie_table(db_packed: np.ndarray, query_code: np.ndarray, k: int) -> pd.DataFrame:
    """How many database images lie at each Hamming distance from the query (distances that occur, nearest
    first), the ranks they take (ties ordered by database index) and how many of them the top ``k`` holds."""
    distances = hamming_distances(_packed_query(query_code), db_packed)[0]
    values, counts = np.unique(distances, return_counts=True)
    ends = np.cumsum(counts)
    starts = ends - counts + 1
    return pd.DataFrame(
        {
            "distance": values.astype(np.int64),
            "database images": counts.astype(np.int64),
            "ranks": [f"{a}" if a == b else f"{a}–{b}" for a, b in zip(starts, ends, strict=True)],
            "in the top k": np.clip(k - (starts - 1), 0, counts).astype(np.int64),
        },
        columns=TIE_COLUMNS,
    )


def tie_sentence(ties: pd.DataFrame, k: int) -> str:
    """Where the top ``k`` cut the ranking: after whole distance groups, or inside a tie."""
    order = "Images at the same distance are ranked by database index, smaller first."
    cut = ties[(ties["in the top k"] > 0) & (ties["in the top k"] < ties["database images"])]
    if cut.empty:
        return f"The top {k} hold whole distance groups, so no tie is cut. {order}"
    shown, tied = int(cut.iloc[0]["in the top k"]), int(cut.iloc[0]["database images"])
    return (
        f"The top {k} end inside a tie: they hold {shown} of the {tied} images at distance "
        f"{cut.iloc[0]['distance']}, those with the smallest database index; the other {tied - shown} are "
        f"exactly as close. {order}"
    )


def first_tie_group(db_packed: np.ndarray, query_code: np.ndarray) -> tuple[int, np.ndarray]:
    """The smallest distance to the query and every database index at it, ascending (the whole first tie)."""
    distances = hamming_distances(_packed_query(query_code), db_packed)[0]
    nearest = int(distances.min())
    return nearest, np.flatnonzero(distances == nearest)


def results_table(
    model: str,
    hits: pd.DataFrame,
    db_ids: Sequence[str],
    db_labels: Sequence[int],
    classes: Sequence[str],
    query_class: str | None,
) -> pd.DataFrame:
    """The hits of one model as rows of :data:`RESULT_COLUMNS`.

    ``correct`` is True when the database image's class is the query's (compared by :func:`class_key`, so the
    same species named the CUB way and the plain way agree), and missing (``pd.NA``) when that cannot be
    told: a query of unknown class (an upload), or a model none of whose classes is the query's (another data
    set) — never a ✗ for a class the model could not have known.
    """
    index = hits["index"].to_numpy()
    names = [
        str(classes[int(db_labels[i])]) if int(db_labels[i]) < len(classes) else str(db_labels[i])
        for i in index
    ]
    markable = knows_class(classes, query_class)
    wanted = class_key(query_class) if markable else None
    correct = pd.array([class_key(name) == wanted if markable else None for name in names], dtype="boolean")
    return pd.DataFrame(
        {
            "rank": hits["rank"].to_numpy(),
            "model": model,
            "database id": [str(db_ids[i]) for i in index],
            "distance": hits["distance"].to_numpy(),
            "correct": correct,
            "class": names,
        },
        columns=RESULT_COLUMNS,
    )


def result_caption(rank: int, distance: int, correct: bool | None) -> str:
    """``#1 · d=2 · ✓`` under each result image (no mark when correctness is unknown)."""
    mark = "" if correct is None or correct is pd.NA else (" · ✓" if correct else " · ✗")
    return f"#{rank} · d={distance}{mark}"


def precision_of(table: pd.DataFrame) -> float | None:
    """Share of correct results in one model's table; None when correctness is unknown."""
    marks = table["correct"].dropna()
    if len(table) == 0 or len(marks) < len(table):
        return None
    return float(marks.astype(bool).mean())


# --------------------------------------------------------------------------------------------------
# stored metrics
# --------------------------------------------------------------------------------------------------


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else float("nan")


NOT_APPLICABLE = "n/a (one map)"  # a CLS-baseline bundle's diversity and L_csd weight


def metrics_table(configs: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per model (name -> bundle config) with the metrics its bundle stored at evaluation.

    Columns: model, L_csd weight, mAP, P@k for every k any bundle stored, attention diversity (mean
    pairwise cosine of the concepts' attention maps, lower = more diverse), mean localisation hit
    rate and its random baseline. Missing values are NaN.
    """
    ks = sorted(
        {int(k) for config in configs.values() for k in config.get("metrics", {}).get("precision_at", {})}
    )
    rows = []
    for name, config in configs.items():
        metrics = config.get("metrics", {})
        localization = metrics.get("localization", {})
        weight = csd_weight(config)
        row = {
            "model": name,
            "L_csd weight": float("nan") if weight is None else weight,
            "mAP": _number(metrics.get("map")),
        }
        row |= {f"P@{k}": _number(metrics.get("precision_at", {}).get(str(k))) for k in ks}
        row |= {
            "diversity": _number(metrics.get("diversity")),
            "mean hit rate": _number(localization.get("mean_hit_rate")),
            "random hit rate": _number(localization.get("random_baseline")),
        }
        if config.get("model", {}).get("mode", "concepts") == "cls":
            # The CLS baseline has one attention map: no pairwise diversity, nothing for L_csd to act on.
            row |= {"L_csd weight": NOT_APPLICABLE, "diversity": NOT_APPLICABLE}
        rows.append(row)
    columns = [
        "model",
        "L_csd weight",
        "mAP",
        *[f"P@{k}" for k in ks],
        "diversity",
        "mean hit rate",
        "random hit rate",
    ]
    return pd.DataFrame(rows, columns=columns)


def table_for_display(table: pd.DataFrame) -> pd.DataFrame:
    """The table with its mixed number/text columns (a CLS row's "n/a") written as text, so Arrow takes it."""
    shown = table.copy()
    for column in shown.columns:
        values = shown[column]
        if (
            values.dtype == object
            and any(isinstance(v, str) for v in values)
            and any(isinstance(v, int | float) for v in values)
        ):
            shown[column] = [v if isinstance(v, str) else ("" if pd.isna(v) else f"{v:.4g}") for v in values]
    return shown


# --------------------------------------------------------------------------------------------------
# code stores (conceptlens encode)
# --------------------------------------------------------------------------------------------------


def store_problem(store: Any, bundle_path: str) -> str | None:
    """Why the model at ``bundle_path`` cannot search ``store`` (one sentence), or None when it can: the
    store must hold ConceptHash codes written by that very bundle (another model's codes mean other bits)."""
    if store.kind != "concepthash" or "codes" not in store.manifest.get("arrays", {}):
        return f"The store {store.root} holds {store.kind} arrays, not ConceptHash codes."
    written_by = str(store.manifest.get("bundle", ""))
    if Path(written_by).resolve() != Path(bundle_path).resolve():
        return (
            f"The store {store.root} was encoded by {Path(written_by).name or 'another bundle'}, not by "
            f"{Path(bundle_path).name}: its codes cannot be compared with this model's."
        )
    if len(store) == 0:
        return f"The store {store.root} has no encoded images yet."
    return None


def store_results(store: Any, code: np.ndarray, k: int) -> pd.DataFrame:
    """The store's top ``k`` for one ±1 query code by exact Hamming distance (ties by row), with each row's
    image id (a path relative to the encoded folder)."""
    rows, distances = store.search(_packed_query(code), min(k, len(store)))
    return pd.DataFrame(
        {
            "rank": np.arange(1, rows.shape[1] + 1),
            "store row": rows[0],
            "image": store.ids_at(rows[0]),
            "distance": distances[0],
        }
    )


def open_code_store(path: str | Path) -> Any:
    """A ``conceptlens encode`` store opened for reading (:class:`core.retrieval.store.CodeStore`)."""
    from core.retrieval.store import CodeStore

    return CodeStore(path)


def store_stamp(path: Path) -> float:
    """When the store at ``path`` last changed (its manifest or shard list): the key of its cached opening."""
    try:
        return max(p.stat().st_mtime for p in (path / "manifest.json", path / "shards") if p.exists())
    except (OSError, ValueError):
        return 0.0


def store_image(folder: Path, name: str, side: int) -> tuple[Image.Image, str | None]:
    """A store's image by its file name (relative to the encoded folder) through the safe loader, or a grey
    tile of ``side`` px and the sentence why not."""
    from core.data.images import load_image
    from lens.data import missing_tile

    try:
        return load_image(folder / name), None
    except (OSError, ValueError) as exc:
        return missing_tile(side), f"'{name}' cannot be shown: {exc}"


# ---------------------------------------------------------------------------------------------------------
# two models, query by query
# ---------------------------------------------------------------------------------------------------------

TIE_RULE = (
    "Both models rank their database by Hamming distance and break ties by the smaller database index (the "
    "same rule for both, and the one their stored mAP uses), so within a tie group the order says nothing "
    "about how alike the images are."
)


def stored_query_aps(
    db_codes: np.ndarray, db_labels: np.ndarray, query_codes: np.ndarray, query_labels: np.ndarray
) -> np.ndarray:
    """(Q,) each stored test query's AP@all against the stored database; NaN for a query whose class is not
    known today (label -1)."""
    known = np.asarray(query_labels) >= 0
    aps = np.full(len(query_codes), np.nan)
    if known.any():
        aps[known] = query_average_precisions(
            np.asarray(query_labels)[known],
            np.asarray(db_labels, dtype=np.int64),
            pack_codes(sign_codes(np.asarray(query_codes)[known])),
            pack_codes(sign_codes(np.asarray(db_codes))),
        )
    return aps


def query_ap(
    code: np.ndarray,
    db_packed: np.ndarray,
    db_labels: np.ndarray,
    classes: Sequence[str],
    query_class: str | None,
) -> float | None:
    """One ±1 query code's AP@all over a model's packed database codes (the ones :func:`search` ranks), its
    class matched by :func:`class_key`; None when the query's class is unknown or not one of the model's."""
    keys = [class_key(c) for c in classes]
    if query_class is None or class_key(query_class) not in keys:
        return None
    label = np.array([keys.index(class_key(query_class))])
    found = query_average_precisions(
        label, np.asarray(db_labels, dtype=np.int64), _packed_query(code), db_packed
    )
    return float(found[0])


def aligned(values: np.ndarray, ids: Sequence[str], by: Sequence[str]) -> np.ndarray:
    """``values`` (one per id of ``ids``) reordered to the ids ``by``; NaN where ``ids`` lacks one (model B's
    per-query figures lined up with model A's queries)."""
    where = {str(i): n for n, i in enumerate(ids)}
    return np.array([values[where[str(i)]] if str(i) in where else np.nan for i in by], dtype=np.float64)


def first_wrong_rank(table: pd.DataFrame) -> int | None:
    """The rank of a results table's first result of another class (None when every shown one is right, or
    when the query's class is not known)."""
    marks = table["correct"].tolist()
    if any(pd.isna(mark) for mark in marks):
        return None
    wrong = [int(rank) for rank, mark in zip(table["rank"], marks, strict=True) if not mark]
    return wrong[0] if wrong else None


def only_in(table_a: pd.DataFrame, table_b: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The database ids in A's top k and not in B's, and those in B's and not in A's, each in rank order."""
    ids_a, ids_b = [str(i) for i in table_a["database id"]], [str(i) for i in table_b["database id"]]
    return [i for i in ids_a if i not in set(ids_b)], [i for i in ids_b if i not in set(ids_a)]


def class_ap_table(
    aps_a: np.ndarray, aps_b: np.ndarray, labels: np.ndarray, classes: Sequence[str], names: tuple[str, str]
) -> pd.DataFrame:
    """Per class of the test queries: how many, each model's mean AP and B − A, the classes where the models
    differ most first."""
    rows = []
    labels = np.asarray(labels)
    for c in sorted(set(labels.tolist()) - {-1}):
        mine = labels == c
        a, b = float(np.nanmean(aps_a[mine])), float(np.nanmean(aps_b[mine]))
        rows.append(
            {"class": classes[c], "queries": int(mine.sum()), names[0]: a, names[1]: b, "B − A": b - a}
        )
    table = pd.DataFrame(rows, columns=["class", "queries", names[0], names[1], "B − A"])
    return table.reindex(table["B − A"].abs().sort_values(ascending=False, kind="stable").index).reset_index(
        drop=True
    )


def failures_table(
    aps_a: np.ndarray,
    aps_b: np.ndarray,
    names: Sequence[str],
    classes_of: Sequence[str],
    models: tuple[str, str],
    n: int = 20,
) -> pd.DataFrame:
    """The ``n`` test queries with the lowest AP under either model (the lower of the two first), with both
    APs; ``row`` is the query's row among model A's stored queries."""
    worst = np.fmin(aps_a, aps_b)
    order = [int(i) for i in np.argsort(np.where(np.isnan(worst), np.inf, worst), kind="stable")[:n]]
    order = [i for i in order if not np.isnan(worst[i])]
    return pd.DataFrame(
        {
            "row": order,
            "query": [names[i] for i in order],
            "class": [classes_of[i] for i in order],
            models[0]: [aps_a[i] for i in order],
            models[1]: [aps_b[i] for i in order],
        }
    )
