"""Concept attention: where each concept token of a ConceptHash model looks in one image, and, for
ToyBirds, what happens to the code when one part of that very bird is repainted.

Concepts are named by the part they are matched to ("concept 1 ≈ wing"); the CLS baseline has one
attention map (the CLS token's) and one code, and is shown as such."""

import hashlib

import numpy as np
import streamlit as st

from lens.bundles import require
from lens.counterfactual import (
    PARTS,
    Counterfactual,
    code_html,
    colour_choices,
    counterfactual,
    flipped_line,
    species_line,
    subcode_changes,
    verdict,
)
from lens.data import data_json, open_data_split
from lens.figures import ATTENTION_SCALE, image_grid, mask_overlay, overlay, show_colour_scale
from lens.hashing import (
    METHODS,
    bits_per_concept,
    center_square,
    code_groups,
    concept_label,
    concept_names,
    display_image,
    encode_images,
    format_code,
    heatmaps_for,
    is_cls_baseline,
    model_view,
    resize_mask,
)
from lens.uploads import IMAGE_TYPES, read_uploads, show_errors

SHOWN = 192  # display size (px) of the image and its overlays
ALL = "All classes"


@st.cache_data(show_spinner="Computing attention maps ...", max_entries=256)
def image_heatmaps(_loaded, _image, path: str, mtime: float, image_key: str, method: str) -> np.ndarray:
    """(M, H, W) heatmaps of one image, cached per bundle version, image and method."""
    return heatmaps_for(_loaded, [_image], method)[0]


@st.cache_data(show_spinner=False, max_entries=64)
def upload_code(_loaded, _image, path: str, mtime: float, image_key: str) -> np.ndarray:
    """The code of an uploaded image (database codes come from the bundle)."""
    return encode_images(_loaded, [_image])[0]


@st.cache_data(show_spinner="Redrawing the bird ...", max_entries=128)
def redraw(_loaded, path: str, mtime: float, index: int, part: str, value: str) -> Counterfactual:
    """Database bird ``index`` redrawn with ``part`` in ``value``, and both codes (per bundle version)."""
    return counterfactual(_loaded, index, part, value)


def reset_index() -> None:
    """A new class starts at its first image (the old index may not belong to it)."""
    st.session_state.pop("attn_index", None)


st.title("Concept attention")
info, loaded = require("concepthash")
if loaded is None:
    st.stop()

codes, labels = loaded.arrays["db_codes"], loaded.arrays["db_labels"]
n_concepts = loaded.model.n_concepts
per = bits_per_concept(codes.shape[1], n_concepts)
class_names = list(loaded.config.get("classes") or [])
cls_baseline = is_cls_baseline(loaded.config)
names, named_by = concept_names(loaded.metrics, cls_baseline)

source = st.radio("Image", ["Database image", "Upload"], horizontal=True, key="attn_source")
image, code, masks, key, title, index = None, None, None, "", "", None
if source == "Database image":
    try:
        split = open_data_split(data_json(loaded.data), "train")
    except (ValueError, OSError) as exc:
        st.error(f"The database images of '{info.name}' cannot be opened: {exc}")
        st.stop()
    left, right = st.columns([1, 2])
    chosen = left.selectbox("Class", [ALL, *class_names], key="attn_class", on_change=reset_index)
    in_class = labels == class_names.index(chosen) if chosen != ALL else np.ones(len(codes), dtype=bool)
    candidates = np.flatnonzero(in_class)
    if len(candidates) == 0:
        st.warning(f"The database has no image of class '{chosen}'.")
        st.stop()
    index = int(
        right.select_slider(
            "Database image", [int(i) for i in candidates], key="attn_index", format_func=lambda i: f"#{i}"
        )
    )
    image, code, key = split.image(index), codes[index], f"db-{index}"
    label = labels[index]
    title = f"#{index} · {class_names[label] if label < len(class_names) else label}"
    if loaded.data.has_parts and hasattr(split, "sample"):
        masks = split.sample(index).masks
else:
    upload = st.file_uploader(
        "Upload an image",
        type=IMAGE_TYPES,
        key="attn_upload",
        help="The model sees the central square, resized to its input size.",
    )
    images, errors = read_uploads(upload)
    show_errors(errors)
    if not images:
        if not errors:
            st.info("Upload a JPEG, PNG, WebP, BMP, GIF or TIFF image to see where each concept looks.")
        st.stop()
    name, full = images[0]
    image = center_square(full)
    key = "upload-" + hashlib.sha1(image.tobytes() + str(image.size).encode()).hexdigest()
    title = name
    try:
        code = upload_code(loaded, image, info.path, info.mtime, key)
    except (ValueError, RuntimeError) as exc:
        st.error(f"The model could not encode '{name}': {exc}")
        st.stop()

controls = st.columns([1, 1, 2])
method_label = controls[0].radio(
    "Attention",
    list(METHODS),
    horizontal=True,
    key="attn_method",
    help="Last layer: the concept token's attention in the final block (what "
    "L_csd acts on). Rollout: attention propagated through every block.",
)
opacity = controls[1].slider("Opacity", 0.0, 1.0, 0.5, 0.05, key="attn_opacity")
try:
    heat = image_heatmaps(loaded, image, info.path, info.mtime, key, METHODS[method_label])
except (ValueError, RuntimeError) as exc:
    st.error(f"The attention maps of '{title}' could not be computed: {exc}")
    st.stop()

