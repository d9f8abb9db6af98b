"""Plain helpers for the open-world labels page (no Streamlit): how a label report becomes tables and a
sentence, an uploaded concept list becomes text, an image becomes a cache key."""

from __future__ import annotations

import hashlib

import pandas as pd
from PIL import Image

from core.ceir.labels import MIN_SHARE, SCORING_CONTRIBUTION, LabelReport


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


def candidates_table(report: LabelReport, limit: int = 20) -> pd.DataFrame:
    """Candidate labels of a batch: concepts by how many images carry them."""
    return pd.DataFrame(report.candidate_labels(limit), columns=["concept", "count", "share"])


def scoring_sentence(report: LabelReport, model_label: str) -> str:
    """Which model and which scoring produced the labels, in one sentence."""
    if report.scoring == SCORING_CONTRIBUTION:
        how = (
            "each label's score is its share of the image's evidence for its CEIR cluster (its contribution, "
            "activation × integrated gradient, over the sum of the positive ones), among the concepts the "
            f"image shows; concepts under {MIN_SHARE:.0%} are not labels"
        )
    else:
        how = (
            "each label's score is the model's cosine similarity between the image and the concept text "
            "(CLIP cosine similarity for a CLIP; ConSE's for the offline model); only positive ones count"
        )
    return f"Labels by {model_label} with the concept bank '{report.bank}': {how}."


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
