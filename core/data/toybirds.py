"""ToyBirds: a procedural, deterministic world of drawn birds with per-part ground truth.

Real fine-grained data sets cannot be downloaded here, and even where they can, they do not say
*where* each part of a bird is in a way that lets us score concept localisation.  ToyBirds draws
every bird from four parts (``PARTS``), so for every image we know the species, its family, a
caption, the attribute table and one visible-pixel mask per part.

World v2 is built so that the ConceptHash poster's toy study (6-bit codes, 3 concepts x 2 bits)
can succeed exactly and its failure can be measured:

* A species is defined by exactly three parts, ``SPECIES_PARTS`` = head, wing, body, each
  painted in one of four colours (``SPECIES_COLOURS``).  The 24 species are chosen from the 64
  combinations so that every value of every part is used by exactly six species and no two
  species share all three values: a per-part 2-bit code tells every species apart.
* A family is one body colour; the six species of a family differ only in head and wing.
* Everything else is per-image nuisance, never a species trait: the tail (colour from the full
  palette, shape), the crest, the fine wing pattern, pose, scale, position, flip, background,
  clutter and an occluding twig.
* Parts are big enough to localise on an 8 x 8 patch grid (see ``part_statistics``), and the
  wing is raised above the body so the species parts overlap little.
* ``render_counterfactual`` draws the very same scene with one part's colour replaced: every
  random draw happens in a fixed order that does not depend on the colours.

Every sample is a pure function of ``(split, index, seed, image_size)`` (plus an optional colour
swap): the random generator is seeded from a ``SeedSequence`` of those values, and drawing uses
only numpy and Pillow, so the same call gives the same pixels on every machine.

Rendering is anti-aliased: the scene is drawn at ``_SUPERSAMPLE`` times the target size and
box-downsampled.  The masks come from a label map drawn with the same operations in the same
painter's order, so a part hidden behind a later part (or behind a foreground twig) is not in
its mask; a pixel belongs to a part when more than half of its sub-pixels do.
"""

from __future__ import annotations

import colorsys
import csv
import functools
import itertools
import math
import os
import re
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from core.atomic import give_normal_modes, swap_folder_into_place

WORLD_VERSION = 2  # bump when the drawing or the species table changes; bundles record it

PARTS: tuple[str, ...] = ("head", "wing", "body", "tail")
SPECIES_PARTS: tuple[str, ...] = ("head", "wing", "body")
NUISANCE_PARTS: tuple[str, ...] = ("tail",)

# Bird palette: saturated, far apart in RGB, so each stays distinct at 64 px.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (214, 38, 38),
    "orange": (246, 138, 22),
    "yellow": (246, 218, 44),
    "green": (40, 166, 70),
    "blue": (38, 92, 226),
    "purple": (142, 58, 192),
    "black": (30, 30, 34),
    "white": (246, 246, 240),
}

# The four values every species part takes; the nuisance tail takes any palette colour.
SPECIES_COLOURS: tuple[str, ...] = ("red", "yellow", "blue", "green")
PART_VALUES: dict[str, tuple[str, ...]] = {
    "head": SPECIES_COLOURS,
    "wing": SPECIES_COLOURS,
    "body": SPECIES_COLOURS,
    "tail": tuple(COLOURS),
}

# Attributes of each part drawn per image: the colour first, then nuisance shape attributes.
PART_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "head": ("colour", "crest"),
    "wing": ("colour", "pattern"),
    "body": ("colour",),
    "tail": ("colour", "shape"),
}
ATTRIBUTE_VALUES: dict[str, dict[str, tuple[str, ...]]] = {
    "head": {"colour": PART_VALUES["head"], "crest": ("smooth", "crested")},
    "wing": {"colour": PART_VALUES["wing"], "pattern": ("plain", "striped", "spotted")},
    "body": {"colour": PART_VALUES["body"]},
    "tail": {"colour": PART_VALUES["tail"], "shape": ("fanned", "forked", "pointed")},
}

# A family is one body colour.
FAMILY_OF_BODY: dict[str, str] = {"red": "tanager", "yellow": "warbler", "blue": "jay", "green": "parrot"}
FAMILIES: tuple[str, ...] = tuple(FAMILY_OF_BODY.values())

# Poetic colour words used in species names (captions use the plain words).
_NAME_COLOUR = {"red": "scarlet", "yellow": "golden", "blue": "azure", "green": "emerald"}

# (family body colour, the six (head, wing) colour pairs of its species).  Each family takes one
# "diagonal" of the 4 x 4 head/wing grid (wing = head shifted by a per-family step) plus two more
# pairs, chosen so that every head and every wing colour is used by exactly six species.
_SPECIES_TABLE: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("red", (("red", "red"), ("yellow", "yellow"), ("blue", "blue"), ("green", "green"),
             ("red", "blue"), ("yellow", "green"))),
    ("yellow", (("red", "yellow"), ("yellow", "blue"), ("blue", "green"), ("green", "red"),
                ("yellow", "red"), ("blue", "yellow"))),
    ("blue", (("red", "blue"), ("yellow", "green"), ("blue", "red"), ("green", "yellow"),
              ("blue", "blue"), ("green", "green"))),
    ("green", (("red", "green"), ("yellow", "red"), ("blue", "yellow"), ("green", "blue"),
               ("green", "red"), ("red", "yellow"))),
)  # fmt: skip


