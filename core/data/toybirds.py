"""ToyBirds: a procedural, deterministic world of drawn birds with per-part ground truth.

Real fine-grained data sets cannot be downloaded here, and even where they can, they do not say
*where* each part of a bird is in a way that lets us score concept localisation.  ToyBirds draws
every bird from four parts (``PARTS``) whose attributes come from a fixed species table, so for
every image we know the species, its family, a caption and one visible-pixel mask per part.

Every sample is a pure function of ``(split, index, seed, image_size)``: the random generator is
seeded from a ``SeedSequence`` of those values, and drawing uses only numpy and Pillow, so the
same call gives the same pixels on every machine.  Pose, scale, position, flip, background
texture and clutter vary per image, so a model has to find the bird and its parts.

Rendering is anti-aliased: the scene is drawn at ``_SUPERSAMPLE`` times the target size and
box-downsampled.  The masks come from a label map drawn with the same operations in the same
painter's order, so a part hidden behind a later part (or behind a foreground twig) is not in
its mask; a pixel belongs to a part when more than half of its sub-pixels do.
"""

from __future__ import annotations

import colorsys
import csv
import functools
import math
import os
import re
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

PARTS: tuple[str, ...] = ("head", "wing", "body", "tail")

# Attribute names of each part, in the order used by ``Species.part_label``.
PART_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "head": ("colour", "crest"),
    "wing": ("colour", "pattern"),
    "body": ("colour", "shape"),
    "tail": ("colour", "shape"),
}

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

# Allowed values of every attribute (colour attributes take any ``COLOURS`` key).
ATTRIBUTE_VALUES: dict[str, dict[str, tuple[str, ...]]] = {
    "head": {"colour": tuple(COLOURS), "crest": ("smooth", "crested")},
    "wing": {"colour": tuple(COLOURS), "pattern": ("plain", "striped", "spotted")},
    "body": {"colour": tuple(COLOURS), "shape": ("round", "slim")},
    "tail": {"colour": tuple(COLOURS), "shape": ("fanned", "forked", "pointed")},
}

# The attributes that take at least three values across the world.
MAIN_ATTRIBUTES: tuple[tuple[str, str], ...] = (
    ("head", "colour"),
    ("wing", "colour"),
    ("wing", "pattern"),
    ("body", "colour"),
    ("tail", "colour"),
    ("tail", "shape"),
)

# Poetic colour words used in species names (captions use the plain words).
_NAME_COLOUR = {
    "red": "scarlet",
    "orange": "amber",
    "yellow": "golden",
    "green": "emerald",
    "blue": "azure",
    "purple": "violet",
    "black": "ebony",
    "white": "snowy",
}


@dataclass(frozen=True)
class Species:
    """One bird species: a fixed combination of part attributes inside a family."""

    id: int
    name: str
    family: str
    attributes: dict[str, dict[str, str]] = field(hash=False)

    def part_label(self, part: str) -> str:
        """One categorical label for ``part``: its attribute values joined by ``|`` (e.g. ``red|crested``)."""
        if part not in PART_ATTRIBUTES:
            raise ValueError(f"Unknown part {part!r}; expected one of {', '.join(PARTS)}.")
        values = self.attributes[part]
        return "|".join(values[name] for name in PART_ATTRIBUTES[part])

    def part_rgb(self, part: str) -> tuple[int, int, int]:
        """The palette colour ``part`` is painted with (before per-image lighting jitter)."""
        if part not in PART_ATTRIBUTES:
            raise ValueError(f"Unknown part {part!r}; expected one of {', '.join(PARTS)}.")
        return COLOURS[self.attributes[part]["colour"]]


