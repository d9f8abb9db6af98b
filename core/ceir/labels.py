"""Open-world concept labels for new images, with no fine-tuning.

With the bundle's own concept bank, an image's labels are the concepts that contribute most
to its cluster (Integrated Gradients, see :mod:`core.ceir.explain`) among those it actually
shows (activation above the train mean). The score is the concept's *share* of the image's positive
evidence for its cluster (its contribution over the sum of all positive contributions), so scores read
the same way across images; a concept that carries too small a share is not a label (``label_share``: the
smaller of ``MIN_SHARE`` and twice an even split's share, so the rule holds for a bank of 13 concepts and
of 400 alike). An image that lies farther from
its nearest training images than ``OOD_PERCENTILE`` % of the training images do gets ``OOD_WARNING``
(``ood_flags``).
With another bank (``concepts=``) the trained projection does not apply, so the score is the CLIP
similarity between the image and the concept text, and the report says so; a concept is a label only when
it scores above the image's calibrated threshold (:mod:`core.ceir.label_fit`: the 99th percentile of the
image's scores against a fixed reference vocabulary), so a bank that does not fit an image gives it no label
(``NO_FIT``).
With the bundle's own bank the calibration is the bundle's: concepts above the training mean, and an image
the out-of-distribution test flags gets no label, since its concept vector is unlike any it was trained on.
Over a set of images, how often each concept appears among the per-image labels gives the candidate labels
for the set; flagged images are left out of them unless asked (``candidate_labels(include_flagged=True)``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from core.backbones.conse import ConSEBackbone
from core.ceir import arrays as arr
from core.ceir.bundle import LoadedCEIR
from core.ceir.concept_bank import RAW_TEMPLATE, ConceptBank, template_note
from core.ceir.explain import explain
from core.ceir.label_fit import FIT_PERCENTILE, fit_thresholds, reference_scores
from core.ceir.model import CEIRModel
from core.data.images import ImageLoadError, list_image_files, load_image

# The out-of-distribution check's pieces are core.ood's, shared with ConceptHash bundles.
from core.ood import OOD_NEIGHBOURS as OOD_NEIGHBOURS
from core.ood import OOD_REFERENCE_ROWS as OOD_REFERENCE_ROWS
from core.ood import class_match as class_match
from core.ood import even_subsample as even_subsample
from core.ood import neighbour_distance as neighbour_distance
from core.progress import Progress, no_progress

SCORING_CONTRIBUTION = "ceir-contribution"
SCORING_SIMILARITY = "clip-similarity"
SCORING_CONSE = "conse-similarity"  # ConSE's image-text cosine (with its calibration), not a CLIP's


@dataclass
class SimilarityLabeller:
    """A bare image-text backbone (a real CLIP, ConSE) dressed as a loaded model for :func:`label_images`.

    With an explicit concept bank, labelling only touches ``.backbone`` (embed the images, embed the
    concepts, rank by cosine), so a backbone with no trained CEIR projection fits. The command line
    and the dashboard's open-world page both use it.
    """

    backbone: Any
    config: dict[str, Any] = field(default_factory=dict)


MIN_SHARE = 0.1  # a share of the image's positive evidence for its cluster that always makes a label
EVEN_SHARE_FACTOR = 2  # ... and so does this many times an even split's share (see ``label_share``)
OOD_PERCENTILE = 99.0
OOD_WARNING = "this image looks unlike the images this model was trained on; its labels are unreliable"
# Why an image has no label: with the bundle's own bank only concepts the image shows more than an average
# training image, and that carry ``label_share`` of its cluster evidence, count as labels; an image can have
# none. "Either ... or": a label needs one of the two shares, so no label means neither.
_TIMES = {2: "twice", 3: "three times"}.get(EVEN_SHARE_FACTOR, f"{EVEN_SHARE_FACTOR} times")
NO_LABELS = (
    f"no concept above the training mean carries either {MIN_SHARE:.0%} of the evidence for this image's "
    f"cluster or {_TIMES} an even share of it ({EVEN_SHARE_FACTOR}/n, where n concepts carry positive "
    "evidence)"
)
NO_SIMILAR = "no concept of the bank has a positive similarity to this image"
NO_FIT = "no concept of this bank fits this image"


def no_fit_note(threshold: float, percentile: float) -> str:
    """Why an image has no label from a bank scored by similarity: no concept clears its threshold."""
    return (
        f"{NO_FIT} (no concept scores above {threshold:.3f}, the {percentile:g}th percentile of its scores "
        "against the reference vocabulary)"
    )


NO_FIT_OOD = f"{NO_FIT} (it is unlike the images the model and its concepts were calibrated on)"


@dataclass
class ConceptScore:
    concept: str
    score: float


@dataclass
class ImageLabels:
    file: str
    labels: list[ConceptScore]
    cluster: int | None = None
    warning: str | None = None  # set when the out-of-distribution test flags the image
    note: str | None = None  # why there is no label, when there is none
    threshold: float | None = None  # the score a label had to beat (similarity scoring, see label_fit)


@dataclass
class LabelReport:
    scoring: str
    bank: str
    images: list[ImageLabels] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    template: str = RAW_TEMPLATE  # the caption each concept of the bank was read in
    fit_percentile: float | None = FIT_PERCENTILE  # the abstention rule's percentile; None: switched off

    @property
    def read_as(self) -> str:
        """ ", each concept read as '...'" when the bank has a caption template, else nothing."""
        return template_note(self.template)

    @property
    def flagged(self) -> list[ImageLabels]:
        """The images the out-of-distribution test flagged."""
        return [image for image in self.images if image.warning]

    def summarised(self, include_flagged: bool = False) -> list[ImageLabels]:
        """The images a batch summary counts: those not flagged, or all of them when ``include_flagged``."""
        return [image for image in self.images if include_flagged or not image.warning]

    def candidate_labels(self, limit: int = 20, include_flagged: bool = False) -> list[dict[str, Any]]:
        """Concepts ranked by how many of the summarised images (``summarised``) carry them as a label; the
        share is over those images."""
        images = self.summarised(include_flagged)
        counts = Counter(label.concept for image in images for label in image.labels)
        total = max(1, len(images))
        ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:limit]
        return [{"concept": c, "count": n, "share": n / total} for c, n in ranked]

    @property
    def fit_rule(self) -> str:
        """How a concept earned its place as a label in this report, in one sentence (lower case)."""
        if self.fit_percentile is None:
            return "abstention is switched off: every image gets its top scores, fitting or not"
        if self.scoring == SCORING_CONTRIBUTION:
            return (
                "an image flagged as unlike the training images gets no label, since the bank's calibration "
                "(training means, evidence shares) does not cover it"
            )
        return (
            f"a concept is a label only if it scores above {self.fit_percentile:g} % of the image's scores "
            "against a reference vocabulary (the shipped banks' concepts outside this bank); if none does, "
            "the image gets no label"
        )

    def summary_note(self, include_flagged: bool = False, how_to_include: str = "") -> str | None:
        """What the batch summary leaves out, in one sentence (None when it counts every image);
        ``how_to_include`` names the switch that counts flagged images too."""
        flagged = len(self.flagged)
        if not flagged:
            return None
        if include_flagged:
            return f"the {flagged} flagged image(s) are counted too, though their labels are unreliable"
        switch = f" ({how_to_include})" if how_to_include else ""
        if flagged == len(self.images):
            return f"every image was flagged as unlike the training images, so none is counted{switch}"
        return (
            f"{flagged} of {len(self.images)} images were flagged as unlike the training images and are "
            f"left out{switch}"
        )

    @property
    def no_labels_note(self) -> str:
        """Why an image of this report has no label, when the image does not say (``ImageLabels.note``)."""
        return NO_LABELS if self.scoring == SCORING_CONTRIBUTION else NO_SIMILAR

    def note_for(self, image: ImageLabels) -> str:
        """Why ``image`` has no label."""
        return image.note or self.no_labels_note

    def to_dict(self, include_flagged: bool = False) -> dict[str, Any]:
        return {
            "scoring": self.scoring,
            "bank": self.bank,
            "template": self.template,
            "fit_percentile": self.fit_percentile,
            "images": [asdict(i) | ({} if i.labels else {"note": self.note_for(i)}) for i in self.images],
            "candidate_labels": self.candidate_labels(include_flagged=include_flagged),
            "candidate_labels_include_flagged": include_flagged,
            "flagged": len(self.flagged),
            "failed": self.failed,
        }


def _new_report(
    loaded: LoadedCEIR | SimilarityLabeller, bank: ConceptBank | None, **fields: Any
) -> LabelReport:
    """An empty report that names how its scores are made: contributions with the bundle's own concepts,
    else the image-text cosine of the backbone that embeds the images (a CLIP's, or ConSE's)."""
    if bank is None:
        own = loaded.config.get("concept_bank", {})
        template = str(own.get("template") or RAW_TEMPLATE)
        return LabelReport(SCORING_CONTRIBUTION, str(own.get("source", "")), template=template, **fields)
    scoring = SCORING_CONSE if isinstance(loaded.backbone, ConSEBackbone) else SCORING_SIMILARITY
    return LabelReport(scoring, bank.source, template=bank.template, **fields)


def _check_bank(loaded: LoadedCEIR | SimilarityLabeller, bank: ConceptBank | None) -> None:
    if bank is None and isinstance(loaded, SimilarityLabeller):
        raise ValueError(
            f"The backbone {loaded.backbone.describe()} has no concepts of its own; pass a concept bank."
        )


@torch.no_grad()
def _embed(loaded: LoadedCEIR | SimilarityLabeller, images: list[Image.Image]) -> torch.Tensor:
    return loaded.backbone.encode_images(loaded.backbone.preprocess_images(images)).cpu()


def label_share(n_positive: int, min_share: float = MIN_SHARE, factor: float = EVEN_SHARE_FACTOR) -> float:
    """The share of an image's positive evidence for its cluster that a concept needs to be a label, when
    ``n_positive`` concepts carry positive evidence: the smaller of ``min_share`` and ``factor / n_positive``.

    A label is a concept that stands out from the rest of the image's evidence, and a fixed share cannot say
    that at every bank size: with the 13 concepts of the shipped ToyBirds model the strongest concept of a
    test image carries about 17-37 % of its evidence, but with 331 (the ``general`` bank on ToyBirds) the
    evidence spreads over about 190 concepts, the strongest carries about 2-5 %, and a fixed 10 % leaves every
    image without a label. The yardstick that moves with the bank is what an even split would give each
    concept, 1 / ``n_positive``; a concept carrying ``factor`` (2) times that carries clearly more than its
    part. A concept that carries ``min_share`` (10 %) of all the evidence stands out at any size, so the rule
    never asks for more: with up to ``factor / min_share`` (20) positive concepts it is the old fixed 10 %,
    and a small bank's labels stay as they were (the shipped ToyBirds model has 7-13 positive concepts per
    test image). Counting the concepts that carry evidence, not the bank, keeps the yardstick honest when many
    concepts of a large bank say nothing about an image. The callers' ``top_k`` still caps the labels.
    """
    if n_positive < 1:
        return min_share
    return min(min_share, factor / n_positive)


def contribution_labels(
    model: CEIRModel, embeddings: torch.Tensor, top_k: int, min_share: float = MIN_SHARE
) -> list[tuple[list[ConceptScore], int]]:
    """Per image: up to ``top_k`` concepts it shows (activation above the train mean) that carry at least
    ``label_share`` of its positive evidence for its cluster, scored by their share; and the cluster."""
    with torch.no_grad():
        vectors = model.concept_vectors(embeddings)
    contributions, clusters = explain(model, vectors)
    return labels_by_share(model.concepts, vectors, contributions, clusters, top_k, min_share)


def labels_by_share(
    concepts: list[str],
    vectors: torch.Tensor | np.ndarray,
    contributions: torch.Tensor | np.ndarray,
    clusters: torch.Tensor | np.ndarray,
    top_k: int,
    min_share: float = MIN_SHARE,
    factor: float = EVEN_SHARE_FACTOR,
) -> list[tuple[list[ConceptScore], int]]:
    """``contribution_labels`` from concept vectors and their explanations (``explain``) already at hand."""
    result = []
    for vector, contribution, cluster in zip(
        np.asarray(vectors), np.asarray(contributions), np.asarray(clusters).tolist(), strict=True
    ):
        positive = contribution > 0
        share = contribution / max(float(contribution[positive].sum()), 1e-12)
        needed = label_share(int(positive.sum()), min_share, factor)
        eligible = [i for i in np.argsort(-share, kind="stable") if vector[i] > 0 and share[i] >= needed]
        result.append(([ConceptScore(concepts[i], float(share[i])) for i in eligible[:top_k]], cluster))
    return result


def labels_from_contributions(
    loaded: LoadedCEIR, embeddings: torch.Tensor, top_k: int
) -> list[tuple[list[ConceptScore], int]]:
    """``contribution_labels`` of a loaded bundle's model."""
    return contribution_labels(loaded.model, embeddings, top_k)


