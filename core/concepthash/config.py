"""ConceptHash's settings as data: the model and its losses, and the training run.

Free of PyTorch, so the CLI takes its defaults from here without importing torch.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.settings import RunSettings


def bits_per_concept(bits: int, n_concepts: int) -> int:
    """K/M, the length of each concept's sub-code, with one sentence when the bits do not split evenly."""
    if n_concepts < 1 or bits % n_concepts:
        raise ValueError(f"{bits} bits cannot be split evenly over {n_concepts} concepts.")
    return bits // n_concepts


@dataclass
class ConceptHashConfig:
    """Hyper-parameters of the model and its losses (defaults follow the reference where known)."""

    bits: int = 12
    n_concepts: int = 3
    generator_dim: int = 128
    generator_heads: int = 4
    adapter_ratio: float = 0.5  # adapter bottleneck = backbone width x this (reference: 384 of 768)
    center_hidden: int = 256  # 0: the centres are a linear map of the text features (not in the paper)
    # Blocks the concept tokens take part in, counted from the last (0: all, as in the reference).
    concept_blocks: int = 0
    # Not in the paper (0 = all blocks): read the concept tokens after the first N blocks, where the
    # patch tokens have mixed in little of the rest of the image, so a concept knows mostly what it sees.
    concept_depth: int = 0
    # Not in the paper (0 = off): L_loc, each concept re-encodes only the `locality_patches` patches
    # it attends to most, and the code assembled from these local sub-codes must still hit its class
    # centre; so each slice of the centres has to be predictable from one concept's own region.
    locality_weight: float = 0.0
    locality_patches: int = 6
    # With L_loc on: the centres learn from L_loc alone (the whole-image losses see them detached), so each
    # slice can only be what one concept's own patches can tell.
    centres_from_local: bool = False
    # Not in the paper (0 = off): L_focus, the normalised entropy of each concept's read-out attention,
    # so that a concept gathers from a few patches rather than from the whole image.
    focus_weight: float = 0.0
    # Not in the paper (0 = off): L_mix. Each image gets a rectangle of whole patches pasted in from another
    # image of the batch; a concept whose attention falls (mostly) inside the rectangle must give the other
    # image's sub-code, one looking (mostly) outside its own image's (the slice of the class centre, sign).
    # So a sub-code may depend only on what its concept looks at, not on the rest of the bird. No labels
    # beyond the class; one more forward pass per step.
    mix_weight: float = 0.0
    # Not in the paper (0 = off): L_bit, a hinge on every bit of the code towards its class centre's sign,
    # mean(max(0, 1 - u * sign(o_y))): the cosine losses leave single bits near 0, where any change of the
    # image can flip them.
    bit_weight: float = 0.0
    language_guidance: bool = True
    # Diagnostic, not ConceptHash: fixed ToyBirds per-part centres built from the species' part colours
    # (part labels!), to measure what the encoder does when its targets are part-specific.
    oracle_centres: bool = False
    # Not in the paper (None = off): centres from language alone. One group of phrases per concept, e.g.
    # {"head": ["a photo of a bird with a red head.", ...], ...}; concept m's part of class c's centre is
    # the code of the phrase in group m that the text tower finds closest to the class prompt. No image
    # part labels, but a part vocabulary whose values the class names imply (see read_part_phrases).
    part_phrases: dict[str, list[str]] | None = None
    # Not in the paper (0 = off; ToyBirds with `part_phrases` listing each part's values in SPECIES_COLOURS
    # order): this share of training images gets its species colours swapped by a random reordering
    # (toybirds.recolour, a palette swap), and its centre the same reordering of its class's phrase
    # values, so birds with colour combinations no species has teach each sub-code to follow its own part.
    # The loss then compares codes with all value combinations' centres, not the classes' only.
    recolour: float = 0.0
    class_template: str = "a photo of a {}."
    scale: float = 8.0
    margin: float = 0.2
    clf_weight: float = 1.0
    quan_weight: float = 1.0
    cd_weight: float = 1.0
    csd_weight: float = 1.0
    mode: str = "concepts"  # "concepts" (ConceptHash) or "cls" (baseline: hash the CLS embedding)

    def __post_init__(self) -> None:
        if self.mode not in ("concepts", "cls"):
            raise ValueError(f"mode must be 'concepts' or 'cls', not {self.mode!r}.")
        if self.center_hidden < 0:
            raise ValueError("center_hidden must be 0 (a linear map) or positive.")
        if self.locality_patches < 1:
            raise ValueError("locality_patches must be positive.")
        if self.bits < 1 or self.n_concepts < 1:
            raise ValueError("bits and concepts must be positive.")
        if self.oracle_centres and self.mode != "concepts":
            raise ValueError("Oracle centres are per concept; they need mode 'concepts'.")
        if self.mix_weight > 0 and self.mode != "concepts":
            raise ValueError("L_mix follows each concept's attention; it needs mode 'concepts'.")
        if self.bits % self.n_concepts:
            raise ValueError(
                f"{self.bits} bits cannot be split evenly over {self.n_concepts} concepts; "
                "choose bits divisible by the number of concepts."
            )
        if self.part_phrases is not None:
            self._check_part_phrases()
        if not 0.0 <= self.recolour <= 1.0:
            raise ValueError(f"recolour is a share of the training images, in [0, 1]; got {self.recolour}.")
        if self.recolour > 0:
            self._check_recolour()

    def _check_part_phrases(self) -> None:
        groups = self.part_phrases or {}
        if self.mode != "concepts" or self.oracle_centres:
            raise ValueError("Part phrases set the centres; they need mode 'concepts' and no oracle.")
        if len(groups) != self.n_concepts:
            raise ValueError(
                f"Part phrases give {len(groups)} group(s) for {self.n_concepts} concepts; "
                "give one group per concept."
            )
        values = 2**self.bits_per_concept
        for part, phrases in groups.items():
            if not isinstance(phrases, list) or not all(isinstance(x, str) and x.strip() for x in phrases):
                raise ValueError(f"Part phrases for {part!r} must be a list of non-empty texts.")
            if not 2 <= len(phrases) <= values:
                raise ValueError(
                    f"Part {part!r} has {len(phrases)} phrase(s); a {self.bits_per_concept}-bit sub-code "
                    f"holds 2 to {values} values."
                )

    def _check_recolour(self) -> None:
        from core.data.toybirds import SPECIES_COLOURS

        groups = self.part_phrases or {}
        aligned = groups and all(
            len(phrases) == len(SPECIES_COLOURS)
            and all(
                re.search(rf"\b{colour}\b", phrase)
                for colour, phrase in zip(SPECIES_COLOURS, phrases, strict=True)
            )
            for phrases in groups.values()
        )
        if not aligned:
            raise ValueError(
                "Recolouring swaps the ToyBirds species colours in the image and in the targets; it needs "
                f"part phrases that name {', '.join(SPECIES_COLOURS)} in that order for every part "
                "(--part-phrases toybirds)."
            )

    @property
    def bits_per_concept(self) -> int:
        return bits_per_concept(self.bits, self.n_concepts)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConceptHashConfig:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


