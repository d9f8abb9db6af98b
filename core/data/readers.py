"""Readers for real labelled image data sets: CUB-200-2011, a class-per-folder tree, and CIFAR-10/100.

Each reader returns a :class:`LabeledImages`: a light, torch-free description of one split (file paths or an
in-memory array, integer labels, human-readable class names). Training code wraps it in whatever loader it
likes; the dashboard can show ``image(i)`` directly. Readers validate the layout on disk and say exactly what
is missing, because a half-read data set gives silently wrong metrics.
"""

from __future__ import annotations

import math
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from core.data.images import list_image_files, load_image

SPLITS = ("train", "test")

CUB_METADATA_FILES = ("images.txt", "train_test_split.txt", "classes.txt", "image_class_labels.txt")
CUB_FOLDER_NAME = "CUB_200_2011"

CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}


@dataclass
class LabeledImages:
    """One labelled split of an image data set.

    ``paths[i]`` (or ``arrays[i]`` for in-memory data such as CIFAR, where ``paths`` is empty) is image ``i``;
    ``labels[i]`` indexes ``classes``.
    """

    paths: list[Path]
    labels: np.ndarray
    classes: list[str]
    name: str
    split: str
    arrays: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        n_items = len(self.paths) if self.arrays is None else len(self.arrays)
        if n_items != len(self.labels):
            raise ValueError(f"{self.name}/{self.split} has {n_items} images but {len(self.labels)} labels.")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise ValueError(
                f"{self.name}/{self.split} has labels outside 0..{len(self.classes) - 1} "
                f"for its {len(self.classes)} classes."
            )

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Image.Image:
        """Image ``i`` as RGB: from the array for in-memory data, otherwise through :func:`load_image`."""
        if self.arrays is not None:
            return Image.fromarray(np.ascontiguousarray(self.arrays[i])).convert("RGB")
        return load_image(self.paths[i])


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; expected one of {', '.join(SPLITS)}.")


# --------------------------------------------------------------------------------------------------- CUB


def read_cub200(root: str | os.PathLike, split: str) -> LabeledImages:
    """Read one split of CUB-200-2011 from its official metadata files.

    ``root`` is the ``CUB_200_2011`` directory itself or its parent. Images are ordered by image id; labels
    are 0-based in class-id order; class names lose their number prefix and underscores.
    """
    _check_split(split)
    base = _find_cub_root(Path(root))
    images = _read_id_table(base / "images.txt")
    is_train = _read_id_table(base / "train_test_split.txt")
    class_table = _read_id_table(base / "classes.txt")
    image_class = _read_id_table(base / "image_class_labels.txt")

    _check_same_ids(base, images, is_train, "train_test_split.txt")
    _check_same_ids(base, images, image_class, "image_class_labels.txt")
    class_ids = sorted(class_table)
    label_of_class = {class_id: index for index, class_id in enumerate(class_ids)}
    classes = [cub_class_name(class_table[class_id]) for class_id in class_ids]

    wanted = "1" if split == "train" else "0"
    paths: list[Path] = []
    labels: list[int] = []
    for image_id in sorted(images):
        flag = is_train[image_id]
        if flag not in ("0", "1"):
            raise ValueError(
                f"{base / 'train_test_split.txt'}: image {image_id} has split flag {flag!r}, not 0 or 1."
            )
        if flag != wanted:
            continue
        class_id = _parse_int(image_class[image_id], base / "image_class_labels.txt")
        if class_id not in label_of_class:
            raise ValueError(
                f"{base / 'image_class_labels.txt'}: image {image_id} has class {class_id}, "
                f"which is not listed in classes.txt."
            )
        paths.append(_cub_image_path(base, images[image_id]))
        labels.append(label_of_class[class_id])
    _check_files_exist(paths, base)
    if not paths:
        raise ValueError(f"CUB-200 at {base} has no images in the {split} split.")
    return LabeledImages(paths=paths, labels=np.asarray(labels), classes=classes, name="cub200", split=split)


def cub_class_name(raw: str) -> str:
    """Turn a CUB class folder name into words: "001.Black_footed_Albatross" -> "Black footed Albatross"."""
    return re.sub(r"^\d+\.", "", raw.strip()).replace("_", " ").strip()