# Each family fixes two parts; its six species vary only the other two, so any two species of a
# family differ in one or two parts.  Values are (colour, second attribute) in PART_ATTRIBUTES order.
_FAMILY_TABLE: tuple[tuple[str, dict[str, tuple[str, str]], tuple[dict[str, tuple[str, str]], ...]], ...] = (
    (
        "finch",
        {"body": ("yellow", "round"), "tail": ("black", "forked")},
        (
            {"head": ("red", "crested"), "wing": ("black", "striped")},
            {"head": ("red", "smooth"), "wing": ("black", "striped")},
            {"head": ("blue", "crested"), "wing": ("black", "striped")},
            {"head": ("red", "crested"), "wing": ("green", "plain")},
            {"head": ("blue", "smooth"), "wing": ("green", "spotted")},
            {"head": ("black", "crested"), "wing": ("red", "spotted")},
        ),
    ),
    (
        "jay",
        {"head": ("blue", "crested"), "tail": ("black", "fanned")},
        (
            {"wing": ("blue", "striped"), "body": ("white", "round")},
            {"wing": ("blue", "striped"), "body": ("white", "slim")},
            {"wing": ("blue", "spotted"), "body": ("white", "round")},
            {"wing": ("black", "plain"), "body": ("white", "round")},
            {"wing": ("black", "spotted"), "body": ("orange", "round")},
            {"wing": ("purple", "striped"), "body": ("orange", "slim")},
        ),
    ),
    (
        "warbler",
        {"head": ("yellow", "smooth"), "wing": ("green", "striped")},
        (
            {"body": ("yellow", "slim"), "tail": ("green", "pointed")},
            {"body": ("yellow", "slim"), "tail": ("black", "pointed")},
            {"body": ("white", "slim"), "tail": ("green", "pointed")},
            {"body": ("yellow", "round"), "tail": ("green", "forked")},
            {"body": ("orange", "slim"), "tail": ("black", "fanned")},
            {"body": ("white", "round"), "tail": ("yellow", "forked")},
        ),
    ),
    (
        "tanager",
        {"wing": ("black", "plain"), "body": ("red", "round")},
        (
            {"head": ("red", "smooth"), "tail": ("black", "pointed")},
            {"head": ("red", "crested"), "tail": ("black", "pointed")},
            {"head": ("orange", "smooth"), "tail": ("black", "pointed")},
            {"head": ("purple", "smooth"), "tail": ("black", "forked")},
            {"head": ("yellow", "crested"), "tail": ("red", "fanned")},
            {"head": ("white", "smooth"), "tail": ("purple", "pointed")},
        ),
    ),
)

# Order in which the varied parts appear in a species name (the head sits next to the noun).
_NAME_ORDER = ("wing", "tail", "body", "head")


def _name_word(part: str, values: dict[str, str]) -> str:
    """The name fragment for one varied part, e.g. ``scarlet-crested`` or ``ebony bar-winged``."""
    colour = _NAME_COLOUR[values["colour"]]
    if part == "head":
        return f"{colour}-crested" if values["crest"] == "crested" else f"{colour}-headed"
    if part == "wing":
        suffix = {"plain": "-winged", "striped": " bar-winged", "spotted": " spot-winged"}
        return colour + suffix[values["pattern"]]
    if part == "body":
        return f"{colour}-bellied" if values["shape"] == "round" else f"slender {colour}-bellied"
    suffix = {"fanned": "fan-tailed", "forked": "fork-tailed", "pointed": "pin-tailed"}
    return f"{colour} {suffix[values['shape']]}"


def _build_species() -> tuple[Species, ...]:
    """Expand ``_FAMILY_TABLE`` into the species tuple (ids are positions)."""
    table: list[Species] = []
    for family, fixed, variants in _FAMILY_TABLE:
        for variant in variants:
            merged = {**fixed, **variant}
            attributes = {part: dict(zip(PART_ATTRIBUTES[part], merged[part], strict=True)) for part in PARTS}
            words = [_name_word(part, attributes[part]) for part in _NAME_ORDER if part in variant]
            table.append(Species(len(table), " ".join([*words, family]), family, attributes))
    return tuple(table)


SPECIES: tuple[Species, ...] = _build_species()
FAMILIES: tuple[str, ...] = tuple(family for family, _, _ in _FAMILY_TABLE)


@dataclass
class ToyBirdSample:
    """One rendered bird: the image, one visible-pixel mask per part and its ground truth."""

    image: Image.Image
    masks: dict[str, np.ndarray]
    species: Species
    caption: str
    split: str
    index: int
    seed: int

    @property
    def species_id(self) -> int:
        return self.species.id

    @property
    def species_name(self) -> str:
        return self.species.name

    @property
    def family(self) -> str:
        return self.species.family

    @property
    def attributes(self) -> dict[str, dict[str, str]]:
        return self.species.attributes


# ---------------------------------------------------------------------------------------------
# Seeding and argument checks
# ---------------------------------------------------------------------------------------------

_WORLD_VERSION = 1  # bump when the drawing changes, so old and new pixels never share a seed stream
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
    entropy = [_WORLD_VERSION, seed, _split_code(split), index]
    return np.random.default_rng(np.random.SeedSequence(entropy))


