"""Open-world concept labels: your own images, the offline ConSE model, a CEIR bundle or a real CLIP."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from lens.bundles import available, load_model, usable
from lens.figures import download_table, share_bars
from lens.labels import (
    CONSE,
    FALLBACK_BANK,
    MAX_BANK_BYTES,
    RAW_TEMPLATE,
    SHIPPED_BANKS,
    BackboneOfflineError,
    ConceptBank,
    ConceptBankError,
    candidates_table,
    decode_bank_upload,
    image_digest,
    label,
    labels_table,
    load_bank,
    load_clip,
    load_conse,
    parse_concepts,
    scoring_sentence,
    similarity_model,
)
from lens.labels import MODULES as LABEL_MODULES
from lens.startup import start_imports
from lens.uploads import IMAGE_TYPES, load_sample_photo, read_uploads, sample_photos, show_errors, thumbnail

if TYPE_CHECKING:
    from lens.labels import LabelReport

REAL_CLIP = "real-clip"
OWN_BANK = "own"
PASTED_BANK = "paste"
UPLOADED_BANK = "upload"
SHOWN_IMAGES = 12  # per-image panels; the long table holds every image
MAX_PASTED_CHARS = 20_000  # ~1,500 concepts; 10,000 pasted lines froze the browser tab for over a minute


@dataclass(frozen=True)
class Model:
    """A loaded model to label with."""

    model: Any  # what label_images takes: a loaded CEIR bundle, or a backbone as a similarity labeller
    words: str  # how the report names it ("the CEIR bundle 'x'")


@dataclass(frozen=True)
class ModelChoice:
    """The model chosen to label with, loaded only when there is something to label: the page draws without
    PyTorch after a restart, and a person who only looks pays for no model."""

    load: Callable[[], Model | None]  # None after an st.error saying why
    key: str  # the labels' cache key for this model
    has_own_bank: bool  # a CEIR bundle labels with its own concepts; ConSE and CLIP have none


@dataclass(frozen=True)
class BankChoice:
    """The concepts chosen to label with: a concept bank, or the model's own concepts (``bank`` None)."""

    bank: ConceptBank | None = None

    @property
    def concepts(self) -> tuple[str, ...] | None:
        return tuple(self.bank.concepts) if self.bank is not None else None

    @property
    def source(self) -> str:
        return self.bank.source if self.bank is not None else ""

    @property
    def template(self) -> str:
        return self.bank.template if self.bank is not None else RAW_TEMPLATE


@st.cache_resource(
    show_spinner="Loading CLIP: weights download on first use (offline, it says so within two seconds) ...",
    max_entries=2,
)
def cached_clip(name: str, tag: str):
    return load_clip(name, tag)


@st.cache_resource(show_spinner="Loading the offline ConSE model (EfficientNet-Lite0 + MiniLM) ...")
def cached_conse():
    """ConSE, once per process, ready to label (see :func:`lens.labels.load_conse`)."""
    return load_conse()


@st.cache_data(show_spinner=False, max_entries=64)
def cached_labels(
    model_key: str,
    _model,
    bank: tuple[str, ...] | None,
    bank_source: str,
    bank_template: str,
    top_k: int,
    image_keys: tuple[tuple[str, str], ...],
    _images,
) -> LabelReport:
    return label(_model, _images, top_k, bank, bank_source, bank_template)


def bank_label(option: str) -> str:
    names = {
        OWN_BANK: "The model's own concepts",
        PASTED_BANK: "Paste a list",
        UPLOADED_BANK: "Upload a text file",
    }
    return names.get(option, f"Shipped bank: {option}")


def collect_images() -> tuple[list[tuple[str, object]], list[str]]:
    """Uploaded and sample images, and one error sentence per unreadable upload."""
    left, right = st.columns(2)
    files = left.file_uploader("Upload images", type=IMAGE_TYPES, accept_multiple_files=True, key="ow_upload")
    samples = right.multiselect(
        "…or pick sample photos (shipped inside installed packages)", list(sample_photos()), key="ow_samples"
    )
    images, errors = read_uploads(files)
    images += [(label, load_sample_photo(label)) for label in samples]
    return images, errors


