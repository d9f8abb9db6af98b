"""Concept attention: where each concept token of a ConceptHash model looks in one image, and, for
ToyBirds, what happens to the code when one part of that very bird is repainted.

Concepts are named by the part they are matched to ("concept 1 ≈ wing"); the CLS baseline has one
attention map (the CLS token's) and one code, and is shown as such. A database image is drawn from the
bundle's arrays (its code, and its last-layer attention where the bundle stores it); the model is loaded only
for an upload, the rollout method, a bundle without stored attention, or the repaint panel once asked. An
upload that looks unlike the training images gets the out-of-distribution warning (lens.ood)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import streamlit as st
from PIL import Image

from lens.bundles import require
from lens.counterfactual import (
    PARTS,
    Counterfactual,
    changes_table,
    code_html,
    colour_choices,
    counterfactual,
    flipped_line,
    species_line,
    subcode_changes,
    verdict,
)
from lens.data import bundle_images, missing_tile, picture
from lens.figures import (
    ATTENTION_SCALE,
    grid_columns,
    image_grid,
    mask_overlay,
    overlay,
    show_colour_scale,
)
from lens.hashing import (
    DB_IDS,
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
    n_attended,
    resize_mask,
    stored_heatmaps,
)
from lens.ood import show_upload_check, upload_verdict
from lens.picker import pick_image
from lens.uploads import IMAGE_TYPES, read_uploads, show_errors

SHOWN = 192  # display size (px) of the image and its overlays
REPAINT_ASKED = "attn_cf_asked"  # set once the person asks for the repaint panel (it runs the model)


@st.cache_data(show_spinner="Computing attention maps ...", max_entries=256)
def image_heatmaps(_loaded, _image, path: str, mtime: float, image_key: str, method: str) -> np.ndarray:
    """(M, H, W) heatmaps of one image, cached per bundle version, image and method."""
    return heatmaps_for(_loaded, [_image], method)[0]


def picked_heatmaps(info, loaded, picked: Picked, method: str) -> np.ndarray:
    """(M, H, W) heatmaps of the picked image: a database image's last-layer maps from the attention the
    bundle stores (no model), else (an upload, rollout, an older bundle) computed by the model."""
    if picked.index is not None and method == "last":
        stored = stored_heatmaps(loaded, [picked.index])
        if stored is not None:
            return stored[0]
    if picked.image is None:
        raise ValueError(f"{picked.missing} The {method} maps need the image itself")
    return image_heatmaps(loaded, picked.image, info.path, info.mtime, picked.key, method)


@st.cache_data(show_spinner=False, max_entries=64)
def upload_code(_loaded, _image, path: str, mtime: float, image_key: str) -> np.ndarray:
    """The code of an uploaded image (database codes come from the bundle)."""
    return encode_images(_loaded, [_image])[0]


@st.cache_data(show_spinner="Redrawing the bird ...", max_entries=128)
def redraw(_loaded, path: str, mtime: float, index: int, part: str, value: str) -> Counterfactual:
    """Database bird ``index`` redrawn with ``part`` in ``value``, and both codes (per bundle version)."""
    return counterfactual(_loaded, index, part, value)


def ask_for_repaint() -> None:
    """The repaint panel runs the model from now on, in this session."""
    st.session_state[REPAINT_ASKED] = True


@dataclass(frozen=True)
class Naming:
    """How the page names a model's concepts."""

    n_concepts: int
    cls_baseline: bool  # one code from the CLS token: no concepts, no sub-codes
    names: dict[int, str]  # concept -> its part or "no part" (lens.hashing.concept_names; empty: unnamed)
    named_by: str | None  # "part swap", the one matching that names concepts; None when none is named

    @classmethod
    def of(cls, loaded) -> Naming:
        cls_baseline = is_cls_baseline(loaded.config)
        names, named_by = concept_names(loaded.metrics, cls_baseline)
        return cls(n_attended(loaded.config), cls_baseline, names, named_by)


@dataclass(frozen=True)
class Picked:
    """The image the page looks at: a database image or an upload."""

    image: Image.Image | None  # None: a database image its stored id no longer finds (``missing`` says why)
    code: np.ndarray  # its ±1 code
    key: str  # the cache key of its heatmaps
    title: str
    index: int | None = None  # its row in the database; None for an upload
    images: Any = None  # the database images, by the ids the bundle stores (core.data.stored.StoredImages)
    masks: dict[str, np.ndarray] | None = None  # its ToyBirds part masks, when the data has them
    missing: str | None = None  # why the image cannot be shown (its stored code and attention still are)