@dataclass(frozen=True)
class Species:
    """One bird species: a colour for each of the three species parts; its family is its body colour."""

    id: int
    name: str
    family: str
    colours: dict[str, str] = field(hash=False)

    def part_label(self, part: str) -> str:
        """The species' value of ``part`` (its colour), for one of ``SPECIES_PARTS``."""
        if part not in SPECIES_PARTS:
            raise ValueError(
                f"{part!r} is not a species part; species are defined by {', '.join(SPECIES_PARTS)} "
                "(the tail is per-image nuisance)."
            )
        return self.colours[part]

    def part_rgb(self, part: str) -> tuple[int, int, int]:
        """The palette colour ``part`` is painted with (before per-image lighting jitter)."""
        return COLOURS[self.part_label(part)]


def _build_species() -> tuple[Species, ...]:
    """Expand ``_SPECIES_TABLE`` into the species tuple (ids are positions)."""
    table: list[Species] = []
    for body, pairs in _SPECIES_TABLE:
        family = FAMILY_OF_BODY[body]
        for head, wing in pairs:
            name = f"{_NAME_COLOUR[head]}-headed {_NAME_COLOUR[wing]}-winged {family}"
            table.append(Species(len(table), name, family, {"head": head, "wing": wing, "body": body}))
    return tuple(table)


SPECIES: tuple[Species, ...] = _build_species()
_SPECIES_BY_COLOURS = {tuple(s.colours[p] for p in SPECIES_PARTS): s for s in SPECIES}


def species_part_values(n_concepts: int) -> np.ndarray:
    """(24, n_concepts) int64: for concept m < 3, the colour index (in ``SPECIES_COLOURS``) of species part m
    of each species (row = species id); 0 for concepts from the fourth on. The values of the per-part oracle
    codes (``core.concepthash.codes.per_part_codes``)."""
    values = np.zeros((len(SPECIES), n_concepts), dtype=np.int64)
    for m, part in enumerate(SPECIES_PARTS[:n_concepts]):
        values[:, m] = [SPECIES_COLOURS.index(s.colours[part]) for s in SPECIES]
    return values


def species_with(colours: Mapping[str, str]) -> Species | None:
    """The species whose head, wing and body colours are ``colours``, or None if no species has them."""
    return _SPECIES_BY_COLOURS.get(tuple(colours.get(p) for p in SPECIES_PARTS))


@dataclass
class ToyBirdSample:
    """One rendered bird: the image, one visible-pixel mask per part and its ground truth.

    ``traits`` holds every drawn attribute per part (``PART_ATTRIBUTES``), species colours and
    per-image nuisance alike.  ``species`` is None only for a counterfactual whose colours are no
    species of the table.
    """

    image: Image.Image
    masks: dict[str, np.ndarray]
    species: Species | None
    traits: dict[str, dict[str, str]]
    caption: str
    split: str
    index: int
    seed: int

    @property
    def species_id(self) -> int | None:
        return None if self.species is None else self.species.id

    @property
    def species_name(self) -> str:
        return "unnamed bird" if self.species is None else self.species.name

    @property
    def family(self) -> str:
        return FAMILY_OF_BODY[self.traits["body"]["colour"]]

    @property
    def part_values(self) -> dict[str, str]:
        """The colour of every part (species parts and the nuisance tail)."""
        return {part: self.traits[part]["colour"] for part in PARTS}

    @property
    def visible(self) -> dict[str, bool]:
        return {part: bool(mask.any()) for part, mask in self.masks.items()}


# ---------------------------------------------------------------------------------------------
# Seeding and argument checks
# ---------------------------------------------------------------------------------------------

_SUPERSAMPLE = 4
_MIN_IMAGE_SIZE = 16
_SPLIT_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
_FIXED_SPLIT_CODES = {"train": 0, "test": 1}


def _split_code(split: str) -> int:
    """A fixed integer per split: 0/1 for train/test, otherwise 2 + CRC-32 of the name."""
    if not isinstance(split, str) or not _SPLIT_PATTERN.fullmatch(split):
        raise ValueError(
            f"Split {split!r} is not valid; use 'train', 'test' or another non-empty name of "
            "letters, digits, '-' and '_'."
        )
    if split in _FIXED_SPLIT_CODES:
        return _FIXED_SPLIT_CODES[split]
    return 2 + zlib.crc32(split.encode("utf-8"))