def ood_radius(reference: torch.Tensor, percentile: float = OOD_PERCENTILE) -> float:
    """The neighbour distance that ``percentile`` % of the training images stay within."""
    return float(np.percentile(neighbour_distance(reference, reference, exclude_self=True), percentile))


CLASS_PROMPT = "a photo of a {}."  # how the class-match test asks the text tower for a class


@dataclass(frozen=True)
class OODReference:
    """What a bundle's images are compared with: training rows and the neighbour distance ``radius`` that
    ``OOD_PERCENTILE`` % of them stay within; in embedding space also the class prompts' embeddings and the
    best class match (``class_floor``) that as many training images reach."""

    rows: torch.Tensor
    radius: float
    in_embedding_space: bool
    class_text: torch.Tensor | None = None
    class_floor: float = float("-inf")


def _class_prompts(loaded: LoadedCEIR) -> torch.Tensor | None:
    """(K, D) unit embeddings of ``CLASS_PROMPT`` for every class of the bundle, or None without classes."""
    classes = list((getattr(loaded, "config", None) or {}).get("classes") or [])
    backbone = getattr(loaded, "backbone", None)
    if not classes or backbone is None:
        return None
    text = backbone.encode_texts([CLASS_PROMPT.format(name) for name in classes]).cpu().float()
    return torch.nn.functional.normalize(text, dim=-1)


