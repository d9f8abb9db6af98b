"""Filters that prune a concept bank for CEIR, following the CEIR / Label-free CBM pipeline.

Concepts that are too long, near-duplicates of one another (by text-embedding cosine), too close to a class
name (Label-free CBM's filter; off by default, because CEIR goes the other way and appends the class names to
the bank), unrelated to every class name (our stand-in for the paper's class-conditioned generation), never
activated by any image, or poorly reproduced by the learned projection (held-out fidelity).  Thresholds on
similarities are relative to the bank (``relative_cutoff``, ``relative_duplicate_threshold``), because a
constant calibrated to OpenAI CLIP's cosine scale means nothing on another backbone.  Each filter returns
``(kept, removed)`` with ``removed`` mapping a concept to the reason it went, and never reorders the concepts
it keeps.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

from core.ceir.concept_bank import MAX_CONCEPT_CHARS

FilterResult = tuple[list[str], dict[str, str]]


def _check_concepts(concepts: Sequence[str]) -> list[str]:
    """A list copy of ``concepts``, after checking they are unique strings (``removed`` is keyed by them)."""
    concepts = list(concepts)
    for concept in concepts:
        if not isinstance(concept, str):
            raise ValueError(f"Concepts must be strings; got {type(concept).__name__} ({concept!r}).")
    seen: set[str] = set()
    for concept in concepts:
        if concept in seen:
            raise ValueError(f"Concept {concept!r} appears more than once; filters need unique concepts.")
        seen.add(concept)
    return concepts


def _check_matrix(name: str, array: np.ndarray, rows: int, what: str) -> np.ndarray:
    """``array`` as a finite float64 (rows, D) matrix, or a ValueError saying what shape was expected."""
    matrix = np.asarray(array, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[0] != rows:
        raise ValueError(f"{name} must have shape ({rows}, D), one row per {what}; got {matrix.shape}.")
    if not np.isfinite(matrix).all():
        raise ValueError(f"{name} contains NaN or infinite values.")
    return matrix


def _normalise_rows(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; all-zero rows stay zero (cosine 0 to everything)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms > 0, norms, 1.0)


def filter_by_length(
    concepts: Sequence[str], min_chars: int = 2, max_chars: int = MAX_CONCEPT_CHARS, max_words: int = 6
) -> FilterResult:
    """Keep concepts with ``min_chars``..``max_chars`` characters and at most ``max_words`` words."""
    concepts = _check_concepts(concepts)
    if min_chars < 0 or max_chars < max(min_chars, 1) or max_words < 1:
        raise ValueError(
            f"Need 0 <= min_chars <= max_chars and max_words >= 1; got min_chars={min_chars}, "
            f"max_chars={max_chars}, max_words={max_words}."
        )
    kept: list[str] = []
    removed: dict[str, str] = {}
    for concept in concepts:
        length, words = len(concept.strip()), len(concept.split())
        if length < min_chars:
            removed[concept] = f"shorter than {min_chars} characters"
        elif length > max_chars:
            removed[concept] = f"longer than {max_chars} characters ({length})"
        elif words > max_words:
            removed[concept] = f"more than {max_words} words ({words})"
        else:
            kept.append(concept)
    return kept, removed


def filter_near_duplicates(
    concepts: Sequence[str], embeddings: np.ndarray, threshold: float = 0.95
) -> FilterResult:
    """Greedily, in order, drop a concept whose embedding cosine to an already kept one is >= threshold.

    ``embeddings`` holds one text embedding per concept (C, D); rows are L2-normalised here.
    """
    concepts = _check_concepts(concepts)
    unit = _normalise_rows(_check_matrix("embeddings", embeddings, len(concepts), "concept"))
    kept_rows: list[int] = []
    removed: dict[str, str] = {}
    for row, concept in enumerate(concepts):
        if kept_rows:
            cosines = unit[kept_rows] @ unit[row]
            best = int(np.argmax(cosines))
            if cosines[best] >= threshold:
                twin = concepts[kept_rows[best]]
                closeness = f"cosine {cosines[best]:.3f} >= {threshold:.3f}"
                removed[concept] = f"near-duplicate of '{twin}' ({closeness})"
                continue
        kept_rows.append(row)
    return [concepts[row] for row in kept_rows], removed


def _class_name_pattern(name: str) -> re.Pattern[str]:
    """Matches ``name`` as whole words (optionally plural) anywhere in a concept, ignoring case."""
    words = r"\s+".join(re.escape(word) for word in name.split())
    return re.compile(rf"(?<!\w){words}(?:e?s)?(?!\w)", re.IGNORECASE)


def filter_close_to_classes(
    concepts: Sequence[str],
    concept_embeddings: np.ndarray | None,
    class_names: Sequence[str],
    class_embeddings: np.ndarray | None,
    threshold: float = 0.85,
) -> FilterResult:
    """Drop concepts that name a class or whose text embedding is within ``threshold`` cosine of one.

    A concept "names" a class when it contains the class name as whole words, optionally plural
    ("cat", "a cat's ear", "two cats"; not "scattered").  Pass ``None`` for both embeddings to use
    only the text test.  Off by default in the CEIR pipeline, which appends the class names instead.
    """
    concepts = _check_concepts(concepts)
    class_names = [str(name) for name in class_names]
    if not class_names or any(not name.strip() for name in class_names):
        raise ValueError("class_names must be a non-empty list of non-empty names.")
    if (concept_embeddings is None) != (class_embeddings is None):
        raise ValueError("Pass both concept_embeddings and class_embeddings, or neither.")
    cosines = None
    if concept_embeddings is not None and class_embeddings is not None:
        left = _check_matrix("concept_embeddings", concept_embeddings, len(concepts), "concept")
        right = _check_matrix("class_embeddings", class_embeddings, len(class_names), "class name")
        if left.shape[1] != right.shape[1]:
            raise ValueError(
                f"concept_embeddings have {left.shape[1]} dimensions but class_embeddings {right.shape[1]}."
            )
        cosines = _normalise_rows(left) @ _normalise_rows(right).T
    patterns = [_class_name_pattern(name) for name in class_names]
    kept: list[str] = []
    removed: dict[str, str] = {}
    for row, concept in enumerate(concepts):
        named = next((name for name, p in zip(class_names, patterns, strict=True) if p.search(concept)), None)
        if named is not None:
            removed[concept] = f"names the class '{named}'"
            continue
        if cosines is not None:
            best = int(np.argmax(cosines[row]))
            if cosines[row, best] >= threshold:
                closeness = f"cosine {cosines[row, best]:.3f} >= {threshold}"
                removed[concept] = f"too close to the class '{class_names[best]}' ({closeness})"
                continue
        kept.append(concept)
    return kept, removed


def relative_cutoff(values: np.ndarray, fraction: float, percentile: float = 90.0) -> float:
    """``fraction`` of the bank's ``percentile``-th value: a threshold that scales with the backbone.

    Similarities of one backbone are not on another's scale (a toy CLIP's cosines spread over [-0.3, 0.8],
    OpenAI CLIP's over [0.1, 0.35]), so a cut-off is a share of what the bank's strong concepts reach.
    """
    if not 0 <= fraction <= 1:
        raise ValueError(f"A relative cut-off is a fraction between 0 and 1, not {fraction}.")
    return float(fraction * np.percentile(np.asarray(values, dtype=np.float64), percentile))


def relative_duplicate_threshold(embeddings: np.ndarray, fraction: float = 0.1) -> float:
    """The cosine above which two concepts count as near-duplicates: their text-embedding distance
    (1 - cosine) is below ``fraction`` of the bank's median pairwise distance."""
    unit = _normalise_rows(_check_matrix("embeddings", embeddings, len(embeddings), "concept"))
    if len(unit) < 2:
        return 1.0
    rows, cols = np.triu_indices(len(unit), k=1)
    distances = 1.0 - np.einsum("ij,ij->i", unit[rows], unit[cols])
    return float(1.0 - fraction * np.median(distances))


