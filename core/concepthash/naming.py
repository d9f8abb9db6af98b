"""Which ToyBirds part each concept stands for: one matching and one chance rule for every view.

A concept's name comes from the part swap (``core.concepthash.evaluate.part_swap``): concepts are matched
one-to-one to the species parts (head, wing, body) by Hungarian assignment maximising the flip rate, the
probability that a concept's sub-code changes when only that part's colour is repainted. The pointing game
(``localization``: how often the concept's most-attended patch lies on the part, centre rule) is read for
that same matched part; it never matches concepts on its own.

The chance rule. Concept m matched to part p is named "≈ p" only when both hold:

* its sub-code follows p more than anything else repainted: its flip rate for p is strictly greater than
  its largest flip rate when any other part is repainted (the other species parts and the nuisance tail),
  the off-diagonal of its column of the part-swap matrix;
* its attention finds p more often than chance: its pointing-game hit rate on p is strictly greater than
  the hit rate of a uniformly random patch on p (skipped only when the bundle stores no hit rates).

Otherwise, and for a concept left over by the one-to-one matching (more concepts than species parts), the
name is "no part". Free of PyTorch: the dashboard names concepts from a bundle's stored metrics with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.data.toybirds import SPECIES_PARTS

NO_PART = "no part"


def match_species_parts(
    matrix: np.ndarray, species_rows: int = len(SPECIES_PARTS)
) -> tuple[np.ndarray, np.ndarray, tuple[int, int, float] | None]:
    """Concepts (columns) matched one-to-one to the species parts (the first ``species_rows`` rows) by
    Hungarian assignment maximising the matrix, and the largest unmatched cell of the whole matrix as
    (row, column, value), None when every cell is matched."""
    from scipy.optimize import linear_sum_assignment  # only when matching: pages import this module early

    matrix = np.asarray(matrix, dtype=float)
    parts, concepts = linear_sum_assignment(matrix[:species_rows], maximize=True)
    off = matrix.copy()
    off[parts, concepts] = -np.inf
    if not np.isfinite(off).any():
        return parts, concepts, None
    p, m = np.unravel_index(int(np.argmax(off)), off.shape)
    return parts, concepts, (int(p), int(m), float(off[p, m]))


@dataclass(frozen=True)
class ConceptPart:
    """One concept's matched part and the two scores the chance rule reads (None: not known)."""

    concept: int
    part: str | None  # the species part the flip-rate matching gave it; None: left over
    flip_rate: float | None  # P(its sub-code flips | its part repainted)
    other_part: str | None  # the other repainted part that flips its sub-code most
    other_flip_rate: float | None  # ... and how often
    hit_rate: float | None  # pointing game on its part (None: the bundle stores no hit rates)
    random_rate: float | None  # a random patch's hit rate on its part

    @property
    def follows_its_part(self) -> bool:
        """Its flip rate for its part beats its flip rate for every other repaint."""
        if self.part is None or self.flip_rate is None:
            return False
        return self.other_flip_rate is None or self.flip_rate > self.other_flip_rate

    @property
    def points_at_its_part(self) -> bool | None:
        """Its hit rate on its part beats a random patch's; None when the hit rates are not known."""
        if self.hit_rate is None or self.random_rate is None:
            return None
        return self.hit_rate > self.random_rate

    @property
    def name(self) -> str:
        """Its part when it beats chance on both scores (see the module notes), else :data:`NO_PART`."""
        if self.part is not None and self.follows_its_part and self.points_at_its_part is not False:
            return self.part
        return NO_PART

    @property
    def why_no_part(self) -> str:
        """One phrase saying why it is named no part (empty when it is named)."""
        if self.part is None:
            return "left over: the matching gives each species part one concept"
        reasons = []
        if not self.follows_its_part:
            reasons.append(f"flips at least as often when the {self.other_part} is repainted")
        if self.points_at_its_part is False:
            reasons.append(f"points at the {self.part} no more often than a random patch")
        return "; ".join(reasons)


def name_concepts(
    flip_rates: np.ndarray,
    parts: Sequence[str],
    hit_rates: np.ndarray | None = None,
    hit_parts: Sequence[str] | None = None,
    random_rates: Sequence[float] | None = None,
) -> list[ConceptPart]:
    """Every concept's :class:`ConceptPart`, in concept order.

    ``flip_rates`` is the (parts, M) part-swap matrix with rows named by ``parts`` (species parts and any
    nuisance part); ``hit_rates`` the (M, len(hit_parts)) pointing-game matrix and ``random_rates`` a random
    patch's hit rate per part of ``hit_parts`` (both optional, as old bundles lack them).
    """
    flips = np.asarray(flip_rates, dtype=float)
    parts = [str(p) for p in parts]
    if flips.ndim != 2 or flips.shape[0] != len(parts):
        raise ValueError(f"The part-swap matrix has shape {flips.shape}, not ({len(parts)} parts, concepts).")
    species = [i for i, p in enumerate(parts) if p in SPECIES_PARTS]
    rows = species + [i for i in range(len(parts)) if i not in species]  # species parts first, as matched
    part_rows, concepts, _ = match_species_parts(flips[rows], len(species))
    matched = {int(m): rows[int(r)] for r, m in zip(part_rows, concepts, strict=True)}
    hits = _hit_lookup(hit_rates, hit_parts, random_rates, flips.shape[1])
    named = []
    for m in range(flips.shape[1]):
        row = matched.get(m)
        if row is None:
            named.append(ConceptPart(m, None, None, None, None, None, None))
            continue
        others = [i for i in range(len(parts)) if i != row]
        other = max(others, key=lambda i: flips[i, m]) if others else None
        hit, chance = hits(m, parts[row])
        named.append(
            ConceptPart(
                concept=m,
                part=parts[row],
                flip_rate=float(flips[row, m]),
                other_part=parts[other] if other is not None else None,
                other_flip_rate=float(flips[other, m]) if other is not None else None,
                hit_rate=hit,
                random_rate=chance,
            )
        )
    return named


def _hit_lookup(
    hit_rates: np.ndarray | None,
    hit_parts: Sequence[str] | None,
    random_rates: Sequence[float] | None,
    n_concepts: int,
):
    """``lookup(concept, part) -> (hit rate, random rate)``, (None, None) where they are not known."""
    table = None if hit_rates is None else np.asarray(hit_rates, dtype=float)
    columns = [str(p) for p in hit_parts or []]
    chance = None if random_rates is None else [float(r) for r in random_rates]
    usable = (
        table is not None
        and chance is not None
        and table.ndim == 2
        and table.shape == (n_concepts, len(columns))
        and len(chance) == len(columns)
    )

    def lookup(concept: int, part: str) -> tuple[float | None, float | None]:
        if not usable or part not in columns:
            return None, None
        j = columns.index(part)
        return float(table[concept, j]), chance[j]

    return lookup


def concept_parts(metrics: Mapping[str, Any]) -> list[ConceptPart]:
    """:func:`name_concepts` from a bundle's stored metrics (``part_swap`` and ``localization``); empty when
    the bundle stores no part-swap matrix (other data than ToyBirds, or evaluated before the part swap)."""
    swap = metrics.get("part_swap")
    if not isinstance(swap, Mapping) or not swap.get("matrix") or not swap.get("parts"):
        return []
    local = metrics.get("localization")
    local = local if isinstance(local, Mapping) else {}
    return name_concepts(
        np.asarray(swap["matrix"], dtype=float),
        swap["parts"],
        local.get("hit_rates"),
        local.get("parts"),
        local.get("random_rates"),
    )