def _ood_reference(loaded: LoadedCEIR | SimilarityLabeller) -> OODReference | None:
    """What ``ood_flags`` compares with, worked out on first use and kept on the loaded bundle: every later
    batch of labels compares with the same rows, radius and class floor."""
    model, arrays = getattr(loaded, "model", None), getattr(loaded, "arrays", {})
    if model is None:
        return None
    if "_ood_reference" not in vars(loaded):
        reference, in_embedding_space = arrays.get(arr.OOD_REFERENCE), True
        if reference is None or reference.ndim != 2 or reference.shape[1] != model.projection.in_features:
            reference, in_embedding_space = arrays.get(arr.TRAIN_CONCEPTS), False
        found = None
        if reference is not None and len(reference) >= 2:
            rows = torch.from_numpy(even_subsample(reference))
            class_text = _class_prompts(loaded) if in_embedding_space else None
            if class_text is not None and class_text.shape[1] != rows.shape[1]:
                class_text = None  # a text tower that does not share the image embedding space
            floor = (
                float("-inf")
                if class_text is None
                else float(np.percentile(class_match(rows, class_text), 100 - OOD_PERCENTILE))
            )
            found = OODReference(rows, ood_radius(rows), in_embedding_space, class_text, floor)
        vars(loaded)["_ood_reference"] = found
    return vars(loaded)["_ood_reference"]


