"""CEIR concept banks: plain-text vocabularies of human-readable concepts, and the filters that prune them.

A concept bank is a UTF-8 text file with one concept per line.  ``#`` starts a comment (a whole line
or the tail of a line), blank lines are ignored and runs of whitespace collapse to one space.  Reading
is forgiving where it is safe (a byte-order mark, Windows line endings, case-insensitive duplicates kept
once) and reports everything it dropped in ``ConceptBank.issues``, so a user sees why a line is missing.

The filters follow the CEIR / Label-free CBM pipeline: concepts that are too long, near-duplicates of one
another (by text-embedding cosine), too close to a class name (Label-free CBM's filter; off by default,
because CEIR goes the other way and appends the class names to the bank), unrelated to every class name
(our stand-in for the paper's class-conditioned generation), never activated by any image, or poorly
reproduced by the learned projection (held-out fidelity).  Thresholds on similarities are relative to the
bank (``relative_cutoff``, ``relative_duplicate_threshold``), because a constant calibrated to OpenAI CLIP's
cosine scale means nothing on another backbone.  Each filter returns ``(kept, removed)`` with ``removed``
mapping a concept to the reason it went, and never reorders the concepts it keeps.

Banks shipped with the package live in ``banks/<name>.txt``; ``toybirds`` names every part attribute
of the ToyBirds world: the colours of the three species parts (head, wing, body), which
``toybirds_concept_truth`` checks against a species to score concept explanations, and the per-image
nuisance (crest, wing pattern, tail colour and shape), which says nothing about the species.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from core.atomic import write_file_atomic
from core.data import toybirds

SHIPPED_BANKS: tuple[str, ...] = ("toybirds", "cifar10", "cub200", "general")
MAX_CONCEPT_CHARS = 60
MAX_BANK_BYTES = 1_000_000  # a concept bank is a word list; anything larger is almost surely the wrong file

_SHIPPED_PREFIX = "shipped:"


class ConceptBankError(ValueError):
    """A concept bank that cannot be used; the message names the file and, where known, the line."""


@dataclass
class ConceptBank:
    """An ordered list of unique concepts, where they came from, and what was dropped while reading them."""

    concepts: list[str]
    source: str
    issues: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.concepts)


# ---------------------------------------------------------------------------------------------
# Parsing and reading
# ---------------------------------------------------------------------------------------------


def _bad_character(text: str) -> str | None:
    """The first control or invisible format character in ``text`` (tabs count as spaces), or None."""
    for char in text:
        if char == "\t":
            continue
        if unicodedata.category(char) in ("Cc", "Cf"):
            return char
    return None


def _split_lines(text: str) -> list[str]:
    """Lines split on LF, CRLF or CR only, so other control characters stay visible to the checks."""
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def parse_concepts(text: str, *, source: str = "inline", max_chars: int = MAX_CONCEPT_CHARS) -> ConceptBank:
    """Parse concept-bank text into a ``ConceptBank``, reporting every dropped line in ``issues``.

    Duplicates are found case-insensitively and kept once, in their first spelling; concepts longer
    than ``max_chars`` and lines holding control characters are dropped.  Raises ``ConceptBankError``
    when nothing usable is left.
    """
    if not isinstance(text, str):
        raise ConceptBankError(f"Concept bank {source} must be text, not {type(text).__name__}.")
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}.")
    text = text.removeprefix("\ufeff")
    concepts: list[str] = []
    issues: list[str] = []
    first_seen: dict[str, tuple[int, str]] = {}
    for number, raw in enumerate(_split_lines(text), start=1):
        line = raw.split("#", 1)[0]
        bad = _bad_character(line)
        if bad is not None:
            issues.append(f"line {number}: control character U+{ord(bad):04X} in the concept, line dropped")
            continue
        concept = " ".join(unicodedata.normalize("NFC", line).split())
        if not concept:
            continue
        if len(concept) > max_chars:
            issues.append(
                f"line {number}: concept '{concept[:30]}...' is {len(concept)} characters "
                f"(more than {max_chars}), dropped"
            )
            continue
        key = concept.casefold()
        if key in first_seen:
            first_line, first_spelling = first_seen[key]
            issues.append(
                f"line {number}: '{concept}' duplicates '{first_spelling}' (line {first_line}), dropped"
            )
            continue
        first_seen[key] = (number, concept)
        concepts.append(concept)
    if not concepts:
        raise ConceptBankError(f"Concept bank {source} contains no concepts.")
    return ConceptBank(concepts=concepts, source=source, issues=issues)


def _decode(data: bytes, source: str) -> str:
    """UTF-8 text of a concept file (a leading byte-order mark is dropped)."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ConceptBankError(
            f"Concept bank {source} is not UTF-8 text (undecodable byte at offset {error.start}); "
            "save it as UTF-8."
        ) from None