OPTIMIZERS = ("sgd", "adamw")


@dataclass
class TrainConfig(RunSettings):
    """The training run (the reference recipe; see ``core.concepthash.train``)."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    optimizer: str = "adamw"  # reference: SGD (slower in a short CPU budget; core.concepthash.train)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_fraction: float = 0.1  # share of all steps spent in the linear warm-up
    augment: bool = True  # flips + small rotation/shift/scale
    stream: bool = True  # ToyBirds: fresh images every epoch (other data sets repeat the train split)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, not {self.optimizer!r}.")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}.")


def read_part_phrases(source: str) -> dict[str, list[str]]:
    """Part phrases (see ``ConceptHashConfig.part_phrases``) from ``toybirds`` (the ToyBirds species parts
    and colours) or a JSON file ``{"part": ["phrase", ...], ...}``; ValueError with one sentence otherwise."""
    if source == "toybirds":
        from core.data.toybirds import part_value_phrases

        return part_value_phrases()
    path = Path(source)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"Cannot read the part phrases file {source} ({exc.strerror or exc}).") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"The part phrases file {source} is not JSON ({exc}).") from None
    if not isinstance(data, dict) or not data:
        raise ValueError(f"The part phrases file {source} must hold an object of part: [phrases].")
    return {str(part): phrases for part, phrases in data.items()}