def ood_flags(loaded: LoadedCEIR | SimilarityLabeller, embeddings: torch.Tensor) -> list[bool]:
    """Per image: whether it is unlike the training images by either of two tests, each passed by
    ``OOD_PERCENTILE`` % of the training images (all False for a bare backbone).

    * far: farther from its nearest training images than the training images are from theirs, on the
      backbone's image embeddings (the bundle's ``ood_reference`` array, an even subsample of the training
      embeddings), else on concept vectors (``train_concepts``, for bundles from before that array). Not the
      distance to the nearest cluster centre, and not concept space when it can be avoided: on the shipped
      13-concept ToyBirds model both let a photo of coffee through (its colours read like a bird's).
    * unmatched (embedding space, bundles that name their classes): its best cosine to a class prompt
      ("a photo of a {class}.") is below what the training images reach (the maximum-concept-matching idea
      of zero-shot out-of-distribution detection, Ming et al. 2022). A red motorcycle sits among the red
      ToyBirds by distance, yet matches no species.
    """
    found = _ood_reference(loaded)
    if found is None:
        return [False] * len(embeddings)
    vectors = embeddings
    if not found.in_embedding_space:
        with torch.no_grad():
            vectors = loaded.model.concept_vectors(embeddings)
    flags = neighbour_distance(vectors, found.rows) > found.radius
    if found.class_text is not None:
        flags |= class_match(embeddings, found.class_text) < found.class_floor
    return flags.tolist()


