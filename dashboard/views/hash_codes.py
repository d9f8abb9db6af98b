"""Hash codes, bit by bit: the database codes as a bit matrix, the images that turn a bit or a
sub-code on, and how each sub-code follows the ToyBirds parts (part swap, NMI, localisation).

Concepts are named by the part they are matched to ("concept 1 ≈ wing") wherever they appear;
the CLS baseline has one code and no concepts, and the page says so instead of naming any."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import streamlit as st

from lens.bundles import require
from lens.data import bundle_images, picture, show_missing
from lens.figures import (
    ATTENTION_SCALE,
    GRID_ROOM,
    download_figure,
    download_table,
    image_grid,
    overlay,
    share_bars,
    show_colour_scale,
)
from lens.hashing import (
    DB_IDS,
    NAMING_RULE,
    SORT_MODES,
    bit_frequency_figure,
    bit_labels,
    bit_matrix_figure,
    bit_matrix_order,
    bits_per_concept,
    codes_table,
    concept_label,
    concept_names,
    display_image,
    heatmaps_for,
    images_by_bit,
    images_by_subcode,
    is_cls_baseline,
    leak_reading_table,
    n_attended,
    naming_table,
    nmi_figure,
    nmi_table,
    part_swap,
    part_swap_figure,
    part_swap_split_table,
    part_swap_summary,
    part_swap_table,
    proportional_sample,
    stored_heatmaps,
    subcode_bits,
    subcode_value_label,
    subcode_value_table,
    tile_caption,
)
from lens.tabs import kept, lazy_tabs

SAMPLE = 12  # images per side (bit on / off)
PER_VALUE = 6  # images per sub-code value
FIRST_VALUES = 4  # sub-code values drawn at first (the most frequent ones); the picker offers every other
TILE = 112  # px
PER_CLASS, EVERY_IMAGE = "Per class", "Every image"
RAW_ROWS_FIRST = 2000  # a database larger than this opens on the per-class view
PAGE_ROWS = 2000  # rows of the every-image matrix drawn at once
SORT_LABELS = {"class": "By class", "code": "By code", "original": "Original order"}
REEVALUATE = "conceptlens eval BUNDLE --store"  # evaluates the bundle again and stores every metric in it
# The page's tabs; a visit draws the open one only (the bit matrix, at first), so it is ready sooner.
# The last is "Code and parts" for the CLS baseline, which has no sub-codes.
CODES, IMAGES, SWAP, PARTS = "Codes", "Images that turn it on", "Part swap", "Sub-codes and parts"


@st.cache_data(show_spinner="Computing attention maps ...", max_entries=64)
def database_heatmaps(_loaded, _images, path: str, mtime: float, indices: tuple[int, ...]) -> np.ndarray:
    """Last-layer heatmaps (B, M, H, W) of database images, cached per bundle version and image set: from the
    attention the bundle stores, else (an older bundle) computed by the model from the images its ids name."""
    stored = stored_heatmaps(_loaded, indices)
    if stored is not None:
        return stored
    return heatmaps_for(_loaded, [_images.image(i) for i in indices], "last")


def draw_grid(
    images,
    indices,
    heat: dict,
    concept: int | None,
    names: list[str],
    labels,
    download: str,
    room: int = GRID_ROOM,
) -> None:
    """Database images (found by the ids the bundle stores) with captions, each with the concept's attention
    on top when ``concept`` is set, and a button for them as one labelled PNG named ``download``; an image
    that cannot be found is a grey tile, and the grid says why below it."""
    items, cut, missing = [], [], []
    for i in (int(i) for i in indices):
        found, problem = picture(images, i, TILE)
        if problem:
            missing.append(problem)
        image = display_image(found, TILE)
        if concept is not None:
            image = overlay(image, heat[i][concept], 0.45)
        label = int(labels[i])
        name = str(names[label] if label < len(names) else label)
        caption = tile_caption(i, name)
        if caption.endswith("…"):
            cut.append(f"#{i} {name}")
        items.append((caption, image))
    image_grid(
        items,
        columns=6 if len(items) > 4 else 4,
        width=TILE,
        room=room,
        download=download,
        scale=None if concept is None else ATTENTION_SCALE,
        key=f"hash_png_{download}",
    )
    if cut:
        st.caption(" · ".join(cut))
    show_missing(missing, " in this grid")


@dataclass(frozen=True)
class Database:
    """A ConceptHash bundle's database codes, and how the page names their bits and concepts."""

    codes: np.ndarray  # (N, K) ±1
    labels: np.ndarray  # (N,) class of each database image
    class_names: list[str]
    n_concepts: int
    cls_baseline: bool  # one code from the CLS token: no concepts, no sub-codes
    names: dict[int, str]  # concept -> its part or "no part" (lens.hashing.concept_names; empty: unnamed)
    named_by: str | None  # "part swap", the one matching that names concepts; None when none is named
    bit_names: list[str]

    @classmethod
    def of(cls, loaded) -> Database:
        codes = loaded.db_codes
        n_concepts = n_attended(loaded.config)
        cls_baseline = is_cls_baseline(loaded.config)
        names, named_by = concept_names(loaded.metrics, cls_baseline)
        n_bits = codes.shape[1]
        bit_names = [f"b{k}" for k in range(n_bits)] if cls_baseline else bit_labels(n_bits, n_concepts)
        class_names = list(loaded.config.get("classes") or [])
        return cls(
            codes,
            loaded.db_labels,
            class_names,
            n_concepts,
            cls_baseline,
            names,
            named_by,
            bit_names,
        )

    @property
    def n_images(self) -> int:
        return self.codes.shape[0]

    @property
    def n_bits(self) -> int:
        return self.codes.shape[1]

    @property
    def per(self) -> int:
        """Bits per concept."""
        return bits_per_concept(self.n_bits, self.n_concepts)


