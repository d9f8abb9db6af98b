"""Which concepts are true of a ToyBirds species: the world's ground truth for scoring concept labels.

The ``toybirds`` concept bank names every part attribute of the world: the colours of the three species parts
(head, wing, body), which ``toybirds_concept_truth`` checks against a species, and the per-image nuisance
(crest, wing pattern, tail colour and shape), which says nothing about the species.
"""

from __future__ import annotations

from core.data import toybirds

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


def toybirds_species_colour(concept: str) -> tuple[str, str] | None:
    """(part, colour) of a concept that names only the colour of a species part, such as "blue wing" ->
    ``("wing", "blue")``; None for anything else (nuisance, distractors, "red crested head")."""
    parsed = toybirds_concept_parts(concept)
    if parsed is None or parsed[0] not in toybirds.SPECIES_PARTS or set(parsed[1]) != {"colour"}:
        return None
    return parsed[0], parsed[1]["colour"]


def toybirds_concept_truth(concept: str, species: toybirds.Species | int | str) -> bool | None:
    """Whether ``concept`` is true of a ToyBirds species (species-level ground truth).

    Only the colours of the species parts (head, wing, body) are species traits: "blue wing" is True
    for a blue-winged species and False for any other.  Everything else is None, because a species
    does not decide it: the per-image nuisance (a crest, a wing pattern, anything about the tail, or a
    concept mixing one in, such as "red crested head"), a distractor such as "webbed feet", and a
    value the world never gives that part, such as "purple head" or "striped head".
    """
    bird = _resolve_species(species)
    named = toybirds_species_colour(concept)
    return None if named is None else bird.part_label(named[0]) == named[1]
