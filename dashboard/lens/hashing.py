"""Plain helpers for the two ConceptHash views: ordering and sampling codes, naming bits, heatmaps.

Conventions shared with ``core.concepthash.evaluate``: a code row holds K bits in {-1, +1}; bit
``j`` of concept ``m`` is column ``m * K/M + j`` and is *on* when it is +1; a sub-code's value
reads its bits little-endian (``b0`` is the least significant). Bit strings shown to people list
the bits in column order ``b0 b1 ...`` with 1 for +1, so ``c0·b1`` is the second character of
``c0``'s group. Nothing here imports Streamlit; the pages add the caching.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from PIL import Image
from plotly.colors import get_colorscale

from core.concepthash.arrays import DB_ATTENTION
from core.concepthash.arrays import DB_IDS as DB_IDS  # the pages read the optional image ids by it
from core.concepthash.arrays import QUERY_IDS as QUERY_IDS  # and the test images' ids
from core.concepthash.codes import sign_codes, subcode_values, upsample_maps
from core.concepthash.config import bits_per_concept  # K/M, shared with the model's config
from core.concepthash.naming import NO_PART as NO_PART  # the name of a concept no better than chance
from core.concepthash.naming import concept_parts
from core.sampling import proportional_sample as proportional_sample  # the pages' galleries draw with it
from lens.inference import one_at_a_time

SORT_MODES = ("class", "code", "original")
METHODS = {"Last layer": "last", "Rollout": "rollout"}


def bit_labels(n_bits: int, n_concepts: int) -> list[str]:
    """One label per code column: ``c0·b0, c0·b1, ..., c1·b0, ...``."""
    per = bits_per_concept(n_bits, n_concepts)
    return [f"c{k // per}·b{k % per}" for k in range(n_bits)]


def _check_codes(codes: np.ndarray) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"Codes must be a 2-D (images, bits) array, not shape {codes.shape}.")
    return codes


def codes_table(
    codes: np.ndarray,
    labels: np.ndarray,
    order: np.ndarray,
    class_names: Sequence[str],
    bit_names: Sequence[str],
    ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The bit matrix as a table, rows in ``order``: database index, image id, class, then one 0/1 column per
    bit (1 = on, +1), named as the matrix names them."""
    codes = _check_codes(codes)
    if len(bit_names) != codes.shape[1]:
        raise ValueError(f"There are {codes.shape[1]} bits but {len(bit_names)} bit names.")
    rows = np.asarray(order, dtype=np.int64)
    table = pd.DataFrame((codes[rows] > 0).astype(np.int8), columns=list(bit_names))
    classes = [class_names[c] if 0 <= c < len(class_names) else str(c) for c in np.asarray(labels)[rows]]
    table.insert(0, "class", classes)
    table.insert(0, "image", [str(ids[i]) for i in rows] if ids is not None else [str(i) for i in rows])
    table.insert(0, "index", rows)
    return table


def bit_matrix_order(codes: np.ndarray, labels: np.ndarray, mode: str) -> np.ndarray:
    """Row order of the bit matrix.

    ``original``: database order; ``code``: lexicographic by the bits (first column most
    significant, -1 before +1); ``class``: by class, and by code within a class, so images of
    one class that share a code sit together. Ties keep database order (the sort is stable).
    """
    codes = _check_codes(codes)
    labels = np.asarray(labels)
    if len(labels) != len(codes):
        raise ValueError(f"There are {len(codes)} codes but {len(labels)} labels.")
    if mode not in SORT_MODES:
        raise ValueError(f"Sort mode must be one of {', '.join(SORT_MODES)}, not {mode!r}.")
    if mode == "original":
        return np.arange(len(codes))
    keys = [np.arange(len(codes))] + [codes[:, k] for k in range(codes.shape[1] - 1, -1, -1)]
    if mode == "class":
        keys.append(labels)
    return np.lexsort(keys)