@dataclass(frozen=True)
class Attention:
    """The attention maps drawn for the picked image, which the repaint panel draws again."""

    heat: np.ndarray  # (M, H, W)
    shown: Image.Image  # the model's view of the image, at twice the display size
    opacity: float
    method_label: str
    stem: str  # file-name stem of the downloads
    columns: int  # tiles per row


def pick_database_image(info, loaded) -> Picked | None:
    """A database image picked by class and row (found by the id the bundle stores), or None after a
    message."""
    codes, labels = loaded.db_codes, loaded.db_labels
    class_names = list(loaded.config.get("classes") or [])
    try:
        images, note = bundle_images(loaded, "train", DB_IDS)
    except (ValueError, OSError) as exc:
        st.error(f"The database images of '{info.name}' cannot be opened: {exc}")
        return None
    if note:
        st.caption(note)
    index = pick_image(
        images, labels, class_names, key="attn_index", class_key="attn_class", what="database image"
    )
    if index is None:
        return None
    label = labels[index]
    image, missing = picture(images, index)
    if missing:
        st.warning(missing)
    return Picked(
        image=image,
        code=codes[index],
        key=f"db-{images.ids[index]}",
        title=f"#{index} · {class_names[label] if label < len(class_names) else label}",
        index=index,
        images=images,
        masks=images.sample(index).masks if loaded.data.has_parts and image is not None else None,
        missing=missing,
    )


def pick_upload(info, loaded) -> Picked | None:
    """An uploaded image (its central square) and its code, or None after a message."""
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
        return None
    name, full = images[0]
    image = center_square(full)
    key = "upload-" + hashlib.sha1(image.tobytes() + str(image.size).encode()).hexdigest()
    try:
        code = upload_code(loaded, image, info.path, info.mtime, key)
    except (ValueError, RuntimeError) as exc:
        st.error(f"The model could not encode '{name}': {exc}")
        return None
    verdict = upload_verdict(info, loaded, image, key)
    show_upload_check(name, [(info, verdict)], "its code and the concept heatmaps below are unreliable")
    return Picked(image=image, code=code, key=key, title=name)


def show_attention(info, loaded, picked: Picked, naming: Naming) -> Attention | None:
    """Each concept's attention over the picked image, or None after a message."""
    n_concepts, names, code, title = naming.n_concepts, naming.names, picked.code, picked.title
    controls = st.columns([1, 1, 2])
    method_label = controls[0].radio(
        "Attention",
        list(METHODS),
        horizontal=True,
        key="attn_method",
        help="Last layer: the concept token's attention in the final block (what "
        "L_csd acts on). Rollout: attention propagated through every block the model runs; concept tokens "
        "that join only the last blocks start where they join.",
    )
    opacity = controls[1].slider("Opacity", 0.0, 1.0, 0.5, 0.05, key="attn_opacity")
    try:
        heat = picked_heatmaps(info, loaded, picked, METHODS[method_label])
    except ValueError as exc:
        st.error(f"The attention maps of '{title}' could not be computed: {exc}")
        return None
    except RuntimeError:  # PyTorch's own failure: its message names tensor shapes, not what went wrong here
        st.error(f"The model could not compute the {method_label.lower()} attention maps of '{title}'.")
        return None

    # Twice the shown size: crisp on high-density screens; a grey tile where the stored id finds no image.
    shown = model_view(picked.image if picked.image is not None else missing_tile(2 * SHOWN), 2 * SHOWN)
    groups = code_groups(code, n_concepts)
    overlays = [overlay(shown, heat[m], opacity) for m in range(n_concepts)]
    items = [("image", shown)]
    if naming.cls_baseline:
        st.markdown(f"**{title}** — code `{groups[0]}`")
        items.append((f"CLS token = {groups[0]}", overlays[0]))
    else:
        st.markdown(f"**{title}** — code `{format_code(code, n_concepts)}`")
        items += [
            (f"{concept_label(m, names)} = {groups[m]}", overlaid) for m, overlaid in enumerate(overlays)
        ]
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
    if naming.cls_baseline:
        st.caption(
            f"The CLS baseline has no concept tokens: one {code.shape[0]}-bit code from the CLS token, whose "
            f"{method_label.lower()} attention is shown (bright = attended)."
        )
    else:
        per = bits_per_concept(loaded.db_codes.shape[1], n_concepts)
        st.caption(
            f"{method_label} attention of each concept token (bright = attended), with its sub-code bits "
            f"b0…b{per - 1}"
            + (
                "; '≈ part' names the part whose colour change flips its sub-code, '≈ no part' a concept "
                "that does no better than chance (Hash codes → Part swap gives both scores)."
                if names
                else "."
            )
        )
    return Attention(heat, shown, opacity, method_label, stem, min(len(items), 6))