def species_of_index(index: int) -> int:
    """Species id of sample ``index``: cycles through the table, so every split is balanced."""
    return _check_int("index", index, 0) % len(SPECIES)


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


def _jitter_rgb(rgb: tuple[int, int, int], rng: np.random.Generator, amount: int) -> tuple[int, int, int]:
    """``rgb`` with independent per-channel noise of at most ``amount``."""
    noisy = np.clip(np.asarray(rgb) + rng.integers(-amount, amount + 1, size=3), 0, 255)
    return (int(noisy[0]), int(noisy[1]), int(noisy[2]))


def _pattern_rgb(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    """Colour of stripes and spots: a dark shade of the wing colour, or light grey on dark wings."""
    if sum(rgb) < 150:
        return (205, 205, 200)
    return (int(rgb[0] * 0.28), int(rgb[1] * 0.28), int(rgb[2] * 0.28))


@dataclass
class _Pose:
    """Per-image shape jitter of the bird, in local units (bird length ~1.3, facing +x, y down)."""

    head_radius: float
    tail_tilt: float
    wing_tilt: float


_TAIL_SHAPES: dict[str, tuple[tuple[float, float], ...]] = {
    # (distance along the tail, distance across it) from the root, in local units.
    "fanned": (
        (0.0, 0.07),
        (0.30, 0.25),
        (0.44, 0.25),
        (0.41, 0.14),
        (0.47, 0.08),
        (0.44, 0.0),
        (0.47, -0.08),
        (0.41, -0.14),
        (0.44, -0.25),
        (0.30, -0.25),
        (0.0, -0.07),
    ),
    "forked": (
        (0.0, 0.10),
        (0.25, 0.14),
        (0.56, 0.21),
        (0.44, 0.06),
        (0.37, 0.0),
        (0.44, -0.06),
        (0.56, -0.21),
        (0.25, -0.14),
        (0.0, -0.10),
    ),
    "pointed": ((0.0, 0.11), (0.28, 0.09), (0.64, 0.0), (0.28, -0.09), (0.0, -0.11)),
}


def _tail_ops(shape: str, rgb: tuple[int, int, int], pose: _Pose, label: int) -> list[_Op]:
    """The tail polygon, rooted inside the body and pointing back and slightly up."""
    root = np.array([-0.20, -0.01])
    along = _polar(np.zeros(2), 180.0 + pose.tail_tilt, 1.0)
    across = np.array([-along[1], along[0]])
    frame = np.array(_TAIL_SHAPES[shape])
    return [_Op(root + frame[:, :1] * along + frame[:, 1:] * across, rgb, label)]


def _body_op(shape: str, rgb: tuple[int, int, int], label: int) -> _Op:
    """The body: a tilted ellipse, plump or slender."""
    if shape == "round":
        return _Op(_ellipse(0.0, 0.03, 0.31, 0.23, -12.0, 36), rgb, label)
    return _Op(_ellipse(0.0, 0.02, 0.34, 0.16, -12.0, 36), rgb, label)


def _head_centre(body_shape: str) -> np.ndarray:
    """Where the head sits: a slender body carries it a little lower and further forward."""
    return np.array([0.29, -0.17]) if body_shape == "round" else np.array([0.31, -0.12])


def _head_ops(
    values: dict[str, str], rgb: tuple[int, int, int], centre: np.ndarray, pose: _Pose, label: int
) -> list[_Op]:
    """Crest (behind), head disc, beak, then the eye as detail."""
    r = pose.head_radius
    ops: list[_Op] = []
    if values["crest"] == "crested":
        for angle, length in ((-92.0, 0.17), (-118.0, 0.20), (-144.0, 0.16)):
            spike = [
                _polar(centre, angle - 13.0, 0.8 * r),
                _polar(centre, angle, r + length),
                _polar(centre, angle + 13.0, 0.8 * r),
            ]
            ops.append(_Op(np.array(spike), rgb, label))
    ops.append(_Op(_ellipse(centre[0], centre[1], r, r, 0.0, 28), rgb, label))
    tip = centre + np.array([r + 0.15, 0.03])
    beak = [_polar(centre, -26.0, 0.88 * r), tip, _polar(centre, 24.0, 0.88 * r)]
    ops.append(_Op(np.array(beak), _BEAK_RGB, label))
    eye = centre + np.array([0.38 * r, -0.22 * r])
    ops.append(_Op(_ellipse(eye[0], eye[1], 0.24 * r, 0.24 * r, 0.0, 16), (250, 250, 250), _DETAIL))
    ops.append(_Op(_ellipse(eye[0] + 0.05 * r, eye[1], 0.14 * r, 0.14 * r, 0.0, 12), (10, 10, 10), _DETAIL))
    return ops


def _wing_edges(pose: _Pose) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Centre line, unit normal (towards the back of the bird) and half-widths of the wing leaf."""
    front = np.array([0.14, -0.05])
    back = _polar(front, 180.0 - 12.0 - pose.wing_tilt, 0.50)
    t = np.linspace(0.0, 1.0, 18)
    centre = front[None, :] + t[:, None] * (back - front)[None, :]
    d = (back - front) / np.linalg.norm(back - front)
    normal = np.array([d[1], -d[0]])  # points up (towards negative y) for a wing heading back
    half = 0.145 * np.sqrt(np.sin(np.pi * t)) * (1.0 - 0.55 * t)
    return centre, normal, half, t


def _wing_ops(pattern: str, rgb: tuple[int, int, int], pose: _Pose, label: int) -> list[_Op]:
    """A leaf-shaped wing over the body, with bars or spots drawn inside it as detail."""
    centre, normal, half, t = _wing_edges(pose)
    upper = centre + normal[None, :] * (0.8 * half)[:, None]
    lower = centre - normal[None, :] * (1.2 * half)[:, None]
    ops = [_Op(np.concatenate([upper, lower[::-1]]), rgb, label)]
    dark = _pattern_rgb(rgb)
    if pattern == "striped":
        along = (centre[-1] - centre[0]) / np.linalg.norm(centre[-1] - centre[0])
        for tt in (0.36, 0.53, 0.70):
            c = centre[0] + tt * (centre[-1] - centre[0])
            w = float(np.interp(tt, t, half))
            top, bottom = c + normal * 0.62 * w + along * 0.035, c - normal * 0.95 * w
            bar = [top, top + along * 0.035, bottom + along * 0.035, bottom]
            ops.append(_Op(np.array(bar), dark, _DETAIL))
    elif pattern == "spotted":
        for tt, side in ((0.28, 0.25), (0.42, -0.45), (0.55, 0.2), (0.68, -0.35), (0.82, 0.05)):
            c = centre[0] + tt * (centre[-1] - centre[0])
            w = float(np.interp(tt, t, half))
            spot = c + normal * side * w
            ops.append(_Op(_ellipse(spot[0], spot[1], 0.032, 0.032, 0.0, 12), dark, _DETAIL))
    return ops


def _leg_ops() -> list[_Op]:
    """Two thin legs with forward toes (no part label: they are not one of ``PARTS``)."""
    legs = []
    for x in (0.05, -0.07):
        pts = np.array([[x, 0.12], [x + 0.01, 0.36], [x + 0.08, 0.37]])
        legs.append(_Op(pts, _LEG_RGB, _LABEL_NONE, width=0.03))
    return legs


def _bird_ops(species: Species, rng: np.random.Generator) -> list[_Op]:
    """All drawing operations of one bird in painter's order, in local units."""
    pose = _Pose(
        head_radius=0.175 * (1.0 + rng.uniform(-0.06, 0.06)),
        tail_tilt=rng.uniform(4.0, 22.0),
        wing_tilt=rng.uniform(-5.0, 8.0),
    )
    attrs = species.attributes
    rgb = {part: _jitter_rgb(species.part_rgb(part), rng, 10) for part in PARTS}
    label = {part: k + 1 for k, part in enumerate(PARTS)}
    ops = _leg_ops()
    ops += _tail_ops(attrs["tail"]["shape"], rgb["tail"], pose, label["tail"])
    ops.append(_body_op(attrs["body"]["shape"], rgb["body"], label["body"]))
    ops += _wing_ops(attrs["wing"]["pattern"], rgb["wing"], pose, label["wing"])
    centre = _head_centre(attrs["body"]["shape"])
    ops += _head_ops(attrs["head"], rgb["head"], centre, pose, label["head"])
    return ops


def _place_bird(ops: list[_Op], rng: np.random.Generator, canvas: int) -> float:
    """Flip, rotate, scale and move the bird's ops in place to canvas pixels; return pixels per unit."""
    flip = rng.random() < 0.5
    angle = math.radians(rng.uniform(-25.0, 25.0))
    unit = rng.uniform(0.6, 1.0) * 0.66 * canvas
    ca, sa = math.cos(angle), math.sin(angle)
    rotation = np.array([[ca, sa], [-sa, ca]]) * unit  # row-vector convention: p @ rotation
    for op in ops:
        pts = op.points * np.array([-1.0, 1.0]) if flip else op.points
        op.points = pts @ rotation
    every = np.concatenate([op.points for op in ops])
    low, high = every.min(axis=0), every.max(axis=0)
    slack = 0.03 * canvas  # "almost fully inside": a sliver may leave the frame
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


def _caption(species: Species, visible: dict[str, bool]) -> str:
    """A natural sentence naming the species and the attributes of its visible parts."""
    a = species.attributes
    phrases = {
        "head": f"a {a['head']['crest']} {a['head']['colour']} head",
        "wing": f"{a['wing']['pattern']} {a['wing']['colour']} wings",
        "body": f"a {a['body']['shape']} {a['body']['colour']} body",
        "tail": f"a {a['tail']['shape']} {a['tail']['colour']} tail",
    }
    shown = [phrases[part] for part in PARTS if visible[part]]
    head = f"a photo of {_article(species.name)} {species.name}"
    if not shown:
        return head
    listed = shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]
    return f"{head}, {_article(species.family)} {species.family} with {listed}"