def subcode_value_table(
    codes: np.ndarray, labels: np.ndarray, concept: int, n_concepts: int, class_names: Sequence[str]
) -> pd.DataFrame:
    """One row per sub-code value that occurs for ``concept``, most frequent first: the value, its bits (b0
    first), how many database images have it and their share, how many classes they come from, and the
    majority class with its share of the value's images."""
    groups = images_by_subcode(codes, concept, n_concepts)
    per = bits_per_concept(np.asarray(codes).shape[1], n_concepts)
    labels = np.asarray(labels)
    rows = []
    for value, members in groups.items():
        classes, counts = np.unique(labels[members], return_counts=True)
        top = int(np.argmax(counts))
        majority = int(classes[top])
        name = class_names[majority] if 0 <= majority < len(class_names) else str(majority)
        rows.append(
            {
                "value": value,
                "bits": subcode_bits(value, per),
                "images": len(members),
                "share": len(members) / len(labels),
                "classes": len(classes),
                "majority class": name,
                "majority share": counts[top] / len(members),
            }
        )
    table = pd.DataFrame(rows, columns=SUBCODE_COLUMNS)
    return table.sort_values(["images", "value"], ascending=[False, True], ignore_index=True)


SUBCODE_COLUMNS = ["value", "bits", "images", "share", "classes", "majority class", "majority share"]


def subcode_value_label(row: pd.Series) -> str:
    """A picker line for a populated sub-code value: ``value 37 · 10100100 · 312 images · mostly X (40%)``."""
    return (
        f"value {row['value']} · {row['bits']} · {row['images']} image{'s' if row['images'] != 1 else ''} · "
        f"mostly {row['majority class']} ({row['majority share']:.0%})"
    )


