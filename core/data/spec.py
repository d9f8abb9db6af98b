"""Data specifications: which images a model trains and is evaluated on.

``--data`` on the command line is ``toybirds`` or ``KIND:ROOT`` with KIND one of ``cub200``,
``folder`` (class-per-folder) or ``cifar10``/``cifar100``. The resolved spec is stored in every
bundle, so evaluation can rebuild exactly the same splits (or fresh ToyBirds samples with
another seed).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from pathlib import Path, PurePath
from typing import Any, Protocol

import numpy as np
from PIL import Image

from core.data import toybirds

DATA_KINDS = ("toybirds", "cub200", "folder", "cifar10", "cifar100")


class ImageSplit(Protocol):
    """What every split offers: labels, class names, images by index, stable ids."""

    name: str
    split: str
    classes: list[str]
    labels: np.ndarray

    def __len__(self) -> int: ...
    def image(self, i: int) -> Image.Image: ...
    def image_id(self, i: int) -> str: ...


@dataclass(frozen=True)
class DataSpec:
    """A data set and, for ToyBirds, how many images per species and which seed."""

    kind: str = "toybirds"
    root: str | None = None
    image_size: int = 64
    train_per_class: int = 40
    test_per_class: int = 10
    seed: int = 0
    download: bool = False
    world: int = toybirds.WORLD_VERSION  # the ToyBirds world version the spec was written under

    def __post_init__(self) -> None:
        if self.kind not in DATA_KINDS:
            raise ValueError(f"Unknown data set '{self.kind}'; use one of: {', '.join(DATA_KINDS)}.")
        if self.kind != "toybirds" and not self.root:
            raise ValueError(
                f"Data set '{self.kind}' needs a root directory: --data {self.kind}:/path/to/data."
            )
        if self.kind == "toybirds" and (self.train_per_class < 1 or self.test_per_class < 1):
            raise ValueError("ToyBirds needs at least one train and one test image per species.")
        if self.image_size < 16:
            raise ValueError(f"Image size {self.image_size} is too small; use at least 16 pixels.")

    @classmethod
    def parse(cls, text: str, **overrides: Any) -> DataSpec:
        """``toybirds`` or ``KIND:ROOT``; keyword overrides set the other fields."""
        kind, _, root = text.strip().partition(":")
        return cls(
            kind=kind.lower(), root=root or None, **{k: v for k, v in overrides.items() if v is not None}
        )

    @property
    def has_parts(self) -> bool:
        return self.kind == "toybirds"

    def with_seed(self, seed: int) -> DataSpec:
        if self.kind != "toybirds":
            raise ValueError("--seed regenerates ToyBirds samples; it has no meaning for a fixed data set.")
        return replace(self, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataSpec:
        """Rebuild a stored spec; one stored before world versions were recorded is ToyBirds v1."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known.setdefault("world", 1)
        return cls(**known)

    def check_world(self) -> None:
        """Refuse a ToyBirds spec from another world version: its images can no longer be drawn."""
        if self.kind == "toybirds" and self.world != toybirds.WORLD_VERSION:
            raise ValueError(
                f"This model was trained on ToyBirds world v{self.world}, but this ConceptLens draws "
                f"world v{toybirds.WORLD_VERSION}; retrain it (see pretrained/README.md) to evaluate it."
            )


class ToyBirdsSplit:
    """A ToyBirds split, rendered on demand: ``per_class`` images of every species."""

    name = "toybirds"

    def __init__(self, split: str, per_class: int, seed: int, image_size: int) -> None:
        self.split, self.seed, self.image_size = split, seed, image_size
        self.classes = [s.name for s in toybirds.SPECIES]
        count = per_class * len(self.classes)
        self.labels = np.array([toybirds.species_of_index(i) for i in range(count)], dtype=np.int64)
        self._sample = lru_cache(maxsize=4096)(self._render)

    def _render(self, i: int) -> toybirds.ToyBirdSample:
        return toybirds.render_sample(self.split, i, seed=self.seed, image_size=self.image_size)

    def __len__(self) -> int:
        return len(self.labels)

    def sample(self, i: int) -> toybirds.ToyBirdSample:
        return self._sample(int(i))

    def image(self, i: int) -> Image.Image:
        return self.sample(i).image

    def image_id(self, i: int) -> str:
        return f"toybirds/{self.split}/seed{self.seed}/{int(i):06d}"

    def caption(self, i: int) -> str:
        return self.sample(i).caption

    def part_labels(self, part: str) -> list[str]:
        """The colour of ``part`` in every image.

        For a species part (head, wing, body) this is the species' colour, known without rendering;
        for the nuisance tail it is drawn per image, so every sample is rendered (and cached).
        """
        if part in toybirds.SPECIES_PARTS:
            return [toybirds.SPECIES[label].part_label(part) for label in self.labels]
        if part in toybirds.PARTS:
            return [self.sample(i).traits[part]["colour"] for i in range(len(self))]
        raise ValueError(f"Unknown part {part!r}; expected one of {', '.join(toybirds.PARTS)}.")


class FileSplit:
    """Adapter giving the readers' ``LabeledImages`` the ``ImageSplit`` interface."""

    def __init__(self, images: Any, root: str | None = None) -> None:
        self._images, self._root = images, root
        self.name, self.split = images.name, images.split
        self.classes, self.labels = list(images.classes), np.asarray(images.labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Image.Image:
        return self._images.image(int(i))

    def file_paths(self) -> list[str] | None:
        """Each row's file, or None for in-memory data (CIFAR)."""
        return [str(p) for p in self._images.paths] if self._images.paths else None

    def image_id(self, i: int) -> str:
        """A file's path relative to the data root (``core.data.stored`` opens it by that id); for in-memory
        data (CIFAR) the name, split and row of the fixed official array."""
        if self._images.paths:
            return file_image_id(self._images.paths[int(i)], self._root)
        return f"{self.name}/{self.split}/{int(i):06d}"


def file_image_id(path: str | Path, root: str | Path | None) -> str:
    """The id stored for an image file: its path relative to the data root (POSIX separators), so a bundle
    names its images the same way on every machine and wherever the data folder is; the whole path when the
    file lies outside the root."""
    path = PurePath(path)
    if root is not None:
        try:
            return path.relative_to(PurePath(root)).as_posix()
        except ValueError:
            pass
    return path.as_posix() if not path.is_absolute() else str(path)


def open_split(spec: DataSpec, split: str) -> ImageSplit:
    """The ``train`` (retrieval database) or ``test`` (queries) split of a data spec."""
    if split not in ("train", "test"):
        raise ValueError(f"Split must be 'train' or 'test', not {split!r}.")
    if spec.kind == "toybirds":
        spec.check_world()
        per_class = spec.train_per_class if split == "train" else spec.test_per_class
        return ToyBirdsSplit(split, per_class, spec.seed, spec.image_size)
    from core.data import readers

    if spec.kind == "cub200":
        return FileSplit(readers.read_cub200(spec.root, split), spec.root)
    if spec.kind == "folder":
        images = readers.read_image_folder(spec.root, split, seed=spec.seed)
        if len(images.classes) < 2:
            raise ValueError(
                f"Image folder {spec.root} has one class ({images.classes[0]}); training and evaluation need "
                "at least two class sub-folders."
            )
        return FileSplit(images, spec.root)
    return FileSplit(readers.read_cifar(spec.root, spec.kind, split, download=spec.download))