def _article(word: str) -> str:
    """'an' before a vowel sound, else 'a'."""
    return "an" if word[:1].lower() in "aeiou" else "a"


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


def render_sample(split: str, index: int, seed: int = 0, image_size: int = 64) -> ToyBirdSample:
    """Render sample ``index`` of ``split``; the result depends only on the four arguments."""
    index = _check_int("index", index, 0)
    seed = _check_int("seed", seed, 0)
    size = _check_int("image_size", image_size, _MIN_IMAGE_SIZE)
    rng = _make_rng(split, index, seed)
    species = SPECIES[species_of_index(index)]
    canvas = size * _SUPERSAMPLE

    image = _background(rng, size, canvas)
    labels = Image.new("L", (canvas, canvas), _LABEL_NONE)
    image_draw, label_draw = ImageDraw.Draw(image), ImageDraw.Draw(labels)
    _paint(_clutter_ops(rng, canvas), image_draw, label_draw, 1.0)
    bird = _bird_ops(species, rng)
    unit = _place_bird(bird, rng, canvas)
    _paint(bird, image_draw, label_draw, unit)
    if rng.random() < 0.25:
        _paint([_twig_op(rng, canvas)], image_draw, label_draw, 1.0)

    masks = _masks_from_labels(np.asarray(labels), size)
    small = image.resize((size, size), Image.Resampling.BOX)
    caption = _caption(species, {part: bool(mask.any()) for part, mask in masks.items()})
    return ToyBirdSample(small, masks, species, caption, split, index, seed)