def activation_lift(activations: np.ndarray, top_k: int = 5) -> np.ndarray:
    """Per concept: the mean of its ``top_k`` highest activations minus its median activation.

    How much more the images that show a concept most score than a typical image: a concept no image
    shows has a flat column and a lift near zero, whatever the backbone's cosine offset.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1, got {top_k}.")
    matrix = np.asarray(activations, dtype=np.float64)
    k = min(top_k, matrix.shape[0])
    return np.sort(matrix, axis=0)[-k:].mean(axis=0) - np.median(matrix, axis=0)


def filter_never_activated(
    concepts: Sequence[str], activations: np.ndarray, fraction: float = 0.5, top_k: int = 5
) -> FilterResult:
    """Drop concepts that no image activates: their ``activation_lift`` is below ``fraction`` of the
    bank's 90th-percentile lift (``relative_cutoff``).

    ``activations`` is the (N images, C concepts) teacher similarity matrix; ``top_k`` larger than N
    uses all N images.
    """
    concepts = _check_concepts(concepts)
    matrix = np.asarray(activations, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape[1] != len(concepts) or matrix.shape[0] == 0:
        raise ValueError(
            f"activations must have shape (N images, {len(concepts)}) with N >= 1, one column per concept; "
            f"got {matrix.shape}."
        )
    if not np.isfinite(matrix).all():
        raise ValueError("activations contain NaN or infinite values.")
    lift = activation_lift(matrix, top_k)
    cutoff = relative_cutoff(lift, fraction)
    top = min(top_k, matrix.shape[0])
    return _keep_at_least(
        concepts,
        lift,
        cutoff,
        lambda score: (
            f"never activated (its top-{top} images score {score:.3f} above its median, less "
            f"than {cutoff:.3f} = {fraction:g} of the bank's 90th percentile)"
        ),
    )


def _keep_at_least(
    concepts: list[str], scores: np.ndarray, cutoff: float, why: Callable[[float], str]
) -> FilterResult:
    """Keep the concepts scoring at least ``cutoff``; ``why(score)`` says why each other one went."""
    kept: list[str] = []
    removed: dict[str, str] = {}
    for concept, score in zip(concepts, scores, strict=True):
        if score < cutoff:
            removed[concept] = why(float(score))
        else:
            kept.append(concept)
    return kept, removed


def class_spread(concept_embeddings: np.ndarray, class_embeddings: np.ndarray) -> np.ndarray:
    """Per concept: the standard deviation over class names of its text-embedding cosine to each name.

    A concept the text tower ties to some classes and not others ("red head" to the red-headed species)
    has a large spread; one it relates to every class alike ("webbed feet", a tail colour that no
    species is named for) has a small one.
    """
    left, right = np.asarray(concept_embeddings, dtype=np.float64), np.asarray(class_embeddings, np.float64)
    if left.ndim != 2 or right.ndim != 2 or left.shape[1] != right.shape[1]:
        raise ValueError(
            f"concept_embeddings {left.shape} and class_embeddings {right.shape} must be (C, D) and (K, D)."
        )
    return (_normalise_rows(left) @ _normalise_rows(right).T).std(axis=1)


def filter_class_irrelevant(
    concepts: Sequence[str],
    concept_embeddings: np.ndarray,
    class_embeddings: np.ndarray,
    fraction: float = 0.5,
) -> FilterResult:
    """Drop concepts that say nothing about which class an image is: their ``class_spread`` is below
    ``fraction`` of the bank's 90th-percentile spread.

    This stands in for the paper's concept generation, which asks a language model for features that
    tell each class apart; it uses only the class *names*, never an image's label.
    """
    concepts = _check_concepts(concepts)
    _check_matrix("concept_embeddings", concept_embeddings, len(concepts), "concept")
    spread = class_spread(concept_embeddings, class_embeddings)
    cutoff = relative_cutoff(spread, fraction)
    return _keep_at_least(
        concepts,
        spread,
        cutoff,
        lambda score: (
            f"says little about the class (text spread over class names {score:.3f} < {cutoff:.3f} "
            f"= {fraction:g} of the bank's 90th percentile)"
        ),
    )


def filter_by_fidelity(concepts: Sequence[str], fidelity: np.ndarray, cutoff: float = 0.45) -> FilterResult:
    """Drop concepts whose held-out fidelity is below ``cutoff``; an undefined (NaN) fidelity also fails."""
    concepts = _check_concepts(concepts)
    scores = np.asarray(fidelity, dtype=np.float64)
    if scores.shape != (len(concepts),):
        raise ValueError(
            f"fidelity must have shape ({len(concepts)},), one value per concept; got {scores.shape}."
        )
    kept: list[str] = []
    removed: dict[str, str] = {}
    for concept, score in zip(concepts, scores, strict=True):
        if np.isnan(score):
            removed[concept] = "fidelity undefined (NaN)"
        elif score < cutoff:
            removed[concept] = f"low fidelity ({score:.3f} < {cutoff})"
        else:
            kept.append(concept)
    return kept, removed