def images_by_bit(
    codes: np.ndarray, bit: int, n: int = 12, seed: int = 0, labels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A sample of up to ``n`` images with the bit on (+1) and up to ``n`` with it off (-1), each drawn in
    proportion to its classes (:func:`proportional_sample`)."""
    codes = _check_codes(codes)
    if not 0 <= bit < codes.shape[1]:
        raise ValueError(f"Bit {bit} does not exist; the codes have bits 0 to {codes.shape[1] - 1}.")
    on = codes[:, bit] > 0
    return (
        proportional_sample(np.flatnonzero(on), labels, n, seed),
        proportional_sample(np.flatnonzero(~on), labels, n, seed),
    )


def images_by_subcode(codes: np.ndarray, concept: int, n_concepts: int) -> dict[int, np.ndarray]:
    """Every image index grouped by the value of one concept's sub-code (values present, ascending)."""
    codes = _check_codes(codes)
    bits_per_concept(codes.shape[1], n_concepts)
    if not 0 <= concept < n_concepts:
        raise ValueError(f"Concept {concept} does not exist; the model has concepts 0 to {n_concepts - 1}.")
    values = subcode_values(codes, n_concepts)[:, concept]
    return {int(v): np.flatnonzero(values == v) for v in np.unique(values)}


def subcode_bits(value: int, per: int) -> str:
    """The bit string (``b0`` first) of a sub-code value: 2 with two bits -> ``"01"``."""
    if not 0 <= value < 2**per:
        raise ValueError(f"Sub-code value {value} does not fit in {per} bits.")
    return "".join(str((value >> j) & 1) for j in range(per))


def code_groups(code_row: np.ndarray, n_concepts: int) -> list[str]:
    """One bit string per concept (1 for +1, bits in column order): ``["0110", "1010"]``."""
    row = np.asarray(code_row).reshape(-1)
    per = bits_per_concept(len(row), n_concepts)
    return ["".join("1" if b > 0 else "0" for b in row[m * per : (m + 1) * per]) for m in range(n_concepts)]


def format_code(code_row: np.ndarray, n_concepts: int) -> str:
    """A code as ``"c0: 0110  c1: 1010"``: one group per concept."""
    return "  ".join(f"c{m}: {bits}" for m, bits in enumerate(code_groups(code_row, n_concepts)))


def heatmaps_for(loaded: Any, images: Sequence[Image.Image], method: str, batch_size: int = 32) -> np.ndarray:
    """(B, M, H, W) concept heatmaps in [0, 1] of PIL images, at the model's input size.

    ``method`` is ``"last"`` or ``"rollout"`` (see ``core.concepthash.attention``). Each image
    is preprocessed the model's way (shortest side resized, centre crop), so the maps line up
    with :func:`center_square` of the image.
    """
    from core.concepthash.attention import concept_heatmaps  # the model's code: PyTorch

    if not images:
        m = loaded.model.n_concepts
        size = loaded.backbone.image_size
        return np.zeros((0, m, size, size), dtype=np.float32)
    chunks = []
    for start in range(0, len(images), batch_size):
        pixels = loaded.backbone.preprocess_images(list(images[start : start + batch_size]))
        with one_at_a_time():  # the model is shared by every session in this process
            chunks.append(concept_heatmaps(loaded.model, pixels, method).astype(np.float32))
    return np.concatenate(chunks)


def stored_heatmaps(loaded: Any, indices: Sequence[int]) -> np.ndarray | None:
    """(B, M, H, W) last-layer heatmaps of database images from the attention the bundle stores (no model
    run, no PyTorch), at the data's image size; None for a bundle saved before bundles stored it."""
    attention = loaded.arrays.get(DB_ATTENTION)
    if attention is None:
        return None
    return heatmaps_of_stored(loaded, attention[np.asarray(indices, dtype=np.int64)])


def heatmaps_of_stored(loaded: Any, attention: np.ndarray) -> np.ndarray:
    """(B, M, H, W) heatmaps in [0, 1] at the data's image size from stored attention (B, M, gh, gw)."""
    return upsample_maps(np.asarray(attention, dtype=np.float32), loaded.data.image_size or 224)


def encode_images(loaded: Any, images: Sequence[Image.Image]) -> np.ndarray:
    """{-1, +1} int8 codes (B, K) of PIL images (for uploads; database codes are in the bundle)."""
    pixels = loaded.backbone.preprocess_images(list(images))
    with one_at_a_time():
        return sign_codes(loaded.model.encode(pixels))


def center_square(image: Image.Image) -> Image.Image:
    """The central square of an image: the region the model sees after its resize and centre crop."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


TILE_CAPTION_CHARS = 10  # a tile in a six-wide grid in half of a 1400 px window fits about ten characters


def tile_caption(index: int, name: str, limit: int = TILE_CAPTION_CHARS) -> str:
    """A database tile's caption: ``"#488 azur…"`` — the index, then as much of the class name as fits.

    Captions do not wrap, so a longer one runs into its neighbour; the full names go below the grid.
    """
    head = f"#{index}"
    if len(head) > limit:
        return head[: limit - 1] + "…"
    room = limit - len(head) - 1
    name = str(name).strip()
    if not name or room < 2:
        return head
    if len(name) <= room:
        return f"{head} {name}"
    return f"{head} {name[: room - 1].rstrip()}…"


def model_view(image: Image.Image, side: int) -> Image.Image:
    """What the model saw of an image, ``side`` pixels square: its centre square, scaled for display.

    Heatmaps cover only this square, so every page draws its overlays on it (a non-square image stretched
    under a map would put hot spots on edges the model never saw).
    """
    return display_image(center_square(image.convert("RGB")), side)


def display_image(image: Image.Image, side: int = 192) -> Image.Image:
    """The image scaled so its shorter side is ``side`` pixels: ToyBirds (32-64 px) grow, photos shrink."""
    if side < 1:
        raise ValueError(f"A display size must be at least 1 pixel, not {side}.")
    factor = side / min(image.size)
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    if size == image.size:
        return image.copy()
    resample = Image.Resampling.BICUBIC if factor > 1 else Image.Resampling.LANCZOS
    return image.resize(size, resample)


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A boolean mask resized (nearest neighbour) to ``size`` = (width, height), to tint an enlarged image."""
    small = Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255)
    return np.asarray(small.resize(size, Image.Resampling.NEAREST)) > 127


WHOLE_CODE = "whole code"  # how the CLS baseline's single group of bits is named on every page


def is_cls_baseline(config: dict[str, Any]) -> bool:
    """Whether a ConceptHash bundle is the CLS baseline: one code from the CLS token, no concept tokens."""
    return config.get("model", {}).get("mode", "concepts") == "cls"


def n_attended(config: dict) -> int:
    """Attention maps per image: one per concept, or the CLS token's one for the CLS baseline."""
    return 1 if is_cls_baseline(config) else int((config.get("model") or {}).get("n_concepts", 1))


def part_swap(metrics: dict[str, Any]) -> dict[str, Any] | None:
    """The bundle's ``part_swap`` metric, or None when the bundle was evaluated before it existed."""
    swap = metrics.get("part_swap")
    return swap if isinstance(swap, dict) and swap.get("matrix") and swap.get("parts") else None