def show_part_masks(masks: dict[str, np.ndarray], attention: Attention) -> None:
    st.markdown("**Part masks** (ToyBirds ground truth; the rest of the image is faded)")
    shown = attention.shown
    # Fade everything outside the part: a tint alone vanishes on a part of the same colour.
    part_items = [
        (part, mask_overlay(shown, ~resize_mask(masks[part], shown.size), (255, 255, 255), 0.8))
        for part in PARTS
        if part in masks
    ]
    image_grid(
        part_items,
        columns=attention.columns,
        width=SHOWN,
        download=f"part-masks-{attention.stem}",
        key="attn_masks_png",
        label="the part masks",
    )


def show_repaint(info, loaded, picked: Picked, attention: Attention, naming: Naming) -> None:
    """The same bird with one part repainted: which sub-code flips, and the attention before and after."""
    index, method_label = picked.index, attention.method_label
    n_concepts, names, cls_baseline = naming.n_concepts, naming.names, naming.cls_baseline
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
    current = picked.images.sample(index).part_values
    pick = st.columns([1, 1])
    part = pick[0].radio("Repaint the", list(PARTS), horizontal=True, key="attn_cf_part")
    value = pick[1].selectbox(
        f"New {part} colour (now {current[part]})",
        colour_choices(part, current),
        key=f"attn_cf_colour_{index}_{part}",
    )
    if not st.session_state.get(REPAINT_ASKED):
        # Encoding the birds needs the model: it loads when the person asks, not on the page's first draw.
        st.button(
            "Redraw and encode both birds",
            key="attn_cf_go",
            on_click=ask_for_repaint,
            help="Runs the model on the original and the repainted bird (loading it takes a few seconds the "
            "first time); after that the panel follows every part and colour you pick.",
        )
        return
    try:
        cf = redraw(loaded, info.path, info.mtime, picked.images.toybirds_index(index), part, value)
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
        return
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
    st.dataframe(changes_table(changes), hide_index=True, key="attn_cf_table")

    flipped = {c.concept for c in changes if c.flipped}
    label = (lambda m: "CLS token") if cls_baseline else (lambda m: concept_label(m, names))
    shown, heat, opacity = attention.shown, attention.heat, attention.opacity
    before = [(f"before · {label(m)}", overlay(shown, heat[m], opacity)) for m in range(n_concepts)]
    after = [
        (
            f"after · {label(m)}" + (" · ⟲ flipped" if m in flipped else ""),
            overlay(redrawn, cf_heat[m], opacity),
        )
        for m in range(n_concepts)
    ]
    columns = max(n_concepts, 2)
    if grid_columns(columns, SHOWN) < columns:
        # More concepts than fit in a row: each concept's before and after side by side, pairs wrapping.
        rows = [tile for pair in zip(before, after, strict=True) for tile in pair]
        columns = max(2, grid_columns(columns, SHOWN) // 2 * 2)
    else:
        rows = before + after
    st.markdown(f"**{method_label} attention before and after the repaint**")
    image_grid(
        rows,
        columns=columns,
        width=SHOWN,
        download=f"repaint-{attention.stem}-{part}-{value}-{METHODS[method_label]}",
        scale=ATTENTION_SCALE,
        key="attn_cf_download",
        label="the overlays before and after",
    )


def main() -> None:
    st.title("Concept attention")
    info, loaded = require("concepthash")
    if loaded is None:
        return
    naming = Naming.of(loaded)
    source = st.radio("Image", ["Database image", "Upload"], horizontal=True, key="attn_source")
    picked = pick_database_image(info, loaded) if source == "Database image" else pick_upload(info, loaded)
    if picked is None:
        return
    attention = show_attention(info, loaded, picked, naming)
    if attention is None:
        return
    if picked.masks is not None:
        show_part_masks(picked.masks, attention)
        if picked.index is not None:
            show_repaint(info, loaded, picked, attention, naming)
    elif picked.index is not None and not loaded.data.has_parts:
        st.info(
            "Part masks and repainting one part of the bird: this needs ToyBirds, whose birds come with a "
            "mask per part and can be redrawn; this bundle's data has neither."
        )


main()