def choose_model() -> ModelChoice | None:
    """The chosen model, or None after a message saying why there is none."""
    bundles = {b.path: b for b in available("ceir")}
    options = [CONSE, *bundles, REAL_CLIP]
    # Uploads are real photos: the offline ConSE model is the default (the ToyBirds bundles know birds).
    names = {
        CONSE: "Offline ConSE model for real photos (EfficientNet-Lite0 + MiniLM)",
        REAL_CLIP: "A real CLIP by open_clip name",
    }
    choice = st.radio(
        "Model",
        options,
        index=0,
        key="ow_model",
        format_func=lambda o: names.get(o, f"CEIR bundle: {Path(o).name}"),
    )
    if choice == CONSE:
        return choose_conse()
    if choice != REAL_CLIP:
        info = bundles[choice]
        if not usable(info):  # a damaged bundle is named when chosen, not after the first upload
            return None

        def load_ceir() -> Model | None:
            loaded = load_model(info)
            return None if loaded is None else Model(loaded, f"the CEIR bundle '{info.name}'")

        return ModelChoice(load_ceir, f"{info.path}@{info.mtime}", True)
    return choose_real_clip()


def load_conse_model() -> Model | None:
    try:
        backbone = cached_conse()
    except ValueError as exc:  # BackboneError: a missing package, named with its pip install
        st.error(str(exc))
        return None
    return Model(similarity_model(backbone), f"the offline model {backbone.describe()}")


def choose_conse() -> ModelChoice:
    st.caption(
        "ConSE (Norouzi et al. 2014): the ImageNet classifier's most probable classes, mixed by probability, "
        "in the text space of all-MiniLM-L6-v2; nothing downloads. Labels are cosine similarities there."
    )
    return ModelChoice(load_conse_model, CONSE, False)


def choose_real_clip() -> ModelChoice | None:
    left, right, button = st.columns([3, 2, 1], vertical_alignment="bottom")
    name = left.text_input("open_clip model name", "ViT-B-32", key="ow_clip_name").strip()
    tag = right.text_input("Pretrained tag", "openai", key="ow_clip_tag").strip()
    if button.button("Load", key="ow_clip_load"):
        st.session_state["ow_clip_wanted"] = (name, tag)
        st.session_state.pop("ow_clip_failure", None)
    st.caption(
        "The weights download on first use, which needs internet; later they come from the local "
        "cache. A real CLIP has no trained CEIR projection, so labels are CLIP similarities."
    )
    wanted = st.session_state.get("ow_clip_wanted")
    if wanted != (name, tag):
        st.info("Press **Load** to use this CLIP.")
        return None
    failure = st.session_state.get("ow_clip_failure")
    if failure is None:
        try:
            backbone = cached_clip(name, tag)
        except BackboneOfflineError as exc:  # already one whole sentence: not cached, and no network
            failure = str(exc)
        except Exception as exc:  # noqa: BLE001 - downloads fail in many ways; each is one sentence
            failure = (
                f"The CLIP model {name}:{tag or 'random'} could not be loaded: {str(exc).rstrip('.')}; "
                "check the name and tag, and that this machine is online for a first download."
            )
        if failure is not None:
            st.session_state["ow_clip_failure"] = failure  # remembered: no second attempt until Load
    if failure is not None:
        st.error(failure)
        return None
    if not tag:
        st.warning("No pretrained tag: the CLIP has random weights, so its labels mean nothing.")
    model = Model(similarity_model(backbone), f"CLIP {name}:{tag or 'random'}")
    return ModelChoice(lambda: model, f"clip:{name}:{tag}", False)


def choose_bank(has_own_bank: bool) -> BankChoice | None:
    """The chosen concepts, or None after a message saying why there are none."""
    options = [OWN_BANK, *SHIPPED_BANKS, PASTED_BANK, UPLOADED_BANK]
    choice = st.selectbox("Concept bank", options, format_func=bank_label, key="ow_bank")
    try:
        if choice == OWN_BANK:
            if has_own_bank:
                return BankChoice()
            st.info(
                f"This model (ConSE or a real CLIP) has no concept bank of its own; the shipped "
                f"'{FALLBACK_BANK}' bank is used."
            )
            return BankChoice(load_bank(FALLBACK_BANK))
        if choice in SHIPPED_BANKS:
            return BankChoice(load_bank(choice))
        if choice == PASTED_BANK:
            text = st.text_area(
                "Concepts, one per line",
                key="ow_bank_text",
                height=150,
                placeholder="striped wings\nred head\nlong tail",
                max_chars=MAX_PASTED_CHARS,
            )
            if len(text) >= MAX_PASTED_CHARS:  # the browser cuts a longer paste at the limit
                st.warning(
                    f"The pasted list reached the limit of {MAX_PASTED_CHARS:,} characters; anything after "
                    "that was cut off (its last line may be cut too). Upload a longer list as a file."
                )
            bank = parse_concepts(text, source="pasted list")
        else:
            file = st.file_uploader(
                "Concept list (UTF-8 text, one concept per line)", type=["txt"], key="ow_bank_file"
            )
            if file is None:
                st.info("Upload a concept list to label with it.")
                return None
            bank = parse_concepts(
                decode_bank_upload(file.name, file.getvalue(), MAX_BANK_BYTES), source=file.name
            )
    except (ConceptBankError, ValueError) as exc:
        st.error(str(exc))
        return None
    if bank.issues:
        shown = "; ".join(bank.issues[:8]) + (
            f"; and {len(bank.issues) - 8} more" if len(bank.issues) > 8 else ""
        )
        st.warning(f"{len(bank.issues)} line(s) of the concept list were dropped: {shown}.")
    st.caption(f"{len(bank)} concepts from {bank.source}.")
    return BankChoice(bank)