def concept_names(metrics: dict[str, Any], cls_baseline: bool = False) -> tuple[dict[int, str], str | None]:
    """Concept -> its name (a species part, or ``no part``), and which matching named it ("part swap").

    Every page names concepts with this, from :func:`core.concepthash.naming.concept_parts`: the part-swap
    matching, with "no part" for a concept that does no better than chance. A bundle without a part-swap
    matrix names none (its localisation table never names concepts). The CLS baseline has no concepts.
    """
    if cls_baseline:
        return {}, None
    named = concept_parts(metrics)
    return {c.concept: c.name for c in named}, ("part swap" if named else None)


NAMING_RULE = (
    "A concept is named after the part it is matched to (one part per concept, matched by flip rate) only "
    "when it beats chance on both scores: its sub-code flips more often when that part is repainted than "
    "when any other part is (the tail included), and its most-attended patch lands on that part more often "
    "than a random patch does. Otherwise it reads '≈ no part'."
)


NAMING_SCORES = ("flip rate", "largest other flip", "hit rate", "random patch")  # None is shown as empty


def naming_table(metrics: dict[str, Any], cls_baseline: bool = False) -> pd.DataFrame | None:
    """One row per concept: the part the flip-rate matching gives it, both scores side by side (its flip rate
    against its largest flip for another repaint, its pointing-game hit rate against a random patch's) and
    the name that follows (:data:`NAMING_RULE`); None without a part-swap matrix. The CLS baseline's one row
    is its whole code, with the scores and no name (it has no concepts)."""
    named = concept_parts(metrics)
    if not named:
        return None
    names = {c.concept: c.name for c in named}
    rows = []
    for c in named:
        row = {
            "concept": WHOLE_CODE if cls_baseline else concept_label(c.concept, names, short=True),
            "matched part": c.part or "—",
            "flip rate": c.flip_rate,
            "largest other flip": c.other_flip_rate,
            "when repainting": c.other_part or "—",
            "hit rate": c.hit_rate,
            "random patch": c.random_rate,
        }
        if not cls_baseline:
            row["why no part"] = c.why_no_part
        rows.append(row)
    return pd.DataFrame(rows).astype({k: float for k in NAMING_SCORES})


def concept_label(m: int, names: dict[int, str], short: bool = False) -> str:
    """``"concept 1 ≈ wing"`` (``"c1 ≈ wing"`` when short), or ``"concept 1"`` when unmatched."""
    base = f"c{m}" if short else f"concept {m}"
    return f"{base} ≈ {names[m]}" if m in names else base


def part_swap_table(
    swap: dict[str, Any], names: dict[int, str], cls_baseline: bool = False
) -> tuple[pd.DataFrame, list[tuple[int, int]]]:
    """Parts x concepts flip probabilities as a table, and the (row, column) cells of each concept named
    after a part (by :func:`concept_names`; a concept named "no part" has none).

    Rows are the parts (species parts and the nuisance tail), columns the concepts named by
    :func:`concept_label`; the CLS baseline's single column is its whole code.
    """
    matrix = np.asarray(swap["matrix"], dtype=float)
    parts = [str(p) for p in swap["parts"]]
    if matrix.ndim != 2 or matrix.shape[0] != len(parts):
        raise ValueError(
            f"The part-swap matrix has shape {matrix.shape}, not ({len(parts)} parts, concepts)."
        )
    if cls_baseline:
        columns = [WHOLE_CODE] if matrix.shape[1] == 1 else [f"bit group {m}" for m in range(matrix.shape[1])]
        cells: list[tuple[int, int]] = []
    else:
        columns = [concept_label(m, names) for m in range(matrix.shape[1])]
        cells = [(parts.index(name), m) for m, name in names.items() if name in parts and m < matrix.shape[1]]
    return pd.DataFrame(matrix, index=parts, columns=columns), cells


def _percent(value: Any) -> str:
    return f"{100 * float(value):.0f}%" if isinstance(value, int | float) else "?"


