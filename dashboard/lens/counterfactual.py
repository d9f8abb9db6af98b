"""Counterfactual ToyBirds: redraw one database bird with one part repainted and compare the codes.

ConceptHash claims each sub-code stands for one part. ToyBirds can test that on a single image:
:func:`core.data.toybirds.render_counterfactual` draws the very same scene with only one part's
colour changed, so any sub-code that flips was flipped by that part. The functions here render
the pair, encode both images, and say which sub-codes flipped; nothing imports Streamlit (the
page adds the caching and the drawing).
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from core.data.toybirds import (
    NUISANCE_PARTS,
    PART_VALUES,
    PARTS,
    ToyBirdSample,
    render_counterfactual,
    render_sample,
)
from lens.hashing import NO_PART, WHOLE_CODE, bits_per_concept, concept_label, encode_images


def colour_choices(part: str, current: Mapping[str, str]) -> list[str]:
    """The colours ``part`` may be repainted with: its allowed values minus the one it has now."""
    if part not in PART_VALUES:
        raise ValueError(f"Unknown part {part!r}; expected one of {', '.join(PARTS)}.")
    return [value for value in PART_VALUES[part] if value != current.get(part)]


@dataclass(frozen=True)
class SubcodeChange:
    """One concept's sub-code before and after the repaint (bits ``b0`` first, 1 for +1)."""

    concept: int
    name: str
    part: str | None
    before: str
    after: str

    @property
    def flipped(self) -> bool:
        return self.before != self.after

    @property
    def flipped_bits(self) -> list[int]:
        return [j for j, (a, b) in enumerate(zip(self.before, self.after, strict=True)) if a != b]


def subcode_changes(
    before: np.ndarray,
    after: np.ndarray,
    n_concepts: int,
    names: Mapping[int, str],
    cls_baseline: bool = False,
) -> list[SubcodeChange]:
    """One :class:`SubcodeChange` per concept, named by ``names`` (:func:`lens.hashing.concept_names`); a
    concept named "no part" stands for no part in the verdict.

    The CLS baseline has one group, its whole code, named as such and matched to no part.
    """
    before, after = np.asarray(before).reshape(-1), np.asarray(after).reshape(-1)
    per = bits_per_concept(before.size, n_concepts)
    if before.shape != after.shape:
        raise ValueError(f"Codes of {before.size} and {after.size} bits cannot be compared.")

    def bits(row: np.ndarray, m: int) -> str:
        return "".join("1" if b > 0 else "0" for b in row[m * per : (m + 1) * per])

    if cls_baseline:
        return [
            SubcodeChange(m, WHOLE_CODE, None, bits(before, m), bits(after, m)) for m in range(n_concepts)
        ]
    return [
        SubcodeChange(m, concept_label(m, dict(names)), _part(names.get(m)), bits(before, m), bits(after, m))
        for m in range(n_concepts)
    ]


def _part(name: str | None) -> str | None:
    """The part a concept's name stands for: none for "no part"."""
    return None if name in (None, NO_PART) else name


_GROUP = "font-family:monospace;padding:2px 7px;margin-right:4px;border-radius:5px;white-space:nowrap;"
_KEPT = _GROUP + "border:1px solid #c8c8c8;"
_FLIPPED = _GROUP + "background:#ff7f0e;color:#ffffff;font-weight:700;border:1px solid #ff7f0e;"


def code_html(changes: list[SubcodeChange], side: str) -> str:
    """One image's code as HTML, one box per sub-code, flipped sub-codes filled orange and bold.

    ``side`` is ``"before"`` or ``"after"``: which bits to show; the redrawn side also counts the
    flipped bits (``⟲ 1/2 bits``). Names are escaped, so a bundle's part names cannot inject markup.
    """
    if side not in ("before", "after"):
        raise ValueError(f"side must be 'before' or 'after', not {side!r}.")
    boxes = []
    for change in changes:
        bits = change.before if side == "before" else change.after
        label = html.escape(change.name.replace("concept ", "c", 1))
        if change.flipped:
            note = f" ⟲ {len(change.flipped_bits)}/{len(bits)} bits" if side == "after" else ""
            boxes.append(f'<span style="{_FLIPPED}">{label} {bits}{note}</span>')
        else:
            boxes.append(f'<span style="{_KEPT}">{label} {bits}</span>')
    return " ".join(boxes)


def flipped_line(changes: list[SubcodeChange]) -> str:
    """``"**Flipped:** concept 1 ≈ wing (bits b0, b1)"``, or that nothing flipped."""
    flipped = [c for c in changes if c.flipped]
    if not flipped:
        return "**Flipped: nothing** — the two codes are identical."
    listed = ", ".join(
        f"{c.name} (bit{'s' if len(c.flipped_bits) > 1 else ''} {', '.join(f'b{j}' for j in c.flipped_bits)})"
        for c in flipped
    )
    return f"**Flipped: {listed}**"