def _check_int(name: str, value: object, minimum: int) -> int:
    """Return ``value`` if it is an integer >= ``minimum``, else raise one clear ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _make_rng(split: str, index: int, seed: int) -> np.random.Generator:
    """The generator that fully determines one sample."""
    entropy = [WORLD_VERSION, seed, _split_code(split), index]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def species_of_index(index: int) -> int:
    """Species id of sample ``index``: cycles through the table, so every split is balanced."""
    return _check_int("index", index, 0) % len(SPECIES)


def _check_swap(swap: Mapping[str, str] | None) -> dict[str, str]:
    """Validate a {part: colour} replacement; one clear sentence for a bad part or value."""
    checked: dict[str, str] = {}
    for part, value in (swap or {}).items():
        if part not in PARTS:
            raise ValueError(f"Unknown part {part!r}; expected one of {', '.join(PARTS)}.")
        if value not in PART_VALUES[part]:
            raise ValueError(
                f"{value!r} is not a colour of the {part}; use one of {', '.join(PART_VALUES[part])}."
            )
        checked[part] = value
    return checked


# ---------------------------------------------------------------------------------------------
# Drawing operations
# ---------------------------------------------------------------------------------------------

_LABEL_NONE = 0  # label-map value of background, clutter, legs and foreground twigs
_DETAIL = -1  # an operation that paints pixels but leaves the label map alone (eye, wing pattern)
_BEAK_RGB = (120, 108, 92)
_LEG_RGB = (112, 92, 74)


@dataclass
class _Op:
    """One drawing operation: a filled polygon, or a polyline when ``width`` > 0 (local units)."""

    points: np.ndarray
    rgb: tuple[int, int, int]
    label: int
    width: float = 0.0


def _ellipse(cx: float, cy: float, rx: float, ry: float, angle_deg: float = 0.0, n: int = 28) -> np.ndarray:
    """Points of a rotated ellipse, as an (n, 2) array."""
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    a = math.radians(angle_deg)
    ca, sa = math.cos(a), math.sin(a)
    return np.stack([cx + x * ca - y * sa, cy + x * sa + y * ca], axis=1)


def _polar(origin: np.ndarray, angle_deg: float, radius: float) -> np.ndarray:
    """The point ``radius`` away from ``origin`` in direction ``angle_deg`` (y points down)."""
    a = math.radians(angle_deg)
    return origin + radius * np.array([math.cos(a), math.sin(a)])


def _shade(rgb: tuple[int, int, int], offset: np.ndarray) -> tuple[int, int, int]:
    """``rgb`` plus a per-image lighting offset, clipped to 0..255."""
    noisy = np.clip(np.asarray(rgb) + offset, 0, 255)
    return (int(noisy[0]), int(noisy[1]), int(noisy[2]))


def _jitter_rgb(rgb: tuple[int, int, int], rng: np.random.Generator, amount: int) -> tuple[int, int, int]:
    """``rgb`` with independent per-channel noise of at most ``amount``."""
    return _shade(rgb, rng.integers(-amount, amount + 1, size=3))


def _pattern_rgb(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Colour of stripes and spots: a dark shade of the wing colour, or light grey on dark wings."""
    if sum(rgb) < 150:
        return (205, 205, 200)
    return (int(rgb[0] * 0.35), int(rgb[1] * 0.35), int(rgb[2] * 0.35))


@dataclass
class _Scene:
    """Every per-image random choice about the bird, drawn before any colour is known."""

    head_radius: float
    body_scale: tuple[float, float]
    tail_tilt: float
    wing_tilt: float
    crest: str
    pattern: str
    tail_shape: str
    tail_colour: str
    lighting: dict[str, np.ndarray]

    @classmethod
    def draw(cls, rng: np.random.Generator) -> _Scene:
        """Draw in a fixed order, so a colour swap never changes anything else in the scene."""
        return cls(
            head_radius=0.235 * (1.0 + rng.uniform(-0.06, 0.06)),
            body_scale=(1.0 + rng.uniform(-0.06, 0.06), 1.0 + rng.uniform(-0.08, 0.08)),
            tail_tilt=rng.uniform(4.0, 22.0),
            wing_tilt=rng.uniform(-8.0, 10.0),
            crest=str(rng.choice(ATTRIBUTE_VALUES["head"]["crest"])),
            pattern=str(rng.choice(ATTRIBUTE_VALUES["wing"]["pattern"])),
            tail_shape=str(rng.choice(ATTRIBUTE_VALUES["tail"]["shape"])),
            tail_colour=str(rng.choice(PART_VALUES["tail"])),
            lighting={part: rng.integers(-10, 11, size=3) for part in PARTS},
        )


_TAIL_SHAPES: dict[str, tuple[tuple[float, float], ...]] = {
    # (distance along the tail, distance across it) from the root, in local units.
    "fanned": (
        (0.0, 0.07),
        (0.27, 0.23),
        (0.40, 0.23),
        (0.37, 0.13),
        (0.43, 0.07),
        (0.40, 0.0),
        (0.43, -0.07),
        (0.37, -0.13),
        (0.40, -0.23),
        (0.27, -0.23),
        (0.0, -0.07),
    ),
    "forked": (
        (0.0, 0.10),
        (0.23, 0.13),
        (0.50, 0.20),
        (0.40, 0.06),
        (0.33, 0.0),
        (0.40, -0.06),
        (0.50, -0.20),
        (0.23, -0.13),
        (0.0, -0.10),
    ),
    "pointed": ((0.0, 0.11), (0.25, 0.09), (0.56, 0.0), (0.25, -0.09), (0.0, -0.11)),
}


def _tail_ops(scene: _Scene, rgb: tuple[int, int, int], label: int) -> list[_Op]:
    """The tail polygon, rooted inside the body and pointing back and slightly up."""
    root = np.array([-0.24, 0.02])
    along = _polar(np.zeros(2), 180.0 + scene.tail_tilt, 1.0)
    across = np.array([-along[1], along[0]])
    frame = np.array(_TAIL_SHAPES[scene.tail_shape])
    return [_Op(root + frame[:, :1] * along + frame[:, 1:] * across, rgb, label)]


def _body_op(scene: _Scene, rgb: tuple[int, int, int], label: int) -> _Op:
    """The body: a plump tilted ellipse."""
    sx, sy = scene.body_scale
    return _Op(_ellipse(0.0, 0.06, 0.37 * sx, 0.26 * sy, -8.0, 36), rgb, label)


_HEAD_CENTRE = np.array([0.38, -0.21])