def part_swap_summary(swap: dict[str, Any], names: dict[int, str]) -> str:
    """One sentence: how often a matched sub-code flips when its part changes, and the worst leak."""
    sentences = []
    mean, low = swap.get("matched_flip_rate_mean"), swap.get("matched_flip_rate_min")
    if isinstance(mean, int | float):
        sentences.append(
            f"A matched sub-code flips on {_percent(mean)} of its part's colour swaps on average"
            + (f" (lowest {_percent(low)})" if isinstance(low, int | float) else "")
        )
    off = swap.get("largest_off_diagonal")
    if isinstance(off, dict):
        rate = next((off[k] for k in ("flip_rate", "rate", "value") if k in off), None)
        where = []
        if "concept" in off:
            where.append(concept_label(int(off["concept"]), names))
        if "part" in off:
            where.append(f"when the {off['part']} changes")
        sentences.append(f"the largest unmatched flip rate is {_percent(rate)} ({' '.join(where)})")
    return "; ".join(sentences) + "." if sentences else ""


SPLIT_ROWS = {
    "trained_species": "gives another species of the training set",
    "new_combination": "gives a colour combination no species has",
}


def part_swap_split_table(swap: dict[str, Any]) -> pd.DataFrame | None:
    """The species-part repaints split by what they make (``by_counterfactual``): one row per kind, with the
    number of repaints, the matched sub-codes' mean flip rate and the largest unmatched one; None when the
    bundle's metrics have no split (evaluated before it) or a kind has no repaint."""
    split = swap.get("by_counterfactual")
    if not isinstance(split, dict):
        return None
    rows = []
    for key, meaning in SPLIT_ROWS.items():
        part = split.get(key)
        if not isinstance(part, dict) or part.get("matrix") is None:
            continue
        off = part.get("largest_off_diagonal") or {}
        rows.append(
            {
                "the repaint": meaning,
                "repaints": int(sum(part.get("pairs", []))),
                "matched sub-code flips": float(part.get("matched_flip_rate_mean", float("nan"))),
                "largest unmatched flip": float(off.get("flip_rate", float("nan"))),
            }
        )
    return pd.DataFrame(rows) if rows else None


def leak_reading_table(swap: dict[str, Any]) -> pd.DataFrame | None:
    """``leaks_name_the_new_colour``, one row per (part repainted, concept coding another part) with at least
    one leaked flip: how many flips, and the share that took the code of the colour just painted; None when
    the bundle's centres code no part colour (learned centres) or it was evaluated before the figure."""
    reading = swap.get("leaks_name_the_new_colour")
    if not isinstance(reading, dict) or not isinstance(reading.get("by_pair"), dict):
        return None
    rows = [
        {
            "leak": pair.replace("->", "→"),
            "flips": int(values.get("flips", 0)),
            "share naming the new colour": float(values["named_new_colour"]),
        }
        for pair, values in reading["by_pair"].items()
        if isinstance(values, dict) and values.get("flips")
    ]
    return pd.DataFrame(rows) if rows else None


# Streamlit's front end swaps the colours #000001 … #000099 anywhere in a figure for its theme's colours
# (they are placeholders in its plotly template), so a scale with one of them (Magma and Inferno start at
# #000004) would show its darkest cells in a theme colour: a flip rate of 0 drawn pink.
THEME_PLACEHOLDER = re.compile(r"#0000([0-9]{2})", re.IGNORECASE)


def plotly_colorscale(name: str) -> list[list]:
    """Plotly's named colour scale as [position, colour] pairs, each Streamlit theme placeholder colour
    moved to its neighbour #0001.. (the same colour to the eye)."""
    scale = get_colorscale(name)
    return [[position, THEME_PLACEHOLDER.sub(r"#0001\1", colour)] for position, colour in scale]


def unit_heatmap(
    values: np.ndarray, x: list, y: list, colorscale: str, decimals: int, hover: str, title: str
) -> go.Figure:
    """A heatmap of values in [0, 1], each cell labelled with its value rounded to ``decimals``
    (``colorscale``: a plotly scale name)."""
    return go.Figure(
        go.Heatmap(
            z=values,
            x=x,
            y=y,
            colorscale=plotly_colorscale(colorscale),
            zmin=0,
            zmax=1,
            text=np.round(values, decimals),
            texttemplate="%{text}",
            hovertemplate=hover + "<extra></extra>",
            colorbar={"title": title},
        )
    )