def _find_cub_root(root: Path) -> Path:
    for candidate in (root, root / CUB_FOLDER_NAME):
        if (candidate / "images.txt").is_file():
            base = candidate
            break
    else:
        if not root.is_dir():
            raise ValueError(f"CUB-200 folder {root} does not exist.")
        base = root
    for filename in CUB_METADATA_FILES:
        if not (base / filename).is_file():
            raise ValueError(
                f"CUB-200 folder {base} has no {filename}; the folder must contain "
                f"{', '.join(CUB_METADATA_FILES)} and images/ (or hold a {CUB_FOLDER_NAME}/ folder "
                f"that does)."
            )
    return base


def _read_id_table(path: Path) -> dict[int, str]:
    """Parse "<integer id> <value>" lines; blank lines are skipped, anything else malformed is an error."""
    table: dict[int, str] = {}
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            parts = line.strip().split(maxsplit=1)
            if not parts:
                continue
            if len(parts) != 2 or not parts[0].isdigit():
                raise ValueError(
                    f"{path}, line {line_number}: expected '<id> <value>', got {line.strip()!r}."
                )
            image_id = int(parts[0])
            if image_id in table:
                raise ValueError(f"{path}, line {line_number}: id {image_id} appears twice.")
            table[image_id] = parts[1]
    if not table:
        raise ValueError(f"{path} is empty.")
    return table


def _parse_int(value: str, path: Path) -> int:
    if not value.isdigit():
        raise ValueError(f"{path}: expected an integer class id, got {value!r}.")
    return int(value)


def _check_same_ids(base: Path, images: dict[int, str], other: dict[int, str], other_name: str) -> None:
    missing = sorted(set(images) - set(other))
    extra = sorted(set(other) - set(images))
    if missing or extra:
        if missing:
            detail = f"image ids {missing[:5]} have no entry"
        else:
            detail = f"ids {extra[:5]} are not in images.txt"
        raise ValueError(
            f"CUB-200 metadata in {base} is inconsistent: in {other_name}, {detail} "
            f"({len(missing)} missing, {len(extra)} unknown)."
        )


def _cub_image_path(base: Path, relpath: str) -> Path:
    relative = Path(relpath)
    if relative.is_absolute() or ".." in relative.parts:
        raise ValueError(f"{base / 'images.txt'} lists {relpath!r}, which points outside the images/ folder.")
    return base / "images" / relative


def _check_files_exist(paths: list[Path], base: Path) -> None:
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise ValueError(
            f"CUB-200 at {base}: {len(missing)} image file(s) listed in images.txt are missing, "
            f"e.g. {missing[0]}."
        )


# ------------------------------------------------------------------------------------------ image folder


def read_image_folder(
    root: str | os.PathLike, split: str, test_fraction: float = 0.2, seed: int = 0
) -> LabeledImages:
    """Read a class-per-folder image tree.

    If ``root`` holds ``train/`` and ``test/``, each with one sub-folder per class, those are the splits
    (classes are the union of both, so labels agree between splits). Otherwise ``root/<class>/...`` is split
    per class: a ``test_fraction`` share of each class (at least one image when the class has two or more)
    goes to test. The split depends only on the sorted file list, ``seed`` and ``test_fraction`` — the same on
    every machine, and adding a class does not reshuffle the others.
    """
    _check_split(split)
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be between 0 and 1 (exclusive), got {test_fraction}.")
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"Image folder {root} does not exist or is not a folder.")
    if (root / "train").is_dir() and (root / "test").is_dir():
        return _read_presplit_folder(root, split)
    return _read_and_split_folder(root, split, test_fraction, seed)