def show_results(report: LabelReport, images) -> None:
    table = labels_table(report)
    labelled = {image.file: image for image in report.images}
    for name, image in images[:SHOWN_IMAGES]:
        left, right = st.columns([1, 3])
        left.image(thumbnail(image, 150), caption=name, width=150)
        rows = table[table["image"] == name].drop(columns="image")
        warning = labelled[name].warning if name in labelled else None
        if warning:
            right.warning(f"{name}: {warning}.")
        if rows.empty and name in labelled:
            right.info(f"{name}: {report.note_for(labelled[name])}.")
        else:
            right.table(rows.round({"score": 3}).set_index("rank"))  # a few rows: a plain table draws fastest
    if len(images) > SHOWN_IMAGES:
        st.caption(f"Showing {SHOWN_IMAGES} of {len(images)} images; the table below holds all of them.")
    if table.empty:
        st.info("No image has a label; the note beside each image says why.")
        return
    st.markdown("**All labels**")
    st.dataframe(table, hide_index=True, key="ow_labels")
    download_table(table, "concept_labels", key="ow_dl_labels")
    if len(report.images) > 1:
        show_candidates(report)


def show_candidates(report: LabelReport) -> None:
    """The batch summary: concepts by how many images carry them, flagged images left out unless asked."""
    st.subheader("Candidate labels for the batch")
    include = bool(report.flagged) and st.checkbox(
        "Count the images flagged as unlike the training images too",
        key="ow_include_flagged",
        help="Their labels are unreliable, so the batch summary leaves them out unless you ask.",
    )
    left_out = report.summary_note(include, "tick the box above to count them")
    if left_out:
        st.caption(left_out[0].upper() + left_out[1:] + ".")
    candidates = candidates_table(report, include_flagged=include)
    if candidates.empty:
        st.info("No counted image has a label, so there are no candidate labels to rank.")
        return
    st.caption("How many of the counted images carry each concept among their labels.")
    # One table with bars (no chart beside it: the same numbers, and no charting library for the browser
    # to load on a page that is otherwise tables and images).
    st.dataframe(
        candidates,
        hide_index=True,
        key="ow_candidates",
        column_config=share_bars("share", "share of the counted images"),
    )
    download_table(candidates, "candidate_labels", key="ow_dl_candidates")


def show_labels(images, model_choice: ModelChoice, bank: BankChoice, top_k: int) -> None:
    """Label the images and show the labels, or say why they could not be labelled."""
    model = model_choice.load()
    if model is None:
        return
    keys = tuple((name, image_digest(image)) for name, image in images)
    try:
        with st.spinner(f"Labelling {len(images)} image(s) ..."):
            report = cached_labels(
                model_choice.key,
                model.model,
                bank.concepts,
                bank.source,
                bank.template,
                top_k,
                keys,
                images,
            )
    except (ValueError, RuntimeError) as exc:
        st.error(f"The images could not be labelled: {exc}")
        return
    show_errors([failure["error"] for failure in report.failed])
    failed = {failure["file"] for failure in report.failed}
    st.caption(scoring_sentence(report, model.words))
    show_results(report, [(name, image) for name, image in images if name not in failed])


def main() -> None:
    st.title("Open-world concept labels")
    st.caption(
        "Upload images (or pick sample photos), choose a model and a concept bank, and get each image's "
        "top concepts; for several images, the concepts they share become candidate labels."
    )

    st.subheader("Images")
    images, upload_errors = collect_images()
    show_errors(upload_errors)

    st.subheader("Model and concepts")
    model_choice = choose_model()
    bank = choose_bank(model_choice.has_own_bank) if model_choice is not None else None
    top_k = st.slider("Labels per image", 1, 15, 5, key="ow_top_k")

    st.subheader("Concept labels")
    if not images:
        st.info("Upload images or pick sample photos above to label them.")
    elif model_choice is not None and bank is not None:
        show_labels(images, model_choice, bank, top_k)
    # The page is drawn: the labelling code and ConSE load in the background, for the first upload.
    start_imports(LABEL_MODULES, then=[load_conse])


main()