def _head_ops(scene: _Scene, rgb: tuple[int, int, int], label: int) -> list[_Op]:
    """Crest (behind), head disc, beak, then the eye as detail."""
    r, centre = scene.head_radius, _HEAD_CENTRE
    ops: list[_Op] = []
    if scene.crest == "crested":
        for angle, length in ((-88.0, 0.13), (-112.0, 0.16), (-136.0, 0.12)):
            spike = [
                _polar(centre, angle - 13.0, 0.8 * r),
                _polar(centre, angle, r + length),
                _polar(centre, angle + 13.0, 0.8 * r),
            ]
            ops.append(_Op(np.array(spike), rgb, label))
    ops.append(_Op(_ellipse(centre[0], centre[1], r, r, 0.0, 28), rgb, label))
    tip = centre + np.array([r + 0.13, 0.04])
    beak = [_polar(centre, -22.0, 0.9 * r), tip, _polar(centre, 26.0, 0.9 * r)]
    ops.append(_Op(np.array(beak), _BEAK_RGB, label))
    eye = centre + np.array([0.38 * r, -0.22 * r])
    ops.append(_Op(_ellipse(eye[0], eye[1], 0.22 * r, 0.22 * r, 0.0, 16), (250, 250, 250), _DETAIL))
    ops.append(_Op(_ellipse(eye[0] + 0.05 * r, eye[1], 0.13 * r, 0.13 * r, 0.0, 12), (10, 10, 10), _DETAIL))
    return ops


def _wing_edges(scene: _Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Centre line, unit normal (upwards) and half-widths of the raised wing leaf."""
    front = np.array([0.12, -0.04])
    back = _polar(front, 180.0 + 34.0 + scene.wing_tilt, 0.72)
    t = np.linspace(0.0, 1.0, 18)
    centre = front[None, :] + t[:, None] * (back - front)[None, :]
    d = (back - front) / np.linalg.norm(back - front)
    normal = np.array([d[1], -d[0]])
    if normal[1] > 0:  # make it point up (towards negative y)
        normal = -normal
    half = 0.22 * np.sqrt(np.sin(np.pi * t)) * (1.0 - 0.45 * t)
    return centre, normal, half, t


def _wing_ops(scene: _Scene, rgb: tuple[int, int, int], label: int) -> list[_Op]:
    """A leaf-shaped wing raised above the back, with bars or spots drawn inside it as detail."""
    centre, normal, half, t = _wing_edges(scene)
    upper = centre + normal[None, :] * half[:, None]
    lower = centre - normal[None, :] * half[:, None]
    ops = [_Op(np.concatenate([upper, lower[::-1]]), rgb, label)]
    dark = _pattern_rgb(rgb)
    along = (centre[-1] - centre[0]) / np.linalg.norm(centre[-1] - centre[0])
    if scene.pattern == "striped":
        for tt in (0.35, 0.52, 0.69):
            c = centre[0] + tt * (centre[-1] - centre[0])
            w = 0.8 * float(np.interp(tt, t, half))
            top, bottom = c + normal * w, c - normal * w
            bar = [top, top + along * 0.04, bottom + along * 0.04, bottom]
            ops.append(_Op(np.array(bar), dark, _DETAIL))
    elif scene.pattern == "spotted":
        for tt, side in ((0.25, 0.3), (0.4, -0.4), (0.55, 0.25), (0.7, -0.3), (0.84, 0.05)):
            c = centre[0] + tt * (centre[-1] - centre[0])
            spot = c + normal * side * float(np.interp(tt, t, half))
            ops.append(_Op(_ellipse(spot[0], spot[1], 0.035, 0.035, 0.0, 12), dark, _DETAIL))
    return ops


def _leg_ops() -> list[_Op]:
    """Two thin legs with forward toes (no part label: they are not one of ``PARTS``)."""
    legs = []
    for x in (0.06, -0.08):
        pts = np.array([[x, 0.22], [x + 0.01, 0.42], [x + 0.08, 0.43]])
        legs.append(_Op(pts, _LEG_RGB, _LABEL_NONE, width=0.03))
    return legs


def _bird_ops(scene: _Scene, colours: Mapping[str, str]) -> list[_Op]:
    """All drawing operations of one bird in painter's order, in local units."""
    rgb = {part: _shade(COLOURS[colours[part]], scene.lighting[part]) for part in PARTS}
    label = {part: k + 1 for k, part in enumerate(PARTS)}
    ops = _leg_ops()
    ops += _tail_ops(scene, rgb["tail"], label["tail"])
    ops.append(_body_op(scene, rgb["body"], label["body"]))
    ops += _wing_ops(scene, rgb["wing"], label["wing"])
    ops += _head_ops(scene, rgb["head"], label["head"])
    return ops


def _place_bird(ops: list[_Op], rng: np.random.Generator, canvas: int) -> float:
    """Flip, rotate, scale and move the bird's ops in place to canvas pixels; return pixels per unit."""
    flip = rng.random() < 0.5
    angle = math.radians(rng.uniform(-15.0, 15.0))
    unit = rng.uniform(0.52, 0.66) * canvas
    ca, sa = math.cos(angle), math.sin(angle)
    rotation = np.array([[ca, sa], [-sa, ca]]) * unit  # row-vector convention: p @ rotation
    for op in ops:
        pts = op.points * np.array([-1.0, 1.0]) if flip else op.points
        op.points = pts @ rotation
    every = np.concatenate([op.points for op in ops])
    low, high = every.min(axis=0), every.max(axis=0)
    slack = 0.04 * canvas  # "almost fully inside": a sliver may leave the frame
    offset = np.empty(2)
    for axis in range(2):
        lo, hi = -low[axis] - slack, canvas - high[axis] + slack
        offset[axis] = rng.uniform(lo, hi) if hi > lo else (lo + hi) / 2.0
    for op in ops:
        op.points = op.points + offset
    return unit


# ---------------------------------------------------------------------------------------------
# Background and clutter
# ---------------------------------------------------------------------------------------------


def _muted_rgb(
    rng: np.random.Generator, saturation: tuple[float, float], value: tuple[float, float]
) -> np.ndarray:
    """A random colour of limited saturation, as float RGB in 0..255."""
    rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*saturation), rng.uniform(*value))
    return np.array(rgb, dtype=np.float32) * 255.0