def part_swap_figure(table: pd.DataFrame, matched: Sequence[tuple[int, int]] = ()) -> go.Figure:
    """Parts x concepts heatmap of flip probabilities (0-1), matched cells outlined."""
    values = table.to_numpy(dtype=float)
    fig = unit_heatmap(
        values,
        list(table.columns),
        list(table.index),
        colorscale="Magma",
        decimals=2,
        hover="%{y} changes → %{x} flips with probability %{z:.3f}",
        title="P(flip)",
    )
    for row, col in matched:
        fig.add_shape(
            type="rect",
            x0=col - 0.5,
            x1=col + 0.5,
            y0=row - 0.5,
            y1=row + 0.5,
            line={"color": "#00e5ff", "width": 4},
        )
    fig.update_yaxes(autorange="reversed", title="part repainted")
    fig.update_xaxes(side="top")
    fig.update_layout(height=120 + 60 * len(table), margin={"l": 40, "r": 10, "t": 40, "b": 10})
    return fig


def nmi_table(
    metrics: dict[str, Any], names: dict[int, str] | None = None, cls_baseline: bool = False
) -> pd.DataFrame | None:
    """The ``subcode_part_nmi`` matrix as a table (one row per concept, one column per part), or None.

    Rows are named ``c0`` or, with ``names``, ``c0 ≈ head``; the CLS baseline's one row is its whole code.
    """
    nmi = metrics.get("subcode_part_nmi")
    if not nmi or not nmi.get("matrix"):
        return None
    table = pd.DataFrame(nmi["matrix"], columns=list(nmi["parts"]))
    rows = (
        [WHOLE_CODE] * len(table)
        if cls_baseline
        else [concept_label(m, names or {}, short=True) for m in range(len(table))]
    )
    table.insert(0, "concept", rows)
    return table


def bit_matrix_figure(
    codes: np.ndarray,
    labels: np.ndarray,
    order: np.ndarray,
    n_concepts: int,
    class_names: Sequence[str],
    names: dict[int, str] | None = None,
    class_boundaries: bool = False,
) -> go.Figure:
    """Plotly heatmap of the codes (rows in ``order``, 1 = bit on), with separators between concepts, and with
    ``class_boundaries`` a line between classes (when the rows run class by class).

    With ``names`` (concept -> matched part) each concept's columns are titled ``c0 ≈ head``.
    """
    codes = _check_codes(codes)
    n, n_bits = codes.shape
    bits_per_concept(n_bits, n_concepts)  # refuses a code length the concepts do not divide
    rows = (codes[order] > 0).astype(np.int8)
    # One label per row (not per cell) keeps the figure small for large databases; hover shows it.
    rows_named = [
        f"#{i} {class_names[labels[i]] if 0 <= labels[i] < len(class_names) else labels[i]}"
        for i in order.tolist()
    ]
    fig = go.Figure(
        go.Heatmap(
            z=rows,
            x=bit_labels(n_bits, n_concepts),
            y=rows_named,
            colorscale=[[0.0, "#2b2d42"], [0.5, "#2b2d42"], [0.5, "#f4d35e"], [1.0, "#f4d35e"]],
            zmin=0,
            zmax=1,
            colorbar={
                "title": "bit",
                "tickvals": [0.25, 0.75],
                "ticktext": ["off (−1)", "on (+1)"],
                "len": 0.3,
            },
            xgap=1,
            hovertemplate="%{y}<br>%{x} = %{z}<extra></extra>",
        )
    )
    if class_boundaries and len(order) and runs_class_by_class(labels, order):
        _class_boundaries(fig, np.asarray(labels)[order])
    _concept_columns(fig, n_bits, n_concepts, names)
    fig.update_yaxes(
        autorange="reversed", type="category", showticklabels=False, title=f"{n} database images"
    )
    top = 90 if names and n_bits <= MAX_BIT_TICKS else 60  # room for the concept titles above the bit labels
    fig.update_layout(height=min(900, max(320, 4 * n + 80)), margin={"l": 40, "r": 10, "t": top, "b": 10})
    return fig


MAX_BIT_TICKS = 24  # more bits than this are labelled by concept ("c3 ≈ head"), one label per sub-code
BOUNDARY_CLASSES = 200  # class boundaries are drawn for at most this many class blocks


def runs_class_by_class(labels: np.ndarray, order: np.ndarray) -> bool:
    """Whether the rows in ``order`` run class by class (each class one block), so boundaries can be drawn."""
    ordered = np.asarray(labels)[order]
    starts = np.count_nonzero(ordered[1:] != ordered[:-1]) + 1
    return starts == len(np.unique(ordered)) and starts <= BOUNDARY_CLASSES