def render_batch(
    split: str, indices: Iterable[int], seed: int = 0, image_size: int = 64
) -> list[ToyBirdSample]:
    """Render several samples of one split (a plain loop over ``render_sample``)."""
    return [render_sample(split, index, seed, image_size) for index in indices]


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
    row.update({part: sample.species.part_label(part) for part in PARTS})
    return row


def _write_folder(
    root: Path,
    split: str,
    count: int,
    seed: int,
    image_size: int,
    progress: Callable[[int, int], None] | None,
) -> None:
    """Render ``count`` samples into the (new, empty) folder ``root``."""
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


def render_to_disk(
    out_dir: str | os.PathLike[str],
    split: str,
    count: int,
    seed: int = 0,
    image_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``count`` samples of ``split`` as an image folder with masks and ``metadata.csv``.

    Layout: ``images/{split}_{index:06d}.png``, ``masks/{split}_{index:06d}_{part}.png`` (0/255,
    mode L) and ``metadata.csv``.  The folder is rendered in a temporary sibling and renamed into
    place, so a crash never leaves a half-written data set under ``out_dir``.  An existing
    non-empty ``out_dir`` is refused unless ``overwrite`` is true.
    """
    _split_code(split)
    count = _check_int("count", count, 0)
    seed = _check_int("seed", seed, 0)
    _check_int("image_size", image_size, _MIN_IMAGE_SIZE)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"Output path {out} exists and is not a directory.")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(f"Output directory {out} is not empty; pass overwrite=True to replace it.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        _write_folder(tmp, split, count, seed, image_size, progress)
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing ``out`` is first moved aside, then deleted."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    old.rmdir()
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)