def _background(rng: np.random.Generator, size: int, canvas: int) -> Image.Image:
    """A muted gradient, blotchy noise or stripe texture, computed at ``size`` and scaled to the canvas.

    Everything in the background is smooth at the target resolution (stripes get a soft edge
    about one output pixel wide), so computing it small and upsampling costs little and loses
    nothing after the final downsample.
    """
    first = _muted_rgb(rng, (0.05, 0.3), (0.35, 0.85))
    second = np.clip(first + rng.uniform(-45.0, 45.0, size=3).astype(np.float32), 0.0, 255.0)
    kind = int(rng.integers(3))
    angle = rng.uniform(0.0, 2.0 * math.pi)
    axis = np.arange(size, dtype=np.float32)
    proj = np.add.outer(axis * math.sin(angle), axis * math.cos(angle))
    if kind == 0:  # linear gradient
        mix = (proj - proj.min()) / max(float(np.ptp(proj)), 1.0)
    elif kind == 1:  # smooth blotches
        cells = int(rng.integers(3, 10))
        grid = Image.fromarray((rng.random((cells, cells)) * 255.0).astype(np.uint8))
        mix = np.asarray(grid.resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) / 255.0
    else:  # stripes, with edges about one pixel wide
        period = rng.uniform(0.06, 0.22) * size
        wave = np.sin(proj * (2.0 * math.pi / period)) * (period / (2.0 * math.pi))
        mix = np.clip(wave + 0.5, 0.0, 1.0) * 0.7
    pixels = first[None, None, :] + mix[:, :, None] * (second - first)[None, None, :]
    small = Image.fromarray(pixels.astype(np.uint8))
    return small.resize((canvas, canvas), Image.Resampling.BILINEAR)


def _clutter_rgb(rng: np.random.Generator) -> tuple[int, int, int]:
    """Mostly muted colours; now and then a jittered bird colour, so colour alone cannot find the bird."""
    if rng.random() < 0.15:
        return _jitter_rgb(COLOURS[str(rng.choice(list(COLOURS)))], rng, 40)
    rgb = _muted_rgb(rng, (0.1, 0.55), (0.25, 0.9))
    return (int(rgb[0]), int(rgb[1]), int(rgb[2]))


def _clutter_ops(rng: np.random.Generator, canvas: int) -> list[_Op]:
    """A few small ellipses, boxes and triangles scattered over the canvas (in canvas pixels)."""
    ops = []
    for _ in range(int(rng.integers(2, 6))):
        centre = rng.uniform(0.0, canvas, size=2)
        size = rng.uniform(0.03, 0.09) * canvas
        kind = int(rng.integers(3))
        if kind == 0:
            pts = _ellipse(centre[0], centre[1], size, size * rng.uniform(0.4, 1.0), rng.uniform(0, 180), 20)
        elif kind == 1:
            pts = _ellipse(centre[0], centre[1], size, size * rng.uniform(0.3, 1.0), rng.uniform(0, 180), 4)
        else:
            angles = np.sort(rng.uniform(0.0, 2.0 * math.pi, size=3))
            pts = centre + size * np.stack([np.cos(angles), np.sin(angles)], axis=1)
        ops.append(_Op(pts, _clutter_rgb(rng), _LABEL_NONE))
    return ops


def _twig_op(rng: np.random.Generator, canvas: int) -> _Op:
    """A thin branch across the whole canvas, drawn in front of the bird (it hides what it covers)."""
    y0, y1 = rng.uniform(0.0, canvas, size=2)
    start, end = np.array([-0.05 * canvas, y0]), np.array([1.05 * canvas, y1])
    bend = (start + end) / 2.0 + rng.uniform(-0.1, 0.1, size=2) * canvas
    rgb = _muted_rgb(rng, (0.3, 0.6), (0.25, 0.5))
    pts = np.array([start, bend, end])
    if rng.random() < 0.5:
        pts = pts[:, ::-1].copy()  # vertical instead of horizontal
    width = rng.uniform(0.012, 0.025) * canvas
    return _Op(pts, (int(rgb[0]), int(rgb[1]), int(rgb[2])), _LABEL_NONE, width=width)


# Every reordering of the four species colours, the identity first: what ``recolour`` may apply.
COLOUR_PERMUTATIONS: tuple[tuple[int, ...], ...] = tuple(itertools.permutations(range(len(SPECIES_COLOURS))))
RECOLOUR_TOLERANCE = 40.0  # RGB distance to a species colour within which a pixel counts as that colour