shown = model_view(image, 2 * SHOWN)  # twice the shown size: crisp on high-density screens
groups = code_groups(code, n_concepts)
overlays = [overlay(shown, heat[m], opacity) for m in range(n_concepts)]
items = [("image", shown)]
if cls_baseline:
    st.markdown(f"**{title}** — code `{groups[0]}`")
    items.append((f"CLS token = {groups[0]}", overlays[0]))
else:
    st.markdown(f"**{title}** — code `{format_code(code, n_concepts)}`")
    items += [(f"{concept_label(m, names)} = {groups[m]}", overlaid) for m, overlaid in enumerate(overlays)]
stem = title.rsplit(".", 1)[0].replace("#", "").replace(" · ", "-").replace(" ", "_")
image_grid(
    items,
    columns=min(len(items), 6),
    width=SHOWN,
    download=f"concept-attention-{stem}-{METHODS[method_label]}",
    scale=ATTENTION_SCALE,
    key="attn_download",
    label="the overlays",
)
show_colour_scale()
if cls_baseline:
    st.caption(
        f"The CLS baseline has no concept tokens: one {code.shape[0]}-bit code from the CLS token, whose "
        f"{method_label.lower()} attention is shown (bright = attended)."
    )
else:
    st.caption(
        f"{method_label} attention of each concept token (bright = attended), with its sub-code bits "
        f"b0…b{per - 1}"
        + (
            "; '≈ part' names the part the concept is matched to "
            + (
                "(the part whose colour change flips its sub-code)."
                if named_by == "part swap"
                else "(the part its attention points at on the test images)."
            )
            if names
            else "."
        )
    )

if masks is not None:
    st.markdown("**Part masks** (ToyBirds ground truth; the rest of the image is faded)")
    # Fade everything outside the part: a tint alone vanishes on a part of the same colour.
    part_items = [
        (part, mask_overlay(shown, ~resize_mask(masks[part], shown.size), (255, 255, 255), 0.8))
        for part in PARTS
        if part in masks
    ]
    image_grid(
        part_items,
        columns=min(len(items), 6),
        width=SHOWN,
        download=f"part-masks-{stem}",
        key="attn_masks_png",
        label="the part masks",
    )


# --- counterfactual: the same bird with one part repainted ----------------------------------------
if index is not None and masks is not None:
    st.divider()
    st.subheader("Repaint one part of this bird: which sub-code flips?")
    st.caption(
        "The very same scene is redrawn with one part in another colour (pose, background and every other "
        "detail unchanged) and both birds are encoded. ConceptHash claims each sub-code stands for one part: "
        "repainting the wing should flip only the wing's sub-code, and repainting the tail, which is not a "
        "species trait, should flip nothing."
        + (
            " The CLS baseline has one code, so only whether that code changes can be seen."
            if cls_baseline
            else ""
        )
    )
    current = split.sample(index).part_values
    pick = st.columns([1, 1])
    part = pick[0].radio("Repaint the", list(PARTS), horizontal=True, key="attn_cf_part")
    value = pick[1].selectbox(
        f"New {part} colour (now {current[part]})",
        colour_choices(part, current),
        key=f"attn_cf_colour_{index}_{part}",
    )
    try:
        cf = redraw(loaded, info.path, info.mtime, index, part, value)
        cf_heat = image_heatmaps(
            loaded,
            cf.redrawn.image,
            info.path,
            info.mtime,
            f"db-{index}-{part}-{value}",
            METHODS[method_label],
        )
    except (ValueError, RuntimeError) as exc:
        st.error(f"The repainted bird could not be drawn or encoded: {exc}")
        st.stop()
    changes = subcode_changes(cf.before, cf.after, n_concepts, names, cls_baseline)
    st.markdown(f"**{species_line(cf.original, cf.redrawn, part)}**")

    redrawn = display_image(cf.redrawn.image, 2 * SHOWN)
    before_side, after_side = st.columns(2, gap="large")
    with before_side:
        st.image(
            display_image(cf.original.image, 2 * SHOWN),
            caption=f"Original · {cf.original.species_name}",
            width=SHOWN,
        )
        st.markdown(code_html(changes, "before"), unsafe_allow_html=True)
    with after_side:
        st.image(
            redrawn,
            caption=f"Redrawn: {part} {current[part]} → {value} · {cf.redrawn.species_name}",
            width=SHOWN,
        )
        st.markdown(code_html(changes, "after"), unsafe_allow_html=True)
    st.markdown(flipped_line(changes))
    as_claimed, sentence = verdict(changes, part, cls_baseline)
    (st.success if as_claimed else st.warning)(sentence)

    flipped = {c.concept for c in changes if c.flipped}
    label = (lambda m: "CLS token") if cls_baseline else (lambda m: concept_label(m, names))
    rows = [(f"before · {label(m)}", overlay(shown, heat[m], opacity)) for m in range(n_concepts)]
    rows += [
        (
            f"after · {label(m)}" + (" · ⟲ flipped" if m in flipped else ""),
            overlay(redrawn, cf_heat[m], opacity),
        )
        for m in range(n_concepts)
    ]
    st.markdown(f"**{method_label} attention before and after the repaint**")
    image_grid(
        rows,
        columns=n_concepts if n_concepts > 1 else 2,
        width=SHOWN,
        download=f"repaint-{stem}-{part}-{value}-{METHODS[method_label]}",
        scale=ATTENTION_SCALE,
        key="attn_cf_download",
        label="the overlays before and after",
    )
