"""``conceptlens bench make-bundle``: a bundle at a researcher's scale in seconds, without training.

    conceptlens bench make-bundle --kind concepthash --bits 64 --concepts 8 --classes 200 --images 20000 \
        --out bench-bundles/hash64
    conceptlens bench make-bundle --kind ceir --concepts-bank general --n-concepts 400 --classes 200 \
        --images 20000 --out bench-bundles/ceir400

The dashboard and ``conceptlens eval`` / ``label`` / ``encode`` are shaped on bundles of 24 classes and 960
images; a researcher opens ones of 200 classes, 20,000 images, 64-bit codes, 8 concepts or a 400-concept bank.
Training such a bundle takes hours, so this module writes one that loads exactly like a trained one:

* the model is real — a ``ConceptHash`` (concept tokens, adapters and hashing head randomly initialised) or a
  ``CEIRModel`` (projection, VAE and cluster centres) on a real backbone, whose saved weights load back
  through ``core.kinds``;
* the cached arrays are synthetic but have a trained model's shapes, types and structure: ConceptHash codes
  clustered by class (each class a centre code built from a few values per concept, every bit flipped with
  probability ``flip``), attention as smooth blobs where each concept prefers its own region; CEIR's
  concepts, latents, clusters and contributions are what the stored model computes from synthetic,
  class-clustered image embeddings;
* the data is real: a class-folder tree of small PNGs (class colour and shape, per-image position and noise)
  whose relative paths are the stored ids, or ToyBirds ids for the views that need part masks;
* the metrics are computed from the stored arrays with the project's own functions (mAP and precision@k of
  ``core.retrieval``; ACC, NMI and ARI of ``core.ceir.clustering``), and ``config.json`` says at its top level
  that the bundle is synthetic (``"synthetic": {"made_by": ..., "note": ...}``).

Bad flags are refused with one sentence before anything is written; the bundle is saved atomically
(``core.bundle.save_bundle``) and the image folder is written beside its final place and renamed into it.
PyTorch is imported only while a bundle is made.
"""

from __future__ import annotations

import argparse
import colorsys
import multiprocessing
import os
import shutil
import struct
import sys
import time
import uuid
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.bundle import check_save_target, read_bundle_config, save_bundle
from core.ceir import arrays as ceir_arrays
from core.ceir.concept_bank import apply_template, load_bank
from core.ceir.config import CEIRConfig, VAEConfig
from core.concepthash import arrays as hash_arrays
from core.concepthash.config import ConceptHashConfig
from core.data import toybirds
from core.data.spec import DataSpec
from core.retrieval import retrieval_metrics

if TYPE_CHECKING:
    import torch

    from core.backbones.clip import Backbone

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BACKBONE = str(REPO_ROOT / "pretrained" / "toybirds-clip")
MADE_BY = "conceptlens bench make-bundle"
SYNTHETIC_NOTE = (
    "Synthetic: a real model with randomly initialised trainable parts; the cached arrays are drawn to look "
    "like a trained model's, not computed by training. Its metrics measure the drawn arrays, not a method."
)
DATA_MARKER = "MADE-BY-CONCEPTLENS.txt"  # in a data folder this module wrote, so --overwrite may replace it
KINDS = ("concepthash", "ceir")
DATA_CHOICES = ("folder", "toybirds")
IG_STEPS = 8  # Integrated-Gradients steps of the stored contributions (training uses 64; same integral)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# what to make, checked before anything is written
# --------------------------------------------------------------------------------------------------