def labels_from_similarity(
    loaded: LoadedCEIR | SimilarityLabeller,
    embeddings: torch.Tensor,
    bank: ConceptBank,
    top_k: int,
    thresholds: np.ndarray | None = None,
) -> list[list[ConceptScore]]:
    """Per image: the top-k concepts of another bank by image-text cosine (CLIP or ConSE embeddings);
    a negative cosine (the image is farther from the text than from an unrelated one) is never a label, and
    neither is a score at or below the image's entry of ``thresholds`` (see :func:`similarity_thresholds`)."""
    text = loaded.backbone.encode_texts(bank.prompts()).cpu()
    similarity = (embeddings @ text.t()).numpy()
    floors = np.zeros(len(similarity)) if thresholds is None else np.maximum(np.asarray(thresholds), 0)
    return [
        [
            ConceptScore(bank.concepts[i], float(row[i]))
            for i in np.argsort(-row, kind="stable")[:top_k]
            if row[i] > floor
        ]
        for row, floor in zip(similarity, floors, strict=True)
    ]


def similarity_thresholds(
    loaded: LoadedCEIR | SimilarityLabeller,
    embeddings: torch.Tensor,
    bank: ConceptBank,
    percentile: float = FIT_PERCENTILE,
) -> np.ndarray:
    """(N,) the score each image's labels from ``bank`` must beat: the ``percentile`` of its scores against
    the reference vocabulary in the bank's template (:mod:`core.ceir.label_fit`)."""
    scores = reference_scores(loaded.backbone, embeddings, bank.concepts, bank.template)
    return fit_thresholds(scores, percentile)


