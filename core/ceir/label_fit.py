"""When a concept of a bank fits an image: the calibrated threshold an open-world label must clear.

An image-text cosine means little on its own: every image has some cosine to every text, ConSE divides each
image's scores by its own constant, and a CLIP's cosines sit in a narrow band that moves from image to image.
So "the top five concepts" of a bank that does not fit an image are still five concepts (the cifar10 bank on
a photo of coffee: "jet engines", "airport tarmac"). The question a label must answer is whether the concept
matches *this image* better than texts that have nothing in particular to do with it.

The null distribution is the image's own scores against a fixed reference vocabulary: every concept of the
banks that ship with ConceptLens (``core/ceir/banks``: general, cifar10, cub200, toybirds, about 900
concepts) except those of the bank being scored, read in that bank's caption template so the template adds
the same to both sides. An image's threshold is the ``FIT_PERCENTILE`` (99th) percentile of those scores
(numpy's linear interpolation); a concept is a label only when its score is above it, i.e. when it beats 99 %
of the reference texts for this image. If no concept of the bank does, the bank does not fit the image and
it gets no label. The vocabulary ships in git and the percentile is a constant, so the threshold of an image
is reproducible; the label report stores it per image (``ImageLabels.threshold``).

The bank's own concepts are left out of the vocabulary so that a bank is never its own null. If that leaves
fewer than ``MIN_REFERENCE_TEXTS`` texts (a bank holding most shipped concepts), the whole vocabulary is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from core.ceir.concept_bank import SHIPPED_BANKS, apply_template, load_bank

FIT_PERCENTILE = 99.0
MIN_REFERENCE_TEXTS = 100


def fit_thresholds(reference_scores: np.ndarray, percentile: float = FIT_PERCENTILE) -> np.ndarray:
    """(N,) each image's threshold: the ``percentile`` of its row of ``reference_scores`` (N, V), the image's
    scores against the reference texts."""
    scores = np.asarray(reference_scores, dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise ValueError(f"Reference scores must be an (images, texts) array with texts, not {scores.shape}.")
    if not 0 <= percentile <= 100:
        raise ValueError(f"The fit percentile must be between 0 and 100, not {percentile}.")
    return np.percentile(scores, percentile, axis=1)


def shipped_vocabulary() -> list[tuple[str, list[str]]]:
    """(bank name, concepts) of every shipped bank: the reference vocabulary, bank by bank."""
    return [(name, load_bank(name).concepts) for name in SHIPPED_BANKS]


def reference_rows(bank_concepts: Sequence[str]) -> np.ndarray:
    """Indices into the concatenated shipped vocabulary of the texts that make the null for a bank: the
    first spelling of each concept (ignoring case) that the bank does not hold; all of them when that leaves
    fewer than ``MIN_REFERENCE_TEXTS``."""
    own = {concept.casefold() for concept in bank_concepts}
    seen: set[str] = set()
    kept, unique = [], []
    position = 0
    for _, concepts in shipped_vocabulary():
        for concept in concepts:
            key = concept.casefold()
            if key not in seen:
                seen.add(key)
                unique.append(position)
                if key not in own:
                    kept.append(position)
            position += 1
    return np.asarray(kept if len(kept) >= MIN_REFERENCE_TEXTS else unique, dtype=int)


def _vocabulary_embeddings(backbone: Any, template: str) -> torch.Tensor:
    """(V, D) the text embeddings of the whole shipped vocabulary read in ``template``, kept on the backbone
    (the vocabulary is fixed; a real CLIP pays for it once). Encoded bank by bank, so the offline ConSE model
    reads the embeddings that ship (``core.ceir.shipped_texts``) instead of loading its text model."""
    cache = vars(backbone).setdefault("_reference_vocabulary", {})
    if template not in cache:
        parts = [backbone.encode_texts(apply_template(template, c)).cpu() for _, c in shipped_vocabulary()]
        cache[template] = torch.cat(parts).float()
    return cache[template]


def reference_scores(backbone: Any, embeddings: torch.Tensor, bank_concepts: Sequence[str], template: str):
    """(N, V) each image's cosine to the reference texts of a bank (``reference_rows``), in its template."""
    text = _vocabulary_embeddings(backbone, template)[torch.from_numpy(reference_rows(bank_concepts))]
    with torch.no_grad():
        return (embeddings.float().cpu() @ text.t()).numpy()