def _class_boundaries(fig: go.Figure, ordered_labels: np.ndarray) -> None:
    """A thin line between consecutive class blocks of the rows."""
    for row in np.flatnonzero(ordered_labels[1:] != ordered_labels[:-1]) + 1:
        fig.add_hline(y=float(row) - 0.5, line_width=1, line_color="rgba(255,255,255,0.85)")


def _concept_columns(fig: go.Figure, n_bits: int, n_concepts: int, names: dict[int, str] | None) -> None:
    """Separators between the concepts' sub-codes and their titles. Up to :data:`MAX_BIT_TICKS` bits, every
    column keeps its bit label and named concepts get a title above; beyond, one label per concept at the
    middle of its sub-code replaces the bit labels, which would run together (hover still names each bit)."""
    per = bits_per_concept(n_bits, n_concepts)
    for m in range(1, n_concepts):
        fig.add_vline(x=m * per - 0.5, line_width=3, line_color="#e63946")
    if n_bits > MAX_BIT_TICKS:
        fig.update_xaxes(
            tickmode="array",
            tickvals=[m * per + (per - 1) / 2 for m in range(n_concepts)],
            ticktext=[concept_label(m, names or {}, short=True) for m in range(n_concepts)],
        )
    else:
        for m in sorted(names or {}):
            fig.add_annotation(
                x=m * per + (per - 1) / 2,
                y=1.0,
                yref="paper",
                yshift=38,
                text=f"<b>{concept_label(m, names or {}, short=True)}</b>",
                showarrow=False,
            )
    fig.update_xaxes(side="top", tickangle=0)


def bit_frequency_figure(
    codes: np.ndarray,
    labels: np.ndarray,
    n_concepts: int,
    class_names: Sequence[str],
    names: dict[int, str] | None = None,
) -> go.Figure:
    """Classes x bits: the share of each class's database images that have the bit on — one row per class
    that occurs (in class order), however many images there are; a bit that tells classes apart is bright
    for some rows and dark for others."""
    codes = _check_codes(codes)
    labels = np.asarray(labels)
    classes = np.unique(labels)
    share = np.stack([(codes[labels == c] > 0).mean(axis=0) for c in classes]) if len(classes) else codes[:0]
    counts = np.bincount(np.searchsorted(classes, labels), minlength=len(classes))
    rows = [class_names[c] if 0 <= c < len(class_names) else str(c) for c in classes.tolist()]
    fig = go.Figure(
        go.Heatmap(
            z=share,
            x=bit_labels(codes.shape[1], n_concepts),
            y=rows,
            customdata=np.repeat(counts[:, None], codes.shape[1], axis=1),
            zmin=0,
            zmax=1,
            colorscale=[[0.0, "#2b2d42"], [1.0, "#f4d35e"]],
            colorbar={"title": "share on", "tickformat": ".0%", "len": 0.4},
            xgap=1,
            hovertemplate="%{y} (%{customdata} images)<br>%{x} on in %{z:.0%}<extra></extra>",
        )
    )
    _concept_columns(fig, codes.shape[1], n_concepts, names)
    fig.update_yaxes(
        autorange="reversed",
        type="category",
        showticklabels=len(rows) <= 40,
        title=f"{len(rows)} classes",
    )
    top = 90 if names and codes.shape[1] <= MAX_BIT_TICKS else 60
    height = min(1400, max(320, (18 if len(rows) <= 40 else 6) * len(rows) + 100))
    fig.update_layout(height=height, margin={"l": 40, "r": 10, "t": top, "b": 10})
    return fig


def nmi_figure(table: pd.DataFrame) -> go.Figure:
    """Concepts x parts heatmap of the NMI table, each cell labelled with its value."""
    values = table.drop(columns="concept").to_numpy(dtype=float)
    parts = list(table.columns[1:])
    fig = unit_heatmap(
        values,
        parts,
        list(table["concept"]),
        colorscale="Viridis",
        decimals=3,
        hover="%{y} vs %{x}: NMI %{z:.3f}",
        title="NMI",
    )
    fig.update_yaxes(autorange="reversed")
    fig.update_layout(height=120 + 60 * len(table), margin={"l": 40, "r": 10, "t": 30, "b": 30})
    return fig