def recolour(image: Image.Image, permutation: tuple[int, ...] | list[int]) -> Image.Image:
    """``image`` with its species colours swapped: every pixel within ``RECOLOUR_TOLERANCE`` of species
    colour k (``SPECIES_COLOURS`` order) is repainted in colour ``permutation[k]``, keeping its offset from
    the palette (the lighting). A palette swap over the whole picture: it needs the four colours, not where
    the parts are (clutter painted in a bird colour changes too; edge pixels that blend two colours stay)."""
    order = [int(k) for k in permutation]
    if sorted(order) != list(range(len(SPECIES_COLOURS))):
        raise ValueError(f"A recolouring reorders the {len(SPECIES_COLOURS)} species colours; got {order}.")
    palette = np.array([COLOURS[c] for c in SPECIES_COLOURS], dtype=np.float32)
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    distance = np.linalg.norm(pixels[:, :, None, :] - palette, axis=-1)
    nearest = distance.argmin(axis=-1)
    near = distance.min(axis=-1) <= RECOLOUR_TOLERANCE
    shift = palette[order] - palette  # colour k moves by palette[permutation[k]] - palette[k]
    out = np.where(near[..., None], pixels + shift[nearest], pixels)
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def _paint(ops: Iterable[_Op], image: ImageDraw.ImageDraw, labels: ImageDraw.ImageDraw, scale: float) -> None:
    """Draw ops onto the image and (unless detail) the label map; line widths are in units of ``scale``."""
    for op in ops:
        xy = op.points.ravel().tolist()
        targets = [(image, op.rgb)] if op.label == _DETAIL else [(image, op.rgb), (labels, op.label)]
        for draw, fill in targets:
            if op.width > 0.0:
                draw.line(xy, fill=fill, width=max(1, round(op.width * scale)), joint="curve")
            else:
                draw.polygon(xy, fill=fill)


# ---------------------------------------------------------------------------------------------
# Captions
# ---------------------------------------------------------------------------------------------

# A claim is one checkable fact a text makes about an image: ("species", name), ("family", name)
# or (part, attribute, value).  A text is true of an image when all its claims are facts of it.
Claim = tuple[str, ...]


def _article(word: str) -> str:
    """'an' before a vowel sound, else 'a'."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def part_phrase(part: str, traits: Mapping[str, str], attributes: Iterable[str] | None = None) -> str:
    """The phrase for one part, e.g. ``a crested red head``; ``attributes`` limits what it names."""
    named = list(PART_ATTRIBUTES[part]) if attributes is None else list(attributes)
    order = [a for a in PART_ATTRIBUTES[part][1:] if a in named] + (["colour"] if "colour" in named else [])
    words = [traits[a] for a in order] + [part]
    return f"{_article(words[0])} {' '.join(words)}"


def _join(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _caption(
    species: Species | None, traits: Mapping[str, Mapping[str, str]], visible: Mapping[str, bool]
) -> str:
    """A natural sentence naming the species and every attribute of its visible parts."""
    family = FAMILY_OF_BODY[traits["body"]["colour"]]
    who = f"{_article(species.name)} {species.name}" if species is not None else "a bird"
    head = f"a photo of {who}"
    shown = [part_phrase(part, traits[part]) for part in PARTS if visible[part]]
    if not shown:
        return head
    return f"{head}, {_article(family)} {family} with {_join(shown)}"


def sample_facts(sample: ToyBirdSample) -> frozenset[Claim]:
    """Every claim a caption could truthfully make about ``sample`` (only visible parts count)."""
    facts: set[Claim] = {("family", sample.family)}
    if sample.species is not None:
        facts.add(("species", sample.species.name))
    for part, shown in sample.visible.items():
        if shown:
            facts.update((part, attribute, value) for attribute, value in sample.traits[part].items())
    return frozenset(facts)


@dataclass(frozen=True)
class Caption:
    """A text for contrastive training and the claims that make it true of an image."""

    text: str
    claims: frozenset[Claim]


_PART_TEMPLATES = ("a photo of a bird with {}.", "a bird with {}.", "a photo of {family} with {}.")


def random_caption(sample: ToyBirdSample, rng: np.random.Generator) -> Caption:
    """One training text for ``sample``: the full caption, the species prompt, or part phrases.

    Part phrases name a random subset of the visible parts in random order, each with its colour,
    a nuisance attribute or both, so a text tower learns "blue head" apart from "blue wing".
    Roughly: 20 % full caption, 15 % "a photo of a {species}.", 65 % part phrases (half of
    them a single part).
    """
    draw = rng.random()
    if draw < 0.20:
        return Caption(sample.caption, sample_facts(sample))
    if draw < 0.35 and sample.species is not None:
        name = sample.species.name
        return Caption(f"a photo of {_article(name)} {name}.", frozenset({("species", name)}))
    shown = [part for part in PARTS if sample.visible[part]] or ["body"]
    count = 1 if rng.random() < 0.5 else int(rng.integers(1, len(shown) + 1))
    parts = [shown[k] for k in rng.permutation(len(shown))[:count]]
    phrases, claims = [], set()
    for part in parts:
        attributes = PART_ATTRIBUTES[part]
        if len(attributes) > 1 and rng.random() < 0.5:  # colour alone, nuisance alone, or both
            choice = int(rng.integers(3))
            attributes = ("colour",) if choice == 0 else attributes[1:] if choice == 1 else attributes
        elif len(attributes) > 1:
            attributes = ("colour",)
        phrases.append(part_phrase(part, sample.traits[part], attributes))
        claims.update((part, a, sample.traits[part][a]) for a in attributes)
    template = _PART_TEMPLATES[int(rng.integers(len(_PART_TEMPLATES)))]
    if "{family}" in template:
        claims.add(("family", sample.family))
    text = template.replace("{family}", f"{_article(sample.family)} {sample.family}").format(_join(phrases))
    return Caption(text, frozenset(claims))


def part_value_prompt(part: str, value: str) -> str:
    """The zero-shot prompt for one part value, e.g. ``a photo of a bird with a blue head.``"""
    return f"a photo of a bird with {_article(value)} {value} {part}."


def part_value_phrases() -> dict[str, list[str]]:
    """Every species part's values as zero-shot prompts, in ``SPECIES_COLOURS`` order (a part vocabulary
    for ConceptHash's ``part_phrases``: language only, no image labels)."""
    return {part: [part_value_prompt(part, value) for value in PART_VALUES[part]] for part in SPECIES_PARTS}


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _block_keys(size: int) -> np.ndarray:
    """For every canvas pixel, the index of the output pixel it falls in, times the label count."""
    block = np.arange(size * _SUPERSAMPLE) // _SUPERSAMPLE
    keys = (block[:, None] * size + block[None, :]) * (len(PARTS) + 1)
    return keys.astype(np.int64)