def read_concept_file(path: str | os.PathLike[str]) -> ConceptBank:
    """Read a concept bank from a UTF-8 text file; every problem is a ``ConceptBankError`` naming the file."""
    path = Path(path)
    if not path.exists():
        raise ConceptBankError(f"Concept bank file {path} does not exist.")
    if path.is_dir():
        raise ConceptBankError(f"Concept bank path {path} is a directory, not a text file.")
    try:
        size = path.stat().st_size
        if size > MAX_BANK_BYTES:
            raise ConceptBankError(
                f"Concept bank file {path} is {size} bytes, more than the {MAX_BANK_BYTES}-byte limit."
            )
        data = path.read_bytes()
    except OSError as error:
        raise ConceptBankError(
            f"Concept bank file {path} cannot be read: {error.strerror or error}."
        ) from None
    return parse_concepts(_decode(data, str(path)), source=str(path))


def _read_shipped(name: str) -> ConceptBank:
    """One of the banks that ship inside the package (``banks/<name>.txt``)."""
    data = resources.files(__package__).joinpath("banks", f"{name}.txt").read_bytes()
    source = f"{_SHIPPED_PREFIX}{name}"
    return parse_concepts(_decode(data, source), source=source)


def load_bank(name_or_path: str | os.PathLike[str]) -> ConceptBank:
    """A shipped bank by name (``toybirds``, ``shipped:toybirds``, ...) or a concept file by path."""
    text = os.fspath(name_or_path)
    name = text.strip().lower().removeprefix(_SHIPPED_PREFIX)
    if name in SHIPPED_BANKS:
        return _read_shipped(name)
    if text.strip().lower().startswith(_SHIPPED_PREFIX) or "\0" in text or not Path(text).exists():
        raise ConceptBankError(
            f"Concept bank {text!r} is neither a shipped bank ({', '.join(SHIPPED_BANKS)}) "
            "nor an existing file."
        )
    return read_concept_file(text)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _checked_for_writing(concepts: Iterable[str], max_chars: int) -> list[str]:
    """Concepts with whitespace collapsed, after checking that they will read back exactly as written."""
    cleaned: list[str] = []
    seen: set[str] = set()
    for position, concept in enumerate(concepts):
        if not isinstance(concept, str):
            raise ConceptBankError(f"Concept number {position} is {type(concept).__name__}, not text.")
        if "#" in concept or _bad_character(concept) is not None or "\n" in concept or "\r" in concept:
            raise ConceptBankError(
                f"Concept {concept!r} holds '#', a line break or a control character and cannot be written."
            )
        text = " ".join(unicodedata.normalize("NFC", concept).split())
        if not text or len(text) > max_chars:
            raise ConceptBankError(f"Concept {concept!r} must have 1 to {max_chars} characters.")
        if text.casefold() in seen:
            raise ConceptBankError(
                f"Concept {text!r} appears twice (ignoring case); write each concept once."
            )
        seen.add(text.casefold())
        cleaned.append(text)
    if not cleaned:
        raise ConceptBankError("A concept bank needs at least one concept; nothing to write.")
    return cleaned