def changes_table(changes: list[SubcodeChange]) -> pd.DataFrame:
    """The repaint's verdict per concept, one row each: its name, matched part, sub-code before and after, and
    which bits flipped (empty when none) — readable for 8–16 concepts, where a row of code boxes wraps."""
    return pd.DataFrame(
        [
            {
                "concept": change.name,
                "matched part": change.part or "—",
                "before": change.before,
                "after": change.after,
                "flipped bits": ", ".join(f"b{j}" for j in change.flipped_bits),
            }
            for change in changes
        ],
        columns=["concept", "matched part", "before", "after", "flipped bits"],
    )


def verdict(changes: list[SubcodeChange], part: str, cls_baseline: bool = False) -> tuple[bool, str]:
    """Whether the codes behaved as ConceptHash claims, and one sentence saying what happened.

    Repainting a species part should flip the sub-code matched to it and no other; repainting
    the nuisance tail should flip nothing. For the CLS baseline there are no sub-codes: only
    whether the code changed is reported (and counted as expected for species parts).
    """
    held, sentence = _verdict(changes, part, cls_baseline)
    return held, sentence[:1].upper() + sentence[1:]


def _verdict(changes: list[SubcodeChange], part: str, cls_baseline: bool) -> tuple[bool, str]:
    flipped = [c for c in changes if c.flipped]
    nuisance = part in NUISANCE_PARTS
    if cls_baseline:
        n_bits = sum(len(c.flipped_bits) for c in changes)
        if not flipped:
            said = "The code did not change"
        else:
            said = f"The code changed ({n_bits} bit{'s' if n_bits != 1 else ''})"
        kind = "a nuisance part" if nuisance else "a species part"
        expected = not flipped if nuisance else bool(flipped)
        return expected, f"{said} when the {part} ({kind}) was repainted; one code, no concepts."
    names = ", ".join(c.name for c in flipped)
    if nuisance:
        if not flipped:
            return True, f"No sub-code flipped: the code ignores the {part}, which is not a species trait."
        return False, f"The {part} is not a species trait, yet {names} flipped."
    own = [c for c in changes if c.part == part]
    if not own:
        if not flipped:
            return False, f"No sub-code flipped, and no concept is named after the {part}."
        return False, f"No concept is named after the {part}; {names} flipped."
    others = [c for c in flipped if c.part != part]
    own_names = ", ".join(c.name for c in own)
    if all(c.flipped for c in own) and not others:
        return True, f"Only {own_names} flipped: the sub-code of the {part} followed the {part}."
    if not flipped:
        return False, f"No sub-code flipped, not even {own_names}."
    if not any(c.flipped for c in own):
        return False, f"{own_names} did not flip; {names} flipped instead."
    return False, f"{own_names} flipped, but so did {', '.join(c.name for c in others)}."


def species_line(original: ToyBirdSample, redrawn: ToyBirdSample, part: str) -> str:
    """Whether the repainted bird is still its species, another one (named) or no species at all."""
    if redrawn.species is None:
        colours = ", ".join(f"{p} {redrawn.traits[p]['colour']}" for p in PARTS if p not in NUISANCE_PARTS)
        return f"No species has these colours ({colours}): the redrawn bird is no species."
    if original.species is not None and redrawn.species.id == original.species.id:
        return f"Still a *{redrawn.species.name}*: the {part} is not a species trait."
    return f"Another species: the redrawn bird is a *{redrawn.species.name}*."


@dataclass(frozen=True)
class Counterfactual:
    """A database bird, the same scene with one part repainted, and both codes."""

    original: ToyBirdSample
    redrawn: ToyBirdSample
    part: str
    value: str
    before: np.ndarray
    after: np.ndarray


def counterfactual(loaded: Any, index: int, part: str, value: str, split: str = "train") -> Counterfactual:
    """Redraw ToyBirds image ``index`` of ``split`` (the bundle's seed and size) with ``part`` in
    ``value``, and encode both images with the bundle's model.

    Both codes are computed afresh, the same way, so a flip is the repaint's doing.
    """
    data = loaded.data
    if not data.has_parts:
        raise ValueError("Counterfactual birds need ToyBirds data; this bundle was trained on other images.")
    original = render_sample(split, index, data.seed, data.image_size)
    if original.traits[part]["colour"] == value:
        raise ValueError(f"The {part} of image #{index} already is {value}; pick another colour.")
    redrawn = render_counterfactual(split, index, part, value, data.seed, data.image_size)
    codes = encode_images(loaded, [original.image, redrawn.image])
    return Counterfactual(original, redrawn, part, value, codes[0], codes[1])
