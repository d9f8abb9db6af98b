"""Hash codes, bit by bit: the database codes as a bit matrix, the images that turn a bit or a
sub-code on, and how much each sub-code tells about each ToyBirds part."""

import json

import numpy as np
import streamlit as st

from core.data.spec import DataSpec, open_split
from lens.bundles import require
from lens.figures import download_figure, download_table, image_grid, overlay
from lens.hashing import (
    SORT_MODES,
    balanced_sample,
    bit_labels,
    bit_matrix_figure,
    bit_matrix_order,
    bits_per_concept,
    concept_parts,
    display_image,
    heatmaps_for,
    images_by_bit,
    images_by_subcode,
    localisation_table,
    nmi_figure,
    nmi_table,
    subcode_bits,
)

SAMPLE = 12  # images per side (bit on / off)
PER_VALUE = 6  # images per sub-code value
MAX_VALUES = 16  # sub-code values drawn (the most frequent ones)
TILE = 112  # px
SORT_LABELS = {"class": "By class", "code": "By code", "original": "Original order"}


@st.cache_resource(show_spinner=False, max_entries=4)
def database(data_json: str):
    """The bundle's database split (ToyBirds renders on demand and keeps what it rendered)."""
    return open_split(DataSpec.from_dict(json.loads(data_json)), "train")


@st.cache_data(show_spinner="Computing attention maps ...", max_entries=64)
def database_heatmaps(_loaded, _split, path: str, mtime: float, indices: tuple[int, ...]) -> np.ndarray:
    """Last-layer heatmaps (B, M, H, W) of database images, cached per bundle version and image set."""
    return heatmaps_for(_loaded, [_split.image(i) for i in indices], "last")


def draw_grid(split, indices, heat: dict, concept: int | None, names: list[str], labels) -> None:
    """Database images with captions, each with the concept's attention on top when ``concept`` is set."""
    items = []
    for i in (int(i) for i in indices):
        image = display_image(split.image(i), TILE)
        if concept is not None:
            image = overlay(image, heat[i][concept], 0.45)
        label = int(labels[i])
        items.append((f"#{i} {names[label] if label < len(names) else label}", image))
    image_grid(items, columns=6 if len(items) > 4 else 4)


st.title("Hash codes, bit by bit")
info, loaded = require("concepthash")
if loaded is None:
    st.stop()

codes, labels = loaded.arrays["db_codes"], loaded.arrays["db_labels"]
n_images, n_bits = codes.shape
n_concepts = loaded.model.n_concepts
per = bits_per_concept(n_bits, n_concepts)
class_names = list(loaded.config.get("classes") or [])
parts = concept_parts(loaded.metrics)
bit_names = bit_labels(n_bits, n_concepts)
st.caption(
    f"**{info.name}**: {n_images} database images, {n_bits} bits = {n_concepts} concepts × {per} bits. "
    "Bit `c1·b0` is the first bit of concept 1's sub-code; a bit is *on* when it is +1."
)

# --- the bit matrix -------------------------------------------------------------------------------
st.subheader("The database codes")
mode = st.radio("Sort rows", SORT_MODES, format_func=SORT_LABELS.get, horizontal=True, key="hash_sort")
matrix = bit_matrix_figure(codes, labels, bit_matrix_order(codes, labels, mode), n_concepts, class_names)
st.plotly_chart(matrix, key="hash_matrix")
st.caption(
    "Yellow = on (+1), dark = off (−1); red lines separate the concepts' sub-codes. "
    "Hover a cell for the image and its class."
)
download_figure(matrix, "bit-matrix", key="hash_matrix_html")

# --- images by bit or by sub-code -----------------------------------------------------------------
st.subheader("Which images turn it on")
try:
    split = database(json.dumps(loaded.data.to_dict(), sort_keys=True))
except (ValueError, OSError) as exc:
    split = None
    st.error(f"The database images of '{info.name}' cannot be opened: {exc}")