def label_images(
    loaded: LoadedCEIR | SimilarityLabeller,
    named_images: list[tuple[str, Image.Image]],
    top_k: int = 5,
    bank: ConceptBank | None = None,
    report: LabelReport | None = None,
    batch_size: int = 64,
    fit_percentile: float | None = FIT_PERCENTILE,
) -> LabelReport:
    """Label already-loaded images (e.g. uploads in the dashboard).

    An image that cannot be labelled (e.g. a shape the model cannot take) is added to ``report.failed`` and
    the others are still labelled; if no image at all could be labelled, the first error is raised.
    ``fit_percentile`` None switches the abstention off (every image gets its top-k positive scores, and
    a flagged image its own-bank labels): for studying the scores, not for showing them as labels.
    """
    if top_k < 1:
        raise ValueError(f"--top must be at least 1, not {top_k}.")
    _check_bank(loaded, bank)
    if report is None:
        report = _new_report(loaded, bank)
    report.fit_percentile = fit_percentile
    labelled_before, first_error = len(report.images), None
    for start in range(0, len(named_images), batch_size):
        chunk = named_images[start : start + batch_size]
        try:
            _label_chunk(loaded, chunk, top_k, bank, report, fit_percentile)
        except _LABEL_ERRORS:
            # One image must not cost the others their labels: label the chunk one image at a time.
            for named in chunk:
                try:
                    _label_chunk(loaded, [named], top_k, bank, report, fit_percentile)
                except _LABEL_ERRORS as exc:
                    first_error = first_error or exc
                    report.failed.append({"file": named[0], "error": _label_error(named[0], exc)})
    if first_error is not None and len(report.images) == labelled_before:
        raise first_error  # not one image could be labelled: the model or the bank is at fault, say so once
    return report


# What labelling one image can raise (a refused shape, a model that cannot take it, memory running out).
_LABEL_ERRORS = (ValueError, RuntimeError, MemoryError)


def _label_error(name: str, exc: BaseException) -> str:
    if isinstance(exc, ImageLoadError):
        return str(exc)
    detail = str(exc).strip().rstrip(".") or type(exc).__name__
    return f"Cannot label image '{name}': {detail}."


def _label_chunk(
    loaded: LoadedCEIR | SimilarityLabeller,
    chunk: list[tuple[str, Image.Image]],
    top_k: int,
    bank: ConceptBank | None,
    report: LabelReport,
    fit_percentile: float | None = FIT_PERCENTILE,
) -> None:
    embeddings = _embed(loaded, [image for _, image in chunk])
    warnings = [OOD_WARNING if far else None for far in ood_flags(loaded, embeddings)]
    if bank is None:
        for (name, _), (labels, cluster), warning in zip(
            chunk, labels_from_contributions(loaded, embeddings, top_k), warnings, strict=True
        ):
            if warning and fit_percentile is not None:  # the bundle's calibration does not cover this image
                report.images.append(ImageLabels(name, [], cluster, warning, NO_FIT_OOD))
            else:
                report.images.append(ImageLabels(name, labels, cluster, warning))
        return
    thresholds = None
    if fit_percentile is not None:
        thresholds = similarity_thresholds(loaded, embeddings, bank, fit_percentile)
    for n, ((name, _), labels, warning) in enumerate(
        zip(chunk, labels_from_similarity(loaded, embeddings, bank, top_k, thresholds), warnings, strict=True)
    ):
        threshold = None if thresholds is None else float(thresholds[n])
        note = None
        if threshold is not None and not labels:
            note = no_fit_note(max(threshold, 0.0), fit_percentile)
        report.images.append(ImageLabels(name, labels, warning=warning, note=note, threshold=threshold))


def label_paths(
    loaded: LoadedCEIR | SimilarityLabeller,
    paths: list[str | Path],
    top_k: int = 5,
    bank: ConceptBank | None = None,
    progress: Progress = no_progress,
    fit_percentile: float | None = FIT_PERCENTILE,
) -> LabelReport:
    """Label image files and folders (recursively). Files that fail to load and folders that cannot be read
    are reported in ``failed`` and skipped."""
    _check_bank(loaded, bank)
    report_failed: list[dict[str, str]] = []
    files = list_image_files(
        paths, on_error=lambda error: report_failed.append({"file": error.source_name, "error": str(error)})
    )
    report = _new_report(loaded, bank, failed=report_failed)
    good: list[tuple[str, Image.Image]] = []
    for n, path in enumerate(files, 1):
        try:
            good.append((str(path), load_image(path)))
        except ImageLoadError as exc:
            report.failed.append({"file": str(path), "error": str(exc)})
        if len(good) == 64 or n == len(files):
            label_images(loaded, good, top_k, bank, report, fit_percentile=fit_percentile)
            good = []
        progress(n, len(files))
    return report