def describe(info, db: Database) -> None:
    n_images, n_bits, n_concepts, names = db.n_images, db.n_bits, db.n_concepts, db.names
    if db.cls_baseline:
        st.caption(
            f"**{info.name}** is the **CLS baseline**: {n_images} database images, one {n_bits}-bit code "
            "hashed from the CLS token. It has no concept tokens, so its code has no sub-codes and no part "
            "to name; the attention shown is the CLS token's. A bit is *on* when it is +1."
        )
    else:
        st.caption(
            f"**{info.name}**: {n_images} database images, {n_bits} bits = {n_concepts} concepts × {db.per} "
            "bits. Bit `c1·b0` is the first bit of concept 1's sub-code; a bit is *on* when it is +1."
            + (
                " Concepts are named by the part whose colour change flips their sub-code, or '≈ no part' "
                "when they do no better than chance (the *Part swap* tab gives both scores): "
                + ", ".join(concept_label(m, names) for m in range(n_concepts))
                + "."
                if names
                else ""
            )
        )


def show_bit_matrix(db: Database, ids) -> None:
    st.subheader("The database codes")
    codes, labels = db.codes, db.labels
    views = [PER_CLASS, EVERY_IMAGE]
    view = kept(
        st.radio,
        "Show",
        views,
        index=0 if db.n_images > RAW_ROWS_FIRST else 1,
        horizontal=True,
        key="hash_matrix_view",
        help=f"Per class reads at any size; every image's code is drawn {PAGE_ROWS} rows at a time.",
    )
    if view == PER_CLASS:
        matrix = bit_frequency_figure(codes, labels, db.n_concepts, db.class_names, db.names)
        st.plotly_chart(matrix, key="hash_matrix_classes")
        st.caption(
            "Each row is one class: the share of its database images with each bit on (yellow = all, dark = "
            "none); red lines separate the concepts' sub-codes. A bit that tells classes apart is bright in "
            "some rows and dark in others. Hover a cell for the class, its image count and the share."
        )
        download_figure(matrix, "bit-frequency-per-class", key="hash_matrix_classes_html")
    else:
        mode = kept(
            st.radio, "Sort rows", SORT_MODES, format_func=SORT_LABELS.get, horizontal=True, key="hash_sort"
        )
        order = bit_matrix_order(codes, labels, mode)
        shown = order
        if len(order) > PAGE_ROWS:
            pages = -(-len(order) // PAGE_ROWS)
            page = kept(
                st.number_input,
                f"Rows, {PAGE_ROWS} at a time (page 1 to {pages})",
                min_value=1,
                max_value=pages,
                value=1,
                key="hash_matrix_page",
                valid=lambda p: 1 <= p <= pages,
            )
            shown = order[(page - 1) * PAGE_ROWS : page * PAGE_ROWS]
            st.caption(
                f"Rows {(page - 1) * PAGE_ROWS + 1} to {(page - 1) * PAGE_ROWS + len(shown)} of {len(order)}."
            )
        matrix = bit_matrix_figure(
            codes, labels, shown, db.n_concepts, db.class_names, db.names, class_boundaries=mode == "class"
        )
        st.plotly_chart(matrix, key="hash_matrix")
        st.caption(
            "Yellow = on (+1), dark = off (−1); red lines separate the concepts' sub-codes"
            + ("; white lines separate the classes" if mode == "class" else "")
            + ". Hover a cell for the image and its class."
        )
        download_figure(matrix, "bit-matrix", key="hash_matrix_html")
        download_table(
            codes_table(codes, labels, order, db.class_names, db.bit_names, ids),
            "database_codes",
            key="hash_codes_csv",
        )


def show_images(info, loaded, db: Database) -> None:
    """The images that turn a bit, or a sub-code value, on."""
    st.subheader("Which images turn it on")
    try:
        images, note = bundle_images(loaded, "train", DB_IDS)
    except (ValueError, OSError) as exc:
        st.error(f"The database images of '{info.name}' cannot be opened: {exc}")
        return
    if note:
        st.caption(note)
    codes, labels, names, per = db.codes, db.labels, db.names, db.per
    bit_names, n_images, class_names = db.bit_names, db.n_images, db.class_names
    pick = (
        "Bit"
        if db.cls_baseline
        else kept(st.radio, "Look at", ["Bit", "Sub-code"], horizontal=True, key="hash_pick")
    )
    left, right = st.columns(2)
    with right:
        attend = kept(
            st.checkbox,
            "Overlay the CLS token's attention (last layer)"
            if db.cls_baseline
            else "Overlay the concept's attention (last layer)",
            value=True,
            key="hash_overlay",
        )
        seed = int(
            kept(
                st.number_input,
                "Sample",
                min_value=0,
                value=0,
                step=1,
                key="hash_seed",
                help="Another number draws another sample of images.",
            )
        )

    if pick == "Bit":
        bit = kept(
            left.selectbox,
            "Bit",
            range(db.n_bits),
            format_func=lambda k: bit_names[k] + (f" ({concept_label(k // per, names)})" if names else ""),
            key="hash_bit",
        )
        concept = bit // per
        on, off = images_by_bit(codes, bit, SAMPLE, seed, labels)
        samples = {"on (+1)": on, "off (−1)": off}
    else:
        concept = kept(
            left.selectbox,
            "Sub-code",
            range(db.n_concepts),
            key="hash_subcode",
            format_func=lambda m: f"{concept_label(m, names)} (bits c{m}·b0 … c{m}·b{per - 1})",
        )
        groups = images_by_subcode(codes, concept, db.n_concepts)
        table = subcode_value_table(codes, labels, concept, db.n_concepts, class_names)
        lines = {int(row["value"]): subcode_value_label(row) for _, row in table.iterrows()}
        values = kept(
            st.multiselect,
            f"Values to show ({len(groups)} of {2**per} occur; most frequent first)",
            list(lines),
            default=list(lines)[:FIRST_VALUES],
            format_func=lines.get,
            key=f"hash_values_{concept}",
            valid=lambda chosen: all(v in lines for v in chosen),
            help="Only values some database image has are offered; type to search by value, bits or class.",
        )
        samples = {v: proportional_sample(groups[v], labels, PER_VALUE, seed) for v in values}
    shown = tuple(int(i) for chosen in samples.values() for i in chosen)
    heat = {}
    if attend and shown:
        try:
            maps = database_heatmaps(loaded, images, info.path, info.mtime, shown)
            heat = dict(zip(shown, maps, strict=True))
        except (ValueError, RuntimeError) as exc:
            st.error(f"The attention maps could not be computed: {exc}")
            attend = False
    overlaid = concept if attend else None
    if overlaid is not None:
        show_colour_scale()

    if pick == "Bit":
        n_on = int((codes[:, bit] > 0).sum())
        counts = {"on (+1)": n_on, "off (−1)": n_images - n_on}
        for column, (side, chosen) in zip(st.columns(2, gap="large"), samples.items(), strict=True):
            with column:
                st.markdown(
                    f"**{bit_names[bit]} {side}** — {counts[side]} of {n_images} images "
                    f"(a random sample of {len(chosen)}, drawn in proportion to their classes)"
                )
                if len(chosen) == 0:
                    st.info(f"No database image has {bit_names[bit]} {side.split()[0]}.")
                draw_grid(
                    images,
                    chosen,
                    heat,
                    overlaid,
                    class_names,
                    labels,
                    f"bit-{bit}-{side.split()[0]}-sample{seed}",
                    room=GRID_ROOM // 2,  # the on and off grids share the page
                )
    else:
        st.markdown(
            f"**{concept_label(concept, names).capitalize()}**: {len(groups)} of {2**per} possible "
            "sub-code values occur. "
            "Bits are listed b0 first; the value reads them with b0 as the lowest bit. Each value's images "
            f"are a random sample of up to {PER_VALUE}, drawn in proportion to the classes that have it."
        )
        with st.expander(f"Every value that occurs ({len(table)}), with its images and majority class"):
            st.dataframe(
                table,
                hide_index=True,
                column_config=share_bars("share", "share of database")
                | share_bars("majority share", "majority"),
                key=f"hash_value_table_{concept}",
            )
            download_table(table, f"subcode-values-c{concept}", key=f"hash_values_csv_{concept}")
        if not values:
            st.info("Pick one or more values above to see their images.")
        for value, chosen in samples.items():
            st.markdown(
                f"**value {value}** · bits `{subcode_bits(value, per)}` · {lines[value].split(' · ', 2)[2]}"
            )
            draw_grid(
                images, chosen, heat, overlaid, class_names, labels, f"c{concept}-value{value}-sample{seed}"
            )


def show_part_swap(info, loaded, db: Database) -> None:
    """Which sub-code flips when one part of a bird is repainted (the bundle's stored part-swap matrix)."""
    st.subheader("Repaint one part: which sub-code flips?")
    swap = part_swap(loaded.metrics) if loaded.data.has_parts else None
    if not loaded.data.has_parts:
        st.info(
            "This needs ToyBirds, where a bird can be redrawn with one part repainted; this bundle's data is "
            "not."
        )
        return
    if swap is None:
        st.info(
            f"'{info.name}' predates the part-swap metric: its bundle stores no part-swap matrix. "
            f"`{REEVALUATE.replace('BUNDLE', info.path)}` computes it and stores it in the bundle (weights "
            "untouched); reload the page afterwards to see it here."
        )
        return
    if db.cls_baseline:
        st.caption(
            "Each test bird is redrawn with one part's colour changed and nothing else. The CLS baseline has "
            "one code and no concepts, so the single column is the probability that its whole code changes."
        )
    else:
        st.caption(
            "Each test bird is redrawn with one part's colour changed and nothing else; a cell is the "
            "probability that the concept's sub-code flips when that part (row) is repainted. A concept that "
            "stands for one part is bright in its part's row (outlined: the part it is named after) and dark "
            "elsewhere, and the nuisance tail should flip nothing."
        )
    swap_table, matched = part_swap_table(swap, db.names, db.cls_baseline)
    swap_figure = part_swap_figure(swap_table, matched)
    st.plotly_chart(swap_figure, key="hash_swap")
    download_figure(swap_figure, "part-swap", key="hash_swap_html")
    summary = "" if db.cls_baseline else part_swap_summary(swap, db.names)
    if summary:
        st.markdown(summary[0].upper() + summary[1:])
    download_table(
        swap_table.rename_axis("part repainted").reset_index().round(4), "part-swap", key="hash_swap_csv"
    )
    if db.cls_baseline:
        return
    show_naming(loaded.metrics, "hash_swap_names")
    for table, caption, key in (
        (
            part_swap_split_table(swap),
            "Most repaints make a bird no species has (the 24 species use 24 of the 64 colour "
            "combinations), so the model never saw it in training. A code that only looks the species up "
            "is part-specific on the first row and not on the second; a part code is on both.",
            "hash_swap_split",
        ),
        (
            leak_reading_table(swap),
            "These centres give every sub-code value a colour, so a leak can be read: when repainting one "
            "part flips the sub-code of a concept that codes another part, how often does the new sub-code "
            "name the colour just painted? Often means the concept reads the repainted part; a random flip "
            "to one of the other three values names it about a third of the time.",
            "hash_swap_leaks",
        ),
    ):
        if table is not None:  # None: the bundle's metrics lack it, or its centres code no part colour
            st.caption(caption)
            st.dataframe(table.round(3), hide_index=True, key=key)


def show_subcodes_vs_parts(loaded, db: Database) -> None:
    """What each sub-code tells about the parts' colours (NMI), and where the concepts look (localisation)."""
    cls_baseline, names = db.cls_baseline, db.names
    st.subheader(
        "What the code tells about the parts" if cls_baseline else "What each sub-code tells about the parts"
    )
    table = nmi_table(loaded.metrics, names, cls_baseline) if loaded.data.has_parts else None
    if table is None:
        st.info("This needs data with part annotations (ToyBirds); this bundle's data has none.")
        return
    st.caption(
        "Normalised mutual information between "
        + ("the whole code's value" if cls_baseline else "each concept's sub-code value")
        + " and each part's colour, on the test images (0 = unrelated, 1 = the code determines the "
        "colour). Head, wing and body "
        "colours define the species; the tail's colour is drawn per image, so a high value there means "
        "a sub-code spent on nuisance."
    )
    left, right = st.columns([3, 2])
    with left:
        nmi = nmi_figure(table)
        st.plotly_chart(nmi, key="hash_nmi")
        download_table(table.round(4), "subcode-part-nmi", key="hash_nmi_csv")
        download_figure(nmi, "subcode-part-nmi", key="hash_nmi_html")
    with right:
        if cls_baseline:
            local = naming_table(loaded.metrics, cls_baseline=True)
            if local is not None:
                st.markdown(
                    "**Part swap and localisation** of the whole code: the part whose repaint flips it most, "
                    "and how often the CLS token's most-attended patch lands on that part"
                )
                st.dataframe(local.round(3), hide_index=True, key="hash_local")
                download_table(local.round(4), "localisation", key="hash_local_csv")
        else:
            show_naming(loaded.metrics, "hash_local")


def show_naming(metrics: dict, key: str) -> None:
    """The concepts' names, both scores side by side (flip rate, hit rate), and the rule that names them."""
    table = naming_table(metrics)
    if table is None:
        st.info(
            "No concept is named: this bundle stores no part-swap matrix, and only the part swap names "
            f"concepts (`{REEVALUATE}` computes it)."
        )
        return
    st.markdown("**What each concept is named, and why**")
    st.caption(NAMING_RULE)
    st.dataframe(table.round(3), hide_index=True, key=key)
    download_table(table.round(4), "concept-names", key=f"{key}_csv")


def main() -> None:
    st.title("Hash codes, bit by bit")
    info, loaded = require("concepthash")
    if loaded is None:
        return
    db = Database.of(loaded)
    describe(info, db)
    parts = "Code and parts" if db.cls_baseline else PARTS
    lazy_tabs(
        {
            CODES: lambda: show_bit_matrix(db, loaded.arrays.get(DB_IDS)),
            IMAGES: lambda: show_images(info, loaded, db),
            SWAP: lambda: show_part_swap(info, loaded, db),
            parts: lambda: show_subcodes_vs_parts(loaded, db),
        },
        key="hash_tab",
    )


main()