def _masks_from_labels(labels: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """Per part, the output pixels where more than half of the sub-pixels carry that part's label."""
    counts = np.bincount((_block_keys(size) + labels).ravel(), minlength=size * size * (len(PARTS) + 1))
    counts = counts.reshape(size, size, len(PARTS) + 1)
    half = _SUPERSAMPLE * _SUPERSAMPLE / 2.0
    return {part: counts[:, :, k + 1] > half for k, part in enumerate(PARTS)}


def render_sample(
    split: str,
    index: int,
    seed: int = 0,
    image_size: int = 64,
    *,
    swap: Mapping[str, str] | None = None,
) -> ToyBirdSample:
    """Render sample ``index`` of ``split``; the result depends only on the arguments.

    ``swap`` ({part: colour}) repaints parts in other colours and changes nothing else in the
    scene; see :func:`render_counterfactual`.
    """
    index = _check_int("index", index, 0)
    seed = _check_int("seed", seed, 0)
    size = _check_int("image_size", image_size, _MIN_IMAGE_SIZE)
    replaced = _check_swap(swap)
    rng = _make_rng(split, index, seed)
    base = SPECIES[species_of_index(index)]
    canvas = size * _SUPERSAMPLE

    image = _background(rng, size, canvas)
    labels = Image.new("L", (canvas, canvas), _LABEL_NONE)
    image_draw, label_draw = ImageDraw.Draw(image), ImageDraw.Draw(labels)
    _paint(_clutter_ops(rng, canvas), image_draw, label_draw, 1.0)
    scene = _Scene.draw(rng)
    colours = {**base.colours, "tail": scene.tail_colour, **replaced}
    bird = _bird_ops(scene, colours)
    unit = _place_bird(bird, rng, canvas)
    _paint(bird, image_draw, label_draw, unit)
    if rng.random() < 0.25:
        _paint([_twig_op(rng, canvas)], image_draw, label_draw, 1.0)

    masks = _masks_from_labels(np.asarray(labels), size)
    small = image.resize((size, size), Image.Resampling.BOX)
    traits = {
        "head": {"colour": colours["head"], "crest": scene.crest},
        "wing": {"colour": colours["wing"], "pattern": scene.pattern},
        "body": {"colour": colours["body"]},
        "tail": {"colour": colours["tail"], "shape": scene.tail_shape},
    }
    species = species_with(colours) if replaced else base
    caption = _caption(species, traits, {part: bool(mask.any()) for part, mask in masks.items()})
    return ToyBirdSample(small, masks, species, traits, caption, split, index, seed)


def render_counterfactual(
    split: str, index: int, part: str, value: str, seed: int = 0, image_size: int = 64
) -> ToyBirdSample:
    """The scene of ``render_sample(split, index, seed, image_size)`` with ``part`` painted ``value``.

    Pose, scale, position, background, clutter, occluder and every nuisance attribute stay the
    same, so the masks are identical.  The pixels that change are those of that part and its
    anti-aliased outline, plus slivers thinner than half a pixel that belong to no mask (crest
    and tail tips, a thin wedge of body between head and wing): measured over 264 swaps, at
    least 90 % of the changed pixels lie within one pixel of the part's mask and none further
    than 8 pixels (``tests/test_toybirds.py``).  The result's ``species`` is the species with the
    new colours, or None when no species of the table has them.
    """
    return render_sample(split, index, seed, image_size, swap={part: value})


def render_batch(
    split: str, indices: Iterable[int], seed: int = 0, image_size: int = 64
) -> list[ToyBirdSample]:
    """Render several samples of one split (a plain loop over ``render_sample``)."""
    return [render_sample(split, index, seed, image_size) for index in indices]


# ---------------------------------------------------------------------------------------------
# Measuring the world
# ---------------------------------------------------------------------------------------------


def patch_coverage(mask: np.ndarray, patch_size: int) -> np.ndarray:
    """Fraction of each ``patch_size`` x ``patch_size`` patch that ``mask`` covers (a grid array)."""
    h, w = mask.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f"Patch size {patch_size} does not divide the {w} x {h} mask.")
    blocks = mask.reshape(h // patch_size, patch_size, w // patch_size, patch_size)
    return blocks.mean(axis=(1, 3))


def part_statistics(samples: Iterable[ToyBirdSample], patch_size: int = 8) -> dict[str, object]:
    """How big and how separate the parts are, measured from the masks on a patch grid.

    ``area_patches``: mean visible area of each part in patches.  ``patch_overlap``: for each
    pair of parts, the mean Jaccard overlap of the sets of patches each covers by at least a
    quarter (0 = never share a patch, 1 = always the same patches).
    """
    areas: dict[str, list[float]] = {part: [] for part in PARTS}
    pairs = [(a, b) for i, a in enumerate(PARTS) for b in PARTS[i + 1 :]]
    overlaps: dict[str, list[float]] = {f"{a}/{b}": [] for a, b in pairs}
    for sample in samples:
        touched = {}
        for part in PARTS:
            coverage = patch_coverage(sample.masks[part], patch_size)
            areas[part].append(float(coverage.sum()))
            touched[part] = coverage >= 0.25
        for a, b in pairs:
            union = (touched[a] | touched[b]).sum()
            if union:
                overlaps[f"{a}/{b}"].append(float((touched[a] & touched[b]).sum() / union))
    return {
        "patch_size": patch_size,
        "area_patches": {part: float(np.mean(v)) for part, v in areas.items()},
        "patch_overlap": {pair: float(np.mean(v)) if v else 0.0 for pair, v in overlaps.items()},
    }


# ---------------------------------------------------------------------------------------------
# Writing an image folder
# ---------------------------------------------------------------------------------------------

METADATA_COLUMNS: tuple[str, ...] = (
    "file",
    "split",
    "index",
    "seed",
    "species_id",
    "species_name",
    "family",
    "caption",
    *PARTS,
)


def _metadata_row(sample: ToyBirdSample, file: str) -> dict[str, object]:
    """One metadata.csv row for ``sample`` stored at relative path ``file``."""
    row: dict[str, object] = {
        "file": file,
        "split": sample.split,
        "index": sample.index,
        "seed": sample.seed,
        "species_id": sample.species_id,
        "species_name": sample.species_name,
        "family": sample.family,
        "caption": sample.caption,
    }
    row.update({part: "|".join(sample.traits[part][a] for a in PART_ATTRIBUTES[part]) for part in PARTS})
    return row


LAYOUTS: tuple[str, ...] = ("images", "folder")
"""``images``: images/, masks/ and metadata.csv; ``folder``: SPLIT/<species name>/, as ``--data folder:``."""


def _write_folder(
    root: Path,
    split: str,
    count: int,
    seed: int,
    image_size: int,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Render ``count`` samples into the (new, empty) folder ``root``: images/, masks/, metadata.csv."""
    (root / "images").mkdir()
    (root / "masks").mkdir()
    with open(root / "metadata.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(METADATA_COLUMNS))
        writer.writeheader()
        for index in range(count):
            sample = render_sample(split, index, seed, image_size)
            stem = f"{split}_{index:06d}"
            sample.image.save(root / "images" / f"{stem}.png")
            for part, mask in sample.masks.items():
                Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"{stem}_{part}.png")
            writer.writerow(_metadata_row(sample, f"images/{stem}.png"))
            if progress is not None:
                progress(index + 1, count)


def _write_class_folders(
    root: Path,
    split: str,
    count: int,
    seed: int,
    image_size: int,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Render ``count`` samples into the (new, empty) split folder ``root``: one sub-folder per species.

    Every species gets its folder even when ``count`` is too small to fill it, so a train and a test folder
    rendered apart list the same classes. No masks (this is the layout of a researcher's own photos);
    ``metadata.csv`` beside the class folders keeps the ground truth, with paths relative to ``root``.
    """
    for species in SPECIES:
        (root / species.name).mkdir()
    with open(root / "metadata.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(METADATA_COLUMNS))
        writer.writeheader()
        for index in range(count):
            sample = render_sample(split, index, seed, image_size)
            file = f"{sample.species_name}/{split}_{index:06d}.png"
            sample.image.save(root / file)
            writer.writerow(_metadata_row(sample, file))
            if progress is not None:
                progress(index + 1, count)


def render_to_disk(
    out_dir: str | os.PathLike[str],
    split: str,
    count: int,
    seed: int = 0,
    image_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
    layout: str = "images",
) -> Path:
    """Write ``count`` samples of ``split`` to disk and return the folder written.

    ``layout="images"`` (the default) writes ``out_dir`` itself: ``images/{split}_{index:06d}.png``,
    ``masks/{split}_{index:06d}_{part}.png`` (0/255, mode L) and ``metadata.csv``; an existing non-empty
    ``out_dir`` is refused unless ``overwrite`` is true.

    ``layout="folder"`` writes ``out_dir/{split}/<species name>/{split}_{index:06d}.png`` and
    ``out_dir/{split}/metadata.csv``, the class-folder layout ``--data folder:out_dir`` reads once both a
    ``train`` and a ``test`` split are rendered into the same ``out_dir``; other splits already there are
    kept, an existing non-empty ``out_dir/{split}`` is refused unless ``overwrite`` is true.

    Either way the folder is rendered in a temporary sibling and renamed into place, so a crash never leaves
    a half-written data set.
    """
    _split_code(split)
    count = _check_int("count", count, 0)
    seed = _check_int("seed", seed, 0)
    _check_int("image_size", image_size, _MIN_IMAGE_SIZE)
    if layout not in LAYOUTS:
        raise ValueError(f"Layout {layout!r} is unknown; use one of {', '.join(LAYOUTS)}.")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"Output path {out} exists and is not a directory.")
    write = _write_folder
    if layout == "folder":
        if out.is_dir() and ((out / "images").is_dir() or (out / "metadata.csv").exists()):
            raise ValueError(
                f"Output directory {out} holds an images/ + metadata.csv rendering; choose another folder "
                f"for the class-folder layout."
            )
        out, write = out / split, _write_class_folders
        if out.exists() and not out.is_dir():
            raise ValueError(f"Output path {out} exists and is not a directory.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"Output directory {out} is not empty; pass overwrite=True to replace it.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        write(tmp, split, count, seed, image_size, progress)
        give_normal_modes(tmp)  # mkdtemp made it 0700; a data folder is for sharing
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        old.rmdir()  # a fresh name for the old folder, free for the rename
        swap_folder_into_place(tmp, out, old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