if split is not None:
    pick = st.radio("Look at", ["Bit", "Sub-code"], horizontal=True, key="hash_pick")
    left, right = st.columns(2)
    with right:
        attend = st.checkbox("Overlay the concept's attention (last layer)", value=True, key="hash_overlay")
        seed = int(
            st.number_input(
                "Sample",
                min_value=0,
                value=0,
                step=1,
                key="hash_seed",
                help="Another number draws another sample of images.",
            )
        )

    if pick == "Bit":
        bit = left.selectbox("Bit", range(n_bits), format_func=bit_names.__getitem__, key="hash_bit")
        concept = bit // per
        on, off = images_by_bit(codes, bit, SAMPLE, seed, labels)
        samples = {"on (+1)": on, "off (−1)": off}
    else:
        concept = left.selectbox(
            "Sub-code",
            range(n_concepts),
            key="hash_subcode",
            format_func=lambda m: (
                f"concept {m} (bits c{m}·b0 … c{m}·b{per - 1})"
                + (f" — localises on the {parts[m]}" if m in parts else "")
            ),
        )
        groups = images_by_subcode(codes, concept, n_concepts)
        values = sorted(sorted(groups, key=lambda v: (-len(groups[v]), v))[:MAX_VALUES])
        samples = {v: balanced_sample(groups[v], labels, PER_VALUE, seed) for v in values}

    shown = tuple(int(i) for chosen in samples.values() for i in chosen)
    heat = {}
    if attend and shown:
        try:
            maps = database_heatmaps(loaded, split, info.path, info.mtime, shown)
            heat = dict(zip(shown, maps, strict=True))
        except (ValueError, RuntimeError) as exc:
            st.error(f"The attention maps could not be computed: {exc}")
            attend = False
    overlaid = concept if attend else None

    if pick == "Bit":
        n_on = int((codes[:, bit] > 0).sum())
        counts = {"on (+1)": n_on, "off (−1)": n_images - n_on}
        for column, (side, chosen) in zip(st.columns(2, gap="large"), samples.items(), strict=True):
            with column:
                st.markdown(
                    f"**{bit_names[bit]} {side}** — {counts[side]} of {n_images} images "
                    f"(a sample of {len(chosen)}, balanced across classes)"
                )
                if len(chosen) == 0:
                    st.info(f"No database image has {bit_names[bit]} {side.split()[0]}.")
                draw_grid(split, chosen, heat, overlaid, class_names, labels)
    else:
        st.markdown(
            f"**Concept {concept}**: {len(groups)} of {2**per} possible sub-code values occur. "
            "Bits are listed b0 first; the value reads them with b0 as the lowest bit."
        )
        if len(groups) > MAX_VALUES:
            st.caption(f"Showing the {MAX_VALUES} most frequent values.")
        for value, chosen in samples.items():
            count = len(groups[value])
            st.markdown(f"**value {value}** · bits `{subcode_bits(value, per)}` · {count} images")
            draw_grid(split, chosen, heat, overlaid, class_names, labels)

# --- sub-codes vs parts ---------------------------------------------------------------------------
st.subheader("What each sub-code tells about the parts")
table = nmi_table(loaded.metrics) if loaded.data.has_parts else None
if table is None:
    st.info("This needs data with part annotations (ToyBirds); this bundle's data has none.")
else:
    st.caption(
        "Normalised mutual information between each concept's sub-code value and each part's colour, "
        "on the test images (0 = unrelated, 1 = the sub-code determines the colour). Head, wing and body "
        "colours define the species; the tail's colour is drawn per image, so a high value there means "
        "a sub-code spent on nuisance."
    )
    left, right = st.columns([3, 2])
    with left:
        nmi = nmi_figure(table)
        st.plotly_chart(nmi, key="hash_nmi")
        download_table(table.round(4), "subcode-part-nmi", key="hash_nmi_csv")
    local = localisation_table(loaded.metrics)
    if local is not None:
        with right:
            st.markdown("**Localisation** (pointing game: is the concept's most-attended patch on the part?)")
            st.dataframe(local.round(3), hide_index=True)
            download_table(local.round(4), "localisation", key="hash_local_csv")
