"""CEIR concept banks: plain-text vocabularies of human-readable concepts, read, parsed and written safely.

A concept bank is a UTF-8 text file with one concept per line.  ``#`` starts a comment (a whole line
or the tail of a line), blank lines are ignored and runs of whitespace collapse to one space.  A comment
line ``# template: a photo of a bird with a {}.`` declares the caption each concept is put in before the
text tower reads it (``ConceptBank.prompts``); without one the concept text is read as it is.  Reading
is forgiving where it is safe (a byte-order mark, Windows line endings, case-insensitive duplicates kept
once) and reports everything it dropped in ``ConceptBank.issues``, so a user sees why a line is missing.

Banks shipped with the package live in ``banks/<name>.txt``; ``toybirds`` names every part attribute
of the ToyBirds world (``core.data.toybirds_concepts`` says which are true of a species). The filters that
prune a bank for CEIR are in ``core.ceir.bank_filters``.
"""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from core.atomic import write_file_atomic

SHIPPED_BANKS: tuple[str, ...] = ("toybirds", "cifar10", "cub200", "general")
MAX_CONCEPT_CHARS = 60
MAX_BANK_BYTES = 1_000_000  # a concept bank is a word list; anything larger is almost surely the wrong file

_SHIPPED_PREFIX = "shipped:"
RAW_TEMPLATE = "{}"  # the concept text as it is
_TEMPLATE_DIRECTIVE = "template:"


class ConceptBankError(ValueError):
    """A concept bank that cannot be used; the message names the file and, where known, the line."""


@dataclass
class ConceptBank:
    """An ordered list of unique concepts, where they came from, and what was dropped while reading them."""

    concepts: list[str]
    source: str
    issues: list[str] = field(default_factory=list)
    template: str = RAW_TEMPLATE  # the caption each concept is put in for the text tower

    def __len__(self) -> int:
        return len(self.concepts)

    def prompts(self) -> list[str]:
        """The texts the text tower reads: every concept in the bank's template."""
        return apply_template(self.template, self.concepts)


def check_template(template: str, source: str = "The concept template") -> str:
    """``template`` if it holds ``{}`` exactly once and no other brace; otherwise ``ConceptBankError``."""
    valid = (
        isinstance(template, str)
        and "{}" in template
        and not any(brace in template.replace("{}", "", 1) for brace in "{}")
        and len(template) <= 2 * MAX_CONCEPT_CHARS
    )
    if not valid:
        raise ConceptBankError(
            f"{source} {template!r} must hold '{{}}' exactly once (where the concept goes), no other "
            f"brace, and at most {2 * MAX_CONCEPT_CHARS} characters."
        )
    return template


def template_note(template: str) -> str:
    """ ", each concept read as '<template>'" for a caption template, nothing for the bare concept text (what
    a listing of the bank or of its labels appends)."""
    return "" if template == RAW_TEMPLATE else f", each concept read as '{template}'"


def apply_template(template: str, concepts: Iterable[str]) -> list[str]:
    """Each concept put in ``template`` ("a photo of a bird with a {}." + "red head")."""
    return [template.replace("{}", concept) for concept in concepts]


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
    template = RAW_TEMPLATE
    first_seen: dict[str, tuple[int, str]] = {}
    for number, raw in enumerate(_split_lines(text), start=1):
        line, _, comment = raw.partition("#")
        if not line.strip() and comment.strip().startswith(_TEMPLATE_DIRECTIVE):
            declared = " ".join(comment.strip().removeprefix(_TEMPLATE_DIRECTIVE).split())
            template = check_template(declared, f"Concept bank {source}, line {number}: the template")
            continue
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
    return ConceptBank(concepts=concepts, source=source, issues=issues, template=template)


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