@dataclass
class SyntheticBundleConfig:
    """Everything ``make-bundle`` takes; ``check`` says in one sentence what is wrong."""

    out: Path
    kind: str = "concepthash"
    classes: int = 200
    images: int = 20_000  # train images: the retrieval database / CEIR's training set
    queries: int | None = None  # test images; None: 10 % of ``images``
    backbone: str = DEFAULT_BACKBONE
    data: str = "folder"
    data_out: Path | None = None  # the folder data's root; None: OUT-data beside the bundle
    image_size: int = 64  # pixels of the written PNGs
    seed: int = 0
    overwrite: bool = False
    # ConceptHash
    bits: int = 64
    concepts: int = 8
    flip: float = (
        0.13  # chance that a code bit differs from its class centre's (mAP about 0.88 at 200 classes)
    )
    # CEIR
    concepts_bank: str = "general"
    n_concepts: int = 400
    latent_dim: int = VAEConfig().latent_dim

    def __post_init__(self) -> None:
        self.out = Path(self.out)
        if self.queries is None:
            self.queries = max(1, self.images // 10)
        if self.data_out is None:
            whole = self.out.absolute()
            self.data_out = whole.with_name(whole.name + "-data")
        self.data_out = Path(self.data_out)

    def check(self) -> None:
        """Raise ValueError with one sentence for the first bad setting (nothing has been written yet)."""
        if self.kind not in KINDS:
            raise ValueError(f"--kind must be {' or '.join(KINDS)}, not {self.kind!r}.")
        if self.data not in DATA_CHOICES:
            raise ValueError(f"--data must be {' or '.join(DATA_CHOICES)}, not {self.data!r}.")
        if self.classes < 2:
            raise ValueError(f"--classes must be at least 2, got {self.classes}.")
        if self.images < self.classes:
            raise ValueError(
                f"--images {self.images} is smaller than --classes {self.classes}; each class needs an image."
            )
        if self.queries < 1:
            raise ValueError(f"--queries must be at least 1, got {self.queries}.")
        if self.data == "toybirds" and self.classes != len(toybirds.SPECIES):
            raise ValueError(
                f"--data toybirds has {len(toybirds.SPECIES)} species, so --classes must be "
                f"{len(toybirds.SPECIES)}, not {self.classes}."
            )
        if self.image_size < 16:
            raise ValueError(f"--image-size must be at least 16 pixels, got {self.image_size}.")
        if self.kind == "concepthash":
            self._check_concepthash()
        else:
            self._check_ceir()
        if (self.out / "config.json").is_file():
            if not self.overwrite:
                raise ValueError(f"The bundle {self.out} already exists; pass --overwrite to replace it.")
            if not _is_synthetic(self.out):
                raise ValueError(
                    f"{self.out} holds a bundle this command did not make; choose another --out."
                )
        check_save_target(self.out, self.overwrite)
        if self.data == "folder":
            check_data_target(self.data_out, self.overwrite)
            if self.data_out.resolve() == self.out.resolve():
                raise ValueError("--data-out must be another folder than --out.")

    def _check_concepthash(self) -> None:
        if self.bits < 1 or self.concepts < 1:
            raise ValueError(
                f"--bits and --concepts must be at least 1, got {self.bits} and {self.concepts}."
            )
        if self.bits % self.concepts:
            raise ValueError(
                f"{self.bits} bits cannot be split evenly over {self.concepts} concepts; choose --bits "
                "divisible by --concepts."
            )
        if not 0.0 <= self.flip < 0.5:
            raise ValueError(f"--flip is a probability below 0.5, got {self.flip}.")

    def _check_ceir(self) -> None:
        if self.n_concepts < 2:
            raise ValueError(f"--n-concepts must be at least 2, got {self.n_concepts}.")
        if self.latent_dim < 1:
            raise ValueError(f"--latent-dim must be at least 1, got {self.latent_dim}.")
        if self.images < 4:
            raise ValueError("CEIR needs at least 4 --images (the projection holds some out).")


def _is_synthetic(bundle: Path) -> bool:
    try:
        return isinstance(read_bundle_config(bundle).get("synthetic"), dict)
    except ValueError:  # unreadable or invalid: not ours to replace
        return False


def check_data_target(path: Path, overwrite: bool) -> None:
    """Refuse a data folder that exists, unless ``overwrite`` and this module made it (its marker file)."""
    if not (path.exists() or path.is_symlink()):
        return
    if not path.is_dir():
        raise ValueError(f"Cannot write the image folder {path}: a file is in the way.")
    if not any(path.iterdir()):
        return
    if not (path / DATA_MARKER).is_file():
        raise ValueError(
            f"Cannot write the image folder {path}: it holds other files; choose another --data-out."
        )
    if not overwrite:
        raise ValueError(f"The image folder {path} already exists; pass --overwrite to replace it.")


# --------------------------------------------------------------------------------------------------
# classes, images and their ids
# --------------------------------------------------------------------------------------------------

_QUALIFIERS = (
    "Black footed", "Laysan", "Sooty", "Crested", "Least", "Red winged", "Yellow headed", "Rusty",
    "Brewer", "Gray crowned Rosy", "Painted", "Indigo", "Lazuli", "Spotted", "Chestnut sided",
    "Northern Rough winged", "Scissor tailed", "Olive sided", "Long tailed", "Great Crested",
    "White breasted", "Black throated Blue", "Cerulean", "Pied billed", "Horned", "Eared",
)  # fmt: skip
_BIRDS = (
    "Albatross", "Auklet", "Blackbird", "Bunting", "Cormorant", "Cowbird", "Flycatcher", "Grebe", "Gull",
    "Hummingbird", "Jay", "Kingfisher", "Merganser", "Nuthatch", "Oriole", "Pelican", "Sparrow", "Swallow",
    "Tern", "Vireo", "Warbler", "Woodpecker", "Wren", "Kittiwake", "Pipit", "Tanager",
)  # fmt: skip
_LONG = "Greater Northern Long tailed and Chestnut collared"  # some CUB-style names run long


def class_names(n: int) -> list[str]:
    """``n`` distinct CUB-style class names ("Black footed Albatross 001"), every seventh one long, in the
    order a class-folder reader lists them (sorted), so a name's position is its label."""
    names = []
    for i in range(n):
        qualifier = _QUALIFIERS[i % len(_QUALIFIERS)]
        bird = _BIRDS[(i // len(_QUALIFIERS) + i) % len(_BIRDS)]
        long = f"{_LONG} " if i % 7 == 3 else ""
        names.append(f"{long}{qualifier} {bird} {i + 1:03d}")
    return sorted(names)


def per_class_counts(total: int, classes: int) -> np.ndarray:
    """``total`` images spread over the classes as evenly as whole numbers allow (the first ones get more)."""
    counts = np.full(classes, total // classes, dtype=np.int64)
    counts[: total % classes] += 1
    return counts


@dataclass
class SplitPlan:
    """One split's labels and ids, in the order a data reader lists the images (class by class)."""

    labels: np.ndarray
    ids: np.ndarray


def folder_split(split: str, names: Sequence[str], counts: np.ndarray) -> SplitPlan:
    """Ids ``<split>/<class name>/<class name>_<n>.png`` (relative to the data root, as
    ``FileSplit.image_id`` makes them); within a class the files sort in the order listed."""
    labels = np.repeat(np.arange(len(names), dtype=np.int64), counts)
    ids = [
        f"{split}/{name}/{name.replace(' ', '_')}_{n:05d}.png"
        for name, c in zip(names, counts, strict=True)
        for n in range(c)
    ]
    return SplitPlan(labels, np.array(ids))


def toybirds_split(split: str, per_class: int, seed: int) -> SplitPlan:
    """The ids and species of a ToyBirds split of ``per_class`` images per species (``ToyBirdsSplit``)."""
    count = per_class * len(toybirds.SPECIES)
    labels = np.array([toybirds.species_of_index(i) for i in range(count)], dtype=np.int64)
    return SplitPlan(labels, np.array([f"toybirds/{split}/seed{seed}/{i:06d}" for i in range(count)]))


@dataclass
class SyntheticData:
    """The data a synthetic bundle names: its spec, class names, and both splits."""

    spec: DataSpec
    classes: list[str]
    train: SplitPlan
    test: SplitPlan
    root: Path | None = None  # the class-folder tree, for folder data


def plan_data(config: SyntheticBundleConfig) -> SyntheticData:
    """Class names, labels and ids of both splits (nothing is written)."""
    if config.data == "toybirds":
        n = len(toybirds.SPECIES)
        train_per, test_per = max(1, config.images // n), max(1, config.queries // n)
        spec = DataSpec(kind="toybirds", train_per_class=train_per, test_per_class=test_per, seed=0)
        names = [species.name for species in toybirds.SPECIES]
        return SyntheticData(
            spec, names, toybirds_split("train", train_per, 0), toybirds_split("test", test_per, 0)
        )
    names = class_names(config.classes)
    root = config.data_out.resolve()
    spec = DataSpec(kind="folder", root=str(root), image_size=config.image_size)
    train = folder_split("train", names, per_class_counts(config.images, config.classes))
    test = folder_split("test", names, per_class_counts(config.queries, config.classes))
    return SyntheticData(spec, names, train, test, root)


def class_colours(n: int, seed: int) -> np.ndarray:
    """(n, 2, 3) uint8: a saturated body colour and a pale background tint per class, hues spread apart."""
    rng = np.random.default_rng((seed, 1))
    hues = (np.arange(n) * 0.618033988749895 + rng.random()) % 1.0
    body = [colorsys.hsv_to_rgb(h, 0.55 + 0.4 * rng.random(), 0.55 + 0.4 * rng.random()) for h in hues]
    tint = [colorsys.hsv_to_rgb((h + 0.5) % 1.0, 0.15, 0.92) for h in hues]
    return (np.stack([np.array(body), np.array(tint)], axis=1) * 255).round().astype(np.uint8)


def image_offsets(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 2) integer pixel shifts (dy, dx) of each image's bird from its class's place."""
    reach = max(1, size // 10)
    return rng.integers(-reach, reach + 1, size=(n, 2))


def encode_png(pixels: np.ndarray, level: int = 1) -> bytes:
    """An (h, w, 3) uint8 image as PNG bytes: rows unfiltered, one zlib stream (a tenth of PIL's time on
    images this small, and they read back with any PNG reader)."""
    height, width, _ = pixels.shape
    rows = np.zeros((height, width * 3 + 1), dtype=np.uint8)  # each row starts with filter type 0 (none)
    rows[:, 1:] = pixels.reshape(height, -1)

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    body = zlib.compress(rows.tobytes(), level)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


class ImagePainter:
    """Draws small images that differ by class (colour, shape and place of an ellipse "bird" on a tinted
    background) and per image (the bird's shift and one of a pool of blotchy textures)."""

    PATTERNS = 64

    def __init__(self, classes: int, size: int, seed: int) -> None:
        rng = np.random.default_rng((seed, 2))
        self.size, self.reach = size, max(1, size // 10)
        self.colours = class_colours(classes, seed)
        self.centres = rng.uniform(0.35, 0.65, size=(classes, 2)) * size
        self.radii = rng.uniform(0.18, 0.3, size=(classes, 2)) * size
        block = max(1, size // 16)
        cells = -(-size // block)
        coarse = rng.integers(-14, 15, size=(self.PATTERNS, cells, cells, 1), dtype=np.int16)
        self.patterns = coarse.repeat(block, axis=1).repeat(block, axis=2)[:, :size, :size]
        self._canvases: dict[int, np.ndarray] = {}

    def canvas(self, label: int) -> np.ndarray:
        """The class's bird at its place on a background ``reach`` pixels wider on every side (int16)."""
        if label not in self._canvases:
            side = self.size + 2 * self.reach
            yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) - self.reach
            (cy, cx), (ry, rx) = self.centres[label], self.radii[label]
            bird = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
            body, tint = self.colours[label]
            self._canvases[label] = np.where(bird[..., None], body, tint).astype(np.int16)
        return self._canvases[label]

    def image(self, label: int, offset: np.ndarray, pattern: int) -> np.ndarray:
        """(size, size, 3) uint8: the class's bird moved by ``offset`` (dy, dx pixels) under a texture."""
        top, left = self.reach - int(offset[0]), self.reach - int(offset[1])
        window = self.canvas(label)[top : top + self.size, left : left + self.size]
        return np.clip(window + self.patterns[pattern % self.PATTERNS], 0, 255).astype(np.uint8)


PARALLEL_ROWS = 4000  # from this many images on, worker processes share the writing
CHUNK_ROWS = 2500  # images one worker task writes


@dataclass(frozen=True)
class PaintJob:
    """Images one process writes: their ids (paths under ``root``), classes, shifts and texture numbers."""

    root: str
    classes: int
    size: int
    seed: int
    ids: tuple[str, ...]
    labels: np.ndarray
    offsets: np.ndarray
    patterns: np.ndarray


def paint_rows(job: PaintJob) -> int:
    """Write the images of ``job`` (their folders exist); how many. Module level, so a worker can run it."""
    painter = ImagePainter(job.classes, job.size, job.seed)
    root = Path(job.root)
    for image_id, label, offset, pattern in zip(job.ids, job.labels, job.offsets, job.patterns, strict=True):
        (root / image_id).write_bytes(encode_png(painter.image(int(label), offset, int(pattern))))
    return len(job.ids)


def paint_jobs(
    root: Path, data: SyntheticData, config: SyntheticBundleConfig, offsets: dict[str, np.ndarray]
) -> list[PaintJob]:
    """Both splits' images in chunks of ``CHUNK_ROWS``."""
    jobs = []
    for split, plan in (("train", data.train), ("test", data.test)):
        patterns = np.arange(len(plan.ids)) * 7 + plan.labels
        for lo in range(0, len(plan.ids), CHUNK_ROWS):
            rows = slice(lo, lo + CHUNK_ROWS)
            ids = tuple(str(i) for i in plan.ids[rows])
            jobs.append(
                PaintJob(str(root), len(data.classes), config.image_size, config.seed, ids,
                         plan.labels[rows], offsets[split][rows], patterns[rows])
            )  # fmt: skip
    return jobs


def _workers() -> int:
    try:
        return max(1, min(4, len(os.sched_getaffinity(0))))
    except AttributeError:  # not Linux
        return max(1, min(4, os.cpu_count() or 1))


def write_images(jobs: list[PaintJob], progress: Callable[[int, int], None]) -> None:
    """Run the jobs: here for a few images, else in forked worker processes (they run NumPy and zlib only,
    never PyTorch, and unlike spawned ones need no importable main module: a script piped to Python works)."""
    total = sum(len(job.ids) for job in jobs)
    done = 0
    if total < PARALLEL_ROWS or _workers() == 1 or "fork" not in multiprocessing.get_all_start_methods():
        for job in jobs:
            done += paint_rows(job)
            progress(done, total)
        return
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=_workers(), mp_context=context) as pool:
        for written in pool.map(paint_rows, jobs):
            done += written
            progress(done, total)


def write_image_folder(
    data: SyntheticData,
    config: SyntheticBundleConfig,
    offsets: dict[str, np.ndarray],
    progress: Callable[[str], None],
) -> None:
    """Write ``train/`` and ``test/`` class folders in a hidden sibling of the data root, then rename it into
    place (an old folder this module made is replaced only after the new one is complete)."""
    root = data.root
    tmp = root.parent / f".tmp-{root.name}-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    try:
        tmp.mkdir(parents=True)
        (tmp / DATA_MARKER).write_text(
            f"Synthetic images written by `{MADE_BY}` (seed {config.seed}); safe to delete.\n",
            encoding="utf-8",
        )
        for folder in sorted({(tmp / str(i)).parent for plan in (data.train, data.test) for i in plan.ids}):
            folder.mkdir(parents=True, exist_ok=True)
        write_images(
            paint_jobs(tmp, data, config, offsets),
            lambda done, total: progress(f"images: {done:,}/{total:,}"),
        )
        if root.exists():
            shutil.rmtree(root)
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --------------------------------------------------------------------------------------------------
# ConceptHash: codes and attention
# --------------------------------------------------------------------------------------------------


def class_centre_codes(classes: int, bits: int, concepts: int, rng: np.random.Generator) -> np.ndarray:
    """(classes, bits) ±1 centres built like a trained model's: each concept's sub-code takes one of a few
    values (parts shared between classes), so classes differ in some sub-codes and share others."""
    per = bits // concepts
    values = min(2**per, max(4, round(classes**0.5)))
    centres = np.empty((classes, bits), dtype=np.int8)
    for m in range(concepts):
        vocabulary = rng.choice([-1, 1], size=(values, per)).astype(np.int8)
        centres[:, m * per : (m + 1) * per] = vocabulary[rng.integers(0, values, classes)]
    return centres


def noisy_codes(centres: np.ndarray, labels: np.ndarray, flip: float, rng: np.random.Generator) -> np.ndarray:
    """(N, bits) int8 ±1: each row its class's centre with every bit flipped with probability ``flip``."""
    codes = centres[labels].copy()
    codes[rng.random(codes.shape) < flip] *= -1
    return codes


def attention_blobs(
    n: int, concepts: int, grid: tuple[int, int], rng: np.random.Generator, shift: np.ndarray | None = None
) -> np.ndarray:
    """(n, concepts, gh, gw) float16 attention: a smooth blob per concept at its own place (spread round the
    image centre), moved per image by ``shift`` (in patches) and a small jitter, summing to about 0.87 like
    a trained model's last-layer concept-to-patch attention (the rest goes to other tokens)."""
    gh, gw = grid
    angles = 2 * np.pi * np.arange(concepts) / concepts
    home = np.stack([0.5 + 0.28 * np.sin(angles), 0.5 + 0.28 * np.cos(angles)], axis=1) * [gh, gw]
    sigma = (0.12 + 0.06 * np.random.default_rng(concepts).random(concepts)) * max(gh, gw)
    place = home[None] + rng.normal(0, 0.35, size=(n, concepts, 2))
    if shift is not None:
        place += shift[:, None, :]
    ys = (np.arange(gh) + 0.5)[None, None, :, None]
    xs = (np.arange(gw) + 0.5)[None, None, None, :]
    dist = (ys - place[..., 0, None, None]) ** 2 + (xs - place[..., 1, None, None]) ** 2
    blobs = np.exp(-dist / (2 * sigma[None, :, None, None] ** 2)) + 0.02
    mass = rng.uniform(0.8, 0.95, size=(n, concepts, 1, 1))
    return (blobs / blobs.sum(axis=(2, 3), keepdims=True) * mass).astype(np.float16)


def bird_shift(
    data: SyntheticData,
    painter_centres: np.ndarray | None,
    offsets: np.ndarray,
    split: SplitPlan,
    size: int,
    grid: tuple[int, int],
) -> np.ndarray | None:
    """Each image's bird centre relative to the image centre, in patches (None for ToyBirds: unknown here)."""
    if painter_centres is None:
        return None
    pixels = painter_centres[split.labels] + offsets - size / 2
    return pixels / size * np.array(grid, dtype=np.float64)


# --------------------------------------------------------------------------------------------------
# making a bundle
# --------------------------------------------------------------------------------------------------


@dataclass
class MadeBundle:
    """Where a synthetic bundle and its images went, and each step's wall-clock and CPU seconds (the CPU
    time of this process and its finished workers: on a busy machine the wall clock says little)."""

    bundle: Path
    data_root: Path | None
    seconds: dict[str, float]
    cpu_seconds: dict[str, float]
    metrics: dict[str, Any]


def cpu_time() -> float:
    """CPU seconds used so far by this process and its finished child processes."""
    try:
        import resource
    except ImportError:  # Windows
        return time.process_time()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


class _Clock:
    def __init__(self, progress: Callable[[str], None]) -> None:
        self.started, self.cpu_started = time.perf_counter(), cpu_time()
        self.last, self.last_cpu = self.started, self.cpu_started
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self.progress = progress

    def lap(self, step: str) -> None:
        now, cpu = time.perf_counter(), cpu_time()
        self.seconds[step], self.cpu_seconds[step] = round(now - self.last, 3), round(cpu - self.last_cpu, 3)
        self.last, self.last_cpu = now, cpu
        self.progress(f"{step}: {self.seconds[step]:.1f} s ({self.cpu_seconds[step]:.1f} s CPU)")

    def made(self, out: Path, root: Path | None, metrics: dict[str, Any]) -> MadeBundle:
        self.seconds["total"] = round(time.perf_counter() - self.started, 3)
        self.cpu_seconds["total"] = round(cpu_time() - self.cpu_started, 3)
        return MadeBundle(out, root, self.seconds, self.cpu_seconds, metrics)


def _backbone(spec: str, seed: int) -> Backbone:
    """The backbone on CPU; a bundle directory is stored by its absolute path (fixtures live anywhere)."""
    import torch

    from core.backbones.clip import load_backbone

    torch.manual_seed(seed)
    backbone = load_backbone(spec, device="cpu")
    if "bundle" in backbone.reference:
        backbone.reference = {"bundle": str(Path(backbone.reference["bundle"]).resolve())}
    return backbone


def _synthetic_section(config: SyntheticBundleConfig, **details: Any) -> dict[str, Any]:
    settings = {k: v for k, v in asdict(config).items() if k not in ("out", "overwrite")}
    settings["data_out"] = str(config.data_out) if config.data == "folder" else None
    return {"made_by": MADE_BY, "note": SYNTHETIC_NOTE, "settings": settings, **details}


def _prepare(config: SyntheticBundleConfig, clock: _Clock) -> tuple[SyntheticData, dict[str, np.ndarray]]:
    config.check()
    data = plan_data(config)
    rng = np.random.default_rng((config.seed, 3))
    offsets = {
        "train": image_offsets(len(data.train.ids), config.image_size, rng),
        "test": image_offsets(len(data.test.ids), config.image_size, rng),
    }
    clock.lap("plan")
    return data, offsets


def _write_images(data: SyntheticData, config: SyntheticBundleConfig, offsets, clock: _Clock) -> None:
    if data.root is not None:
        write_image_folder(data, config, offsets, clock.progress)
        clock.lap(f"write {len(data.train.ids) + len(data.test.ids):,} PNGs")


def _save(
    out: Path,
    kind: str,
    bundle_config: dict,
    weights: dict,
    arrays: dict,
    config: SyntheticBundleConfig,
    data: SyntheticData,
    written_images: bool,
) -> None:
    """Save atomically; when saving fails, the image folder written for it goes too."""
    try:
        save_bundle(
            out, kind=kind, config=bundle_config, weights=weights, arrays=arrays, overwrite=config.overwrite
        )
    except BaseException:
        if written_images and data.root is not None:
            shutil.rmtree(data.root, ignore_errors=True)
        raise


def make_concepthash_bundle(
    out: str | os.PathLike,
    *,
    bits: int = 64,
    concepts: int = 8,
    classes: int = 200,
    images: int = 20_000,
    queries: int | None = None,
    backbone: str = DEFAULT_BACKBONE,
    data: str = "folder",
    data_out: str | os.PathLike | None = None,
    image_size: int = 64,
    flip: float = 0.13,
    seed: int = 0,
    overwrite: bool = False,
    progress: Callable[[str], None] = log,
) -> MadeBundle:
    """Write a synthetic ConceptHash bundle at ``out`` (and, for folder data, its images at ``data_out``,
    default ``<out>-data``); see the module notes. Bad settings raise ValueError before anything is
    written."""
    config = SyntheticBundleConfig(
        out=Path(out),
        kind="concepthash",
        classes=classes,
        images=images,
        queries=queries,
        backbone=backbone,
        data=data,
        data_out=None if data_out is None else Path(data_out),
        image_size=image_size,
        seed=seed,
        overwrite=overwrite,
        bits=bits,
        concepts=concepts,
        flip=flip,
    )
    return _make_concepthash(config, progress)


def _make_concepthash(config: SyntheticBundleConfig, progress: Callable[[str], None]) -> MadeBundle:
    import torch

    from core.concepthash.model import ConceptHash

    clock = _Clock(progress)
    data, offsets = _prepare(config, clock)
    model_config = ConceptHashConfig(bits=config.bits, n_concepts=config.concepts)
    backbone = _backbone(config.backbone, config.seed)
    with torch.no_grad():
        model = ConceptHash(backbone, data.classes, model_config).eval()
    clock.lap(f"model ({backbone.describe()})")

    rng = np.random.default_rng((config.seed, 4))
    centres = class_centre_codes(len(data.classes), config.bits, config.concepts, rng)
    db_codes = noisy_codes(centres, data.train.labels, config.flip, rng)
    query_codes = noisy_codes(centres, data.test.labels, config.flip, rng)
    painter_centres = (
        ImagePainter(len(data.classes), config.image_size, config.seed).centres if data.root else None
    )
    grid = backbone.grid_size

    def attention(split: str, plan: SplitPlan) -> np.ndarray:
        shift = bird_shift(data, painter_centres, offsets[split], plan, config.image_size, grid)
        chunks = [
            attention_blobs(len(rows), config.concepts, grid, rng, None if shift is None else shift[rows])
            for rows in np.array_split(np.arange(len(plan.ids)), max(1, len(plan.ids) // 4096))
        ]  # in chunks of a few thousand rows: the float64 work arrays stay small
        return np.concatenate(chunks)

    arrays = {
        hash_arrays.DB_CODES: db_codes,
        hash_arrays.DB_LABELS: data.train.labels,
        hash_arrays.DB_IDS: data.train.ids,
        hash_arrays.DB_ATTENTION: attention("train", data.train),
        hash_arrays.QUERY_CODES: query_codes,
        hash_arrays.QUERY_IDS: data.test.ids,
        hash_arrays.QUERY_ATTENTION: attention("test", data.test),
    }
    clock.lap("codes and attention")
    metrics = retrieval_metrics(db_codes, data.train.labels, query_codes, data.test.labels)
    metrics |= {
        "map_train_database": metrics["map"],
        "n_database": len(db_codes),
        "n_queries": len(query_codes),
    }
    clock.lap("metrics")
    _write_images(data, config, offsets, clock)
    bundle_config = {
        "synthetic": _synthetic_section(config, seconds=dict(clock.seconds)),
        "backbone": backbone.reference,
        "data": data.spec.to_dict(),
        "model": model_config.to_dict(),
        "train": {"epochs": 0, "seconds": 0.0, "history": []},
        "classes": list(data.classes),
        "metrics": metrics,
    }
    _save(
        config.out,
        "concepthash",
        bundle_config,
        model.state_dict(),
        arrays,
        config,
        data,
        data.root is not None,
    )
    clock.lap("save bundle")
    return clock.made(config.out, data.root, metrics)


# --------------------------------------------------------------------------------------------------
# CEIR: embeddings -> concepts -> latents -> clusters, through the stored model
# --------------------------------------------------------------------------------------------------


def clustered_embeddings(labels: np.ndarray, classes: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """(N, dim) float32 unit vectors near a random direction per class (CLIP-like image embeddings: a shared
    mean direction, a class part and per-image noise)."""
    shared = rng.normal(size=dim)
    class_part = rng.normal(size=(classes, dim))
    noise = rng.normal(size=(len(labels), dim))
    rows = 1.5 * shared / np.linalg.norm(shared) * np.sqrt(dim) + class_part[labels] + 0.55 * noise
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def concept_text_embeddings(backbone: Backbone, concepts: list[str], template: str) -> torch.Tensor:
    """(C, D) centred concept text embeddings (CEIR's default reading: each concept's caption in the bank's
    template, L2-normalised, minus the bank's mean)."""
    import torch.nn.functional as F

    text = F.normalize(backbone.encode_texts(apply_template(template, concepts)).cpu().float(), dim=-1)
    return text - text.mean(dim=0, keepdim=True)


def lloyd_clusters(
    model, latents: torch.Tensor, labels: np.ndarray, k: int, rng: np.random.Generator, steps: int = 3
) -> np.ndarray:
    """Set ``model.cluster_centers`` by a few k-means (Lloyd) steps on the latents, started from the class
    means and stored in a random order (k-means numbers its clusters arbitrarily); the model's own
    assignment of each row."""
    import torch

    x = latents.numpy().astype(np.float64)
    centres = np.stack(
        [x[labels == c].mean(axis=0) if (labels == c).any() else x[c % len(x)] for c in range(k)]
    )
    centres = centres[rng.permutation(k)]
    for _ in range(steps):
        model.cluster_centers.copy_(torch.from_numpy(centres).float())
        assigned = model.assign(latents).numpy()
        for c in range(k):
            if (assigned == c).any():
                centres[c] = x[assigned == c].mean(axis=0)
    model.cluster_centers.copy_(torch.from_numpy(centres).float())
    return model.assign(latents).numpy().astype(np.int64)


def calibrate_batchnorm(model, concept_vectors: torch.Tensor) -> None:
    """Give the VAE's BatchNorm layers the running statistics of the data (one pass in train mode, no
    gradient): a randomly initialised encoder then maps the concepts to well-scaled latents."""
    import torch

    for module in model.vae.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # a cumulative average over the pass
    model.vae.train()
    with torch.no_grad():
        for start in range(0, len(concept_vectors), 4096):
            model.vae.encode(concept_vectors[start : start + 4096])
    model.eval()


def make_ceir_bundle(
    out: str | os.PathLike,
    *,
    concepts_bank: str = "general",
    n_concepts: int = 400,
    classes: int = 200,
    images: int = 20_000,
    queries: int | None = None,
    backbone: str = DEFAULT_BACKBONE,
    data: str = "folder",
    data_out: str | os.PathLike | None = None,
    image_size: int = 64,
    latent_dim: int = VAEConfig().latent_dim,
    seed: int = 0,
    overwrite: bool = False,
    progress: Callable[[str], None] = log,
) -> MadeBundle:
    """Write a synthetic CEIR bundle at ``out`` with the first ``n_concepts`` of ``concepts_bank`` (and, for
    folder data, its images at ``data_out``, default ``<out>-data``); see the module notes. Bad settings raise
    ValueError before anything is written."""
    config = SyntheticBundleConfig(
        out=Path(out),
        kind="ceir",
        classes=classes,
        images=images,
        queries=queries,
        backbone=backbone,
        data=data,
        data_out=None if data_out is None else Path(data_out),
        image_size=image_size,
        seed=seed,
        overwrite=overwrite,
        concepts_bank=concepts_bank,
        n_concepts=n_concepts,
        latent_dim=latent_dim,
    )
    return _make_ceir(config, progress)


def _bank_concepts(config: SyntheticBundleConfig) -> tuple[list[str], str, str]:
    """The first ``n_concepts`` of the bank, its template and source; one sentence when it has fewer."""
    bank = load_bank(config.concepts_bank)
    if len(bank.concepts) < config.n_concepts:
        raise ValueError(
            f"The concept bank {bank.source} has {len(bank.concepts)} concepts, fewer than --n-concepts "
            f"{config.n_concepts}."
        )
    return bank.concepts[: config.n_concepts], bank.template, bank.source


def _make_ceir(config: SyntheticBundleConfig, progress: Callable[[str], None]) -> MadeBundle:
    import torch

    from core.ceir.bottleneck import ZScore, cos3_similarity, split_holdout, teacher_similarities
    from core.ceir.clustering import clustering_scores
    from core.ceir.explain import contributions_in_batches
    from core.ceir.labels import even_subsample
    from core.ceir.model import CEIRModel

    clock = _Clock(progress)
    config.check()
    concepts, template, source = _bank_concepts(config)
    data, offsets = _prepare(config, clock)
    backbone = _backbone(config.backbone, config.seed)
    ceir_config = CEIRConfig(vae=VAEConfig(latent_dim=config.latent_dim), concept_template=template)
    k = len(data.classes)
    with torch.no_grad():
        text = concept_text_embeddings(backbone, concepts, template)
    model = CEIRModel(backbone.embed_dim, concepts, ceir_config.vae, k, text_dim=text.shape[1])
    clock.lap(f"model ({backbone.describe()}, {len(concepts)} concepts)")

    rng = np.random.default_rng((config.seed, 5))
    labels = data.train.labels
    embeddings = torch.from_numpy(clustered_embeddings(labels, k, backbone.embed_dim, rng))
    with torch.no_grad():
        teacher = teacher_similarities(embeddings, text)  # what training fits the projection to
        noise = torch.from_numpy(rng.normal(size=tuple(text.shape)).astype(np.float32))
        model.projection.weight.copy_(
            text + 0.6 * text.norm(dim=1, keepdim=True) * noise / np.sqrt(text.shape[1])
        )
        raw = model.projection(embeddings)
        zscore = ZScore.fit(raw)
        model.zscore_mean.copy_(zscore.mean)
        model.zscore_std.copy_(zscore.std)
        model.concept_embeddings.copy_(text)
        _, held_out = split_holdout(len(raw), ceir_config.projection.val_fraction, config.seed)
        fidelity = cos3_similarity(raw[held_out], teacher[held_out]).numpy().astype(np.float32)
        concept_vectors = model.concept_vectors(embeddings)
    calibrate_batchnorm(model, concept_vectors)
    with torch.no_grad():
        latents = model.latent(concept_vectors)
        clusters = lloyd_clusters(model, latents, labels, k, rng)
    clock.lap("concepts, latents and clusters")
    contributions = contributions_in_batches(
        model, concept_vectors.numpy(), clusters, batch_size=2048, steps=IG_STEPS
    )
    clock.lap(f"contributions ({IG_STEPS} Integrated-Gradients steps)")
    arrays = {
        ceir_arrays.TRAIN_CONCEPTS: concept_vectors.numpy().astype(np.float32),
        ceir_arrays.TRAIN_LATENTS: latents.numpy().astype(np.float32),
        ceir_arrays.TRAIN_CLUSTERS: clusters,
        ceir_arrays.TRAIN_LABELS: labels,
        ceir_arrays.TRAIN_IDS: data.train.ids,
        ceir_arrays.TRAIN_CONTRIBUTIONS: contributions.astype(np.float32),
        ceir_arrays.CONCEPT_FIDELITY: fidelity,
        ceir_arrays.OOD_REFERENCE: even_subsample(embeddings.numpy()),
    }  # no train_umap: the dashboard draws the map on first view
    metrics = clustering_scores(labels, clusters) | {"n_train": len(labels), "n_concepts": len(concepts)}
    clock.lap("metrics")
    _write_images(data, config, offsets, clock)
    bundle_config = {
        "synthetic": _synthetic_section(config, seconds=dict(clock.seconds), ig_steps=IG_STEPS),
        "backbone": backbone.reference,
        "data": data.spec.to_dict(),
        "concept_bank": {"source": source, "n_input": config.n_concepts, "template": template, "removed": {}},
        "concepts": concepts,
        "classes": list(data.classes),
        "ceir": ceir_config.to_dict() | {"n_clusters": k},
        "train": {"seconds": 0.0, "vae_history": []},
        "metrics": metrics,
    }
    _save(config.out, "ceir", bundle_config, model.state_dict(), arrays, config, data, data.root is not None)
    clock.lap("save bundle")
    return clock.made(config.out, data.root, metrics)


# --------------------------------------------------------------------------------------------------
# command line (wired in by core.bench)
# --------------------------------------------------------------------------------------------------


def make_bundle(config: SyntheticBundleConfig, progress: Callable[[str], None] = log) -> MadeBundle:
    """Make the synthetic bundle ``config`` describes (either kind)."""
    config.check()  # before PyTorch is imported: a bad flag is refused at once
    return (_make_concepthash if config.kind == "concepthash" else _make_ceir)(config, progress)


def add_make_bundle_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of ``conceptlens bench make-bundle`` (named like :class:`SyntheticBundleConfig`'s fields)."""
    d = SyntheticBundleConfig(out=Path("bundle"))
    parser.add_argument("--kind", choices=KINDS, default=d.kind, help="concepthash (default) or ceir")
    parser.add_argument("--out", type=Path, required=True, help="the bundle folder to write")
    parser.add_argument("--classes", type=int, default=d.classes, help=f"classes (default {d.classes})")
    parser.add_argument(
        "--images",
        type=int,
        default=d.images,
        help=f"train images: the database / CEIR's set (default {d.images:,})",
    )
    parser.add_argument("--queries", type=int, default=None, help="test images (default 10%% of --images)")
    parser.add_argument(
        "--backbone",
        default=d.backbone,
        help="clip bundle directory or NAME:random (default pretrained/toybirds-clip)",
    )
    parser.add_argument(
        "--data",
        choices=DATA_CHOICES,
        default=d.data,
        help="folder (default): a class-folder tree of PNGs; toybirds: ToyBirds ids (24 classes, part masks)",
    )
    parser.add_argument(
        "--data-out", type=Path, default=None, help="root of the written images (default OUT-data)"
    )
    parser.add_argument("--image-size", type=int, default=d.image_size, help="pixels of the written PNGs")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--overwrite", action="store_true", help="replace a bundle (and images) made before")
    parser.add_argument(
        "--bits", type=int, default=d.bits, help=f"concepthash: code length (default {d.bits})"
    )
    parser.add_argument(
        "--concepts", type=int, default=d.concepts, help=f"concepthash: concept tokens (default {d.concepts})"
    )
    parser.add_argument(
        "--flip", type=float, default=d.flip, help="concepthash: chance a bit differs from its class centre"
    )
    parser.add_argument(
        "--concepts-bank", default=d.concepts_bank, help="ceir: shipped bank name or concept file"
    )
    parser.add_argument(
        "--n-concepts",
        type=int,
        default=d.n_concepts,
        help=f"ceir: the bank's first N concepts (default {d.n_concepts})",
    )
    parser.add_argument("--latent-dim", type=int, default=d.latent_dim, help="ceir: VAE latent size")