def write_concept_file(
    path: str | os.PathLike[str], concepts: Iterable[str], header: str | None = None
) -> None:
    """Write a concept bank atomically (temporary file in the same folder, then ``os.replace``).

    ``header`` becomes ``#`` comment lines at the top.  Concepts that would not read back unchanged
    (a ``#``, a line break, a duplicate, too long) raise ``ConceptBankError`` before anything is written.
    """
    path = Path(path)
    lines = _checked_for_writing(concepts, MAX_CONCEPT_CHARS)
    header_lines = [] if header is None else [f"# {line}".rstrip() for line in _split_lines(header)]
    body = "\n".join([*header_lines, *lines]) + "\n"
    if path.is_dir():
        raise ConceptBankError(f"Cannot write concept bank to {path}: it is a directory.")
    if not path.parent.is_dir():
        raise ConceptBankError(f"Cannot write concept bank to {path}: folder {path.parent} does not exist.")
    write_file_atomic(path, lambda stream: stream.write(body.encode("utf-8")), fsync=True)


# ---------------------------------------------------------------------------------------------
# Filters
# ---------------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------------
# ToyBirds ground truth
# ---------------------------------------------------------------------------------------------

# Words a concept may use for each ToyBirds part (captions say "wing"; "wings" is accepted too).
_PART_WORDS: dict[str, str] = {
    "head": "head",
    "heads": "head",
    "wing": "wing",
    "wings": "wing",
    "body": "body",
    "bodies": "body",
    "tail": "tail",
    "tails": "tail",
}


def _resolve_species(species: toybirds.Species | int | str) -> toybirds.Species:
    """A ToyBirds species from the object itself, its id or its name."""
    if isinstance(species, toybirds.Species):
        return species
    if isinstance(species, int) and not isinstance(species, bool) and 0 <= species < len(toybirds.SPECIES):
        return toybirds.SPECIES[species]
    if isinstance(species, str):
        for candidate in toybirds.SPECIES:
            if candidate.name == species.strip().lower():
                return candidate
    raise ValueError(
        f"{species!r} is not a ToyBirds species (give a Species, an id 0..{len(toybirds.SPECIES) - 1} "
        "or a species name)."
    )


def toybirds_concept_parts(concept: str) -> tuple[str, dict[str, str]] | None:
    """The ToyBirds part and attribute values a concept names, e.g. "red crested head" ->
    ``("head", {"colour": "red", "crest": "crested"})``; None if it is not about the world's attributes.

    A concept is about the world when it reads "<value> ... <part>" and every value word is an
    allowed value of that part (``toybirds.ATTRIBUTE_VALUES``), at most one value per attribute.
    Species parts take only the four species colours, so "purple head" is not about the world;
    the nuisance tail takes every palette colour.
    """
    words = concept.casefold().replace("-", " ").split()
    if len(words) < 2 or words[-1] not in _PART_WORDS:
        return None
    part = _PART_WORDS[words[-1]]
    value_to_attribute = {
        value: attribute
        for attribute in toybirds.PART_ATTRIBUTES[part]
        for value in toybirds.ATTRIBUTE_VALUES[part][attribute]
    }
    named: dict[str, str] = {}
    for word in words[:-1]:
        attribute = value_to_attribute.get(word)
        if attribute is None or attribute in named:
            return None
        named[attribute] = word
    return part, named


def toybirds_concept_truth(concept: str, species: toybirds.Species | int | str) -> bool | None:
    """Whether ``concept`` is true of a ToyBirds species (species-level ground truth).

    Only the colours of the species parts (head, wing, body) are species traits: "blue wing" is True
    for a blue-winged species and False for any other.  Everything else is None, because a species
    does not decide it: the per-image nuisance (a crest, a wing pattern, anything about the tail, or a
    concept mixing one in, such as "red crested head"), a distractor such as "webbed feet", and a
    value the world never gives that part, such as "purple head" or "striped head".
    """
    bird = _resolve_species(species)
    parsed = toybirds_concept_parts(concept)
    if parsed is None:
        return None
    part, named = parsed
    if part not in toybirds.SPECIES_PARTS or set(named) != {"colour"}:
        return None
    return bird.part_label(part) == named["colour"]