def _class_folders(folder: Path) -> list[Path]:
    subfolders = (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    return sorted(subfolders, key=lambda p: p.name)


def _read_presplit_folder(root: Path, split: str) -> LabeledImages:
    names = sorted({p.name for sub in SPLITS for p in _class_folders(root / sub)})
    if not names:
        raise ValueError(f"Image folder {root}: train/ and test/ contain no class sub-folders.")
    paths: list[Path] = []
    labels: list[int] = []
    for label, class_name in enumerate(names):
        class_dir = root / split / class_name
        files = list_image_files([class_dir]) if class_dir.is_dir() else []
        paths.extend(files)
        labels.extend([label] * len(files))
    if not paths:
        raise ValueError(f"Image folder {root / split} contains no images in its class sub-folders.")
    return LabeledImages(paths=paths, labels=np.asarray(labels), classes=names, name="folder", split=split)


def _read_and_split_folder(root: Path, split: str, test_fraction: float, seed: int) -> LabeledImages:
    class_dirs = _class_folders(root)
    if not class_dirs:
        raise ValueError(
            f"Image folder {root} has no class sub-folders; expected {root}/<class name>/<images> "
            f"or train/ and test/ folders that hold them."
        )
    loose = list_image_files([root], recursive=False)
    if loose:
        raise ValueError(
            f"Image folder {root} has images outside any class sub-folder (e.g. {loose[0].name}); "
            f"move each image into the folder named after its class."
        )
    paths: list[Path] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        files = list_image_files([class_dir])
        if not files:
            raise ValueError(f"Class folder {class_dir} contains no images.")
        test_mask = _stratum_test_mask(len(files), test_fraction, seed, class_dir.name)
        chosen = [f for f, is_test in zip(files, test_mask, strict=True) if is_test == (split == "test")]
        paths.extend(chosen)
        labels.extend([label] * len(chosen))
    classes = [d.name for d in class_dirs]
    return LabeledImages(paths=paths, labels=np.asarray(labels), classes=classes, name="folder", split=split)


def _stratum_test_mask(n_files: int, test_fraction: float, seed: int, class_name: str) -> np.ndarray:
    """Which of one class's (sorted) files are test images; seeded by (seed, class name) only."""
    n_test = math.floor(test_fraction * n_files + 0.5)
    n_test = min(max(n_test, 1), n_files - 1) if n_files >= 2 else 0
    rng = np.random.default_rng([seed, zlib.crc32(class_name.encode("utf-8"))])
    mask = np.zeros(n_files, dtype=bool)
    mask[rng.permutation(n_files)[:n_test]] = True
    return mask


# ------------------------------------------------------------------------------------------------ CIFAR


def read_cifar(
    root: str | os.PathLike, name: str = "cifar10", split: str = "train", download: bool = False
) -> LabeledImages:
    """Read CIFAR-10 or CIFAR-100 through torchvision into memory (uint8 array of shape (N, 32, 32, 3)).

    ``root`` is the folder that holds (or will hold) ``cifar-10-batches-py`` / ``cifar-100-python``; the
    batches folder itself is accepted too. Nothing is downloaded unless ``download=True``. torchvision
    checks every file's MD5 against the official release before unpickling it, so only the genuine data set
    files are ever unpickled.
    """
    _check_split(split)
    if name not in CIFAR_FOLDERS:
        raise ValueError(f"Unknown CIFAR data set {name!r}; expected one of {', '.join(CIFAR_FOLDERS)}.")
    root = Path(root)
    if root.name == CIFAR_FOLDERS[name]:
        root = root.parent
    dataset = _open_torchvision_cifar(root, name, split, download)
    arrays = np.ascontiguousarray(np.asarray(dataset.data, dtype=np.uint8))
    classes = [str(c).replace("_", " ") for c in dataset.classes]
    return LabeledImages(
        paths=[], labels=np.asarray(dataset.targets), classes=classes, name=name, split=split, arrays=arrays
    )


def _open_torchvision_cifar(root: Path, name: str, split: str, download: bool) -> object:
    try:
        from torchvision.datasets import CIFAR10, CIFAR100
    except ImportError as error:
        message = "Reading CIFAR needs torchvision; install it with `pip install torchvision`."
        raise ImportError(message) from error
    dataset_class = CIFAR10 if name == "cifar10" else CIFAR100
    if download:
        root.mkdir(parents=True, exist_ok=True)
    try:
        return dataset_class(str(root), train=split == "train", download=download)
    except RuntimeError as error:
        raise ValueError(
            f"{name} was not found (or its files are incomplete or corrupted) in "
            f"{root / CIFAR_FOLDERS[name]}; pass download=True (--download on the command line) to fetch it."
        ) from error
    except OSError as error:
        raise ValueError(f"Could not download or read {name} into {root}: {error}.") from error
