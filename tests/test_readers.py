"""Tests for core.data.readers on tiny fake CUB-200, class-per-folder and CIFAR directories."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data.images import ImageLoadError
from core.data.readers import (
    LabeledImages,
    cub_class_name,
    read_cifar,
    read_cub200,
    read_image_folder,
)

# ------------------------------------------------------------------------------------------------- CUB

CUB_CLASSES = ["001.Black_footed_Albatross", "002.Laysan_Albatross", "003.Sooty_Albatross"]
# image id -> (class id, is_train); ids deliberately not in file order below
CUB_IMAGES = {1: (1, 1), 2: (1, 0), 3: (2, 1), 4: (2, 1), 5: (3, 0), 6: (3, 1)}


def _png(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (5, 4)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def _make_cub(parent: Path) -> Path:
    base = parent / "CUB_200_2011"
    images_lines, split_lines, label_lines = [], [], []
    for image_id in sorted(CUB_IMAGES, reverse=True):
        class_id, is_train = CUB_IMAGES[image_id]
        relpath = f"{CUB_CLASSES[class_id - 1]}/img_{image_id}.png"
        _png(base / "images" / relpath, (image_id * 10, 0, 0))
        images_lines.append(f"{image_id} {relpath}")
        split_lines.append(f"{image_id} {is_train}")
        label_lines.append(f"{image_id} {class_id}")
    (base / "images.txt").write_text("\n".join(images_lines) + "\n")
    (base / "train_test_split.txt").write_text("\n".join(split_lines) + "\n\n")
    (base / "image_class_labels.txt").write_text("\n".join(label_lines) + "\n")
    (base / "classes.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in enumerate(CUB_CLASSES)))
    return base


def test_cub_train_and_test_splits(tmp_path: Path) -> None:
    base = _make_cub(tmp_path)
    train = read_cub200(base, "train")
    test = read_cub200(base, "test")
    assert (train.name, train.split, test.split) == ("cub200", "train", "test")
    assert train.classes == ["Black footed Albatross", "Laysan Albatross", "Sooty Albatross"]
    assert [p.name for p in train.paths] == ["img_1.png", "img_3.png", "img_4.png", "img_6.png"]
    assert train.labels.dtype == np.int64 and train.labels.tolist() == [0, 1, 1, 2]
    assert [p.name for p in test.paths] == ["img_2.png", "img_5.png"]
    assert test.labels.tolist() == [0, 2]
    assert train.paths[0] == base / "images" / "001.Black_footed_Albatross" / "img_1.png"
    assert len(train) == 4 and train.arrays is None
    image = test.image(1)
    assert (image.mode, image.size, image.getpixel((0, 0))) == ("RGB", (5, 4), (50, 0, 0))


def test_cub_accepts_parent_folder(tmp_path: Path) -> None:
    _make_cub(tmp_path)
    assert [p.name for p in read_cub200(tmp_path, "test").paths] == ["img_2.png", "img_5.png"]


def test_cub_class_names() -> None:
    assert cub_class_name("001.Black_footed_Albatross") == "Black footed Albatross"
    assert cub_class_name("200.Common_Yellowthroat") == "Common Yellowthroat"
    assert cub_class_name("Plain_Name") == "Plain Name"


@pytest.mark.parametrize(
    "missing", ["images.txt", "train_test_split.txt", "classes.txt", "image_class_labels.txt"]
)
def test_cub_missing_metadata_file(tmp_path: Path, missing: str) -> None:
    base = _make_cub(tmp_path)
    (base / missing).unlink()
    with pytest.raises(ValueError, match=f"has no {missing}; the folder must contain images.txt") as info:
        read_cub200(base, "train")
    assert "image_class_labels.txt and images/" in str(info.value)


def test_cub_inconsistent_ids(tmp_path: Path) -> None:
    base = _make_cub(tmp_path)
    lines = (base / "train_test_split.txt").read_text().splitlines()
    (base / "train_test_split.txt").write_text("\n".join(line for line in lines if not line.startswith("4 ")))
    expected = r"inconsistent: in train_test_split.txt, image ids \[4\] have no entry"
    with pytest.raises(ValueError, match=expected):
        read_cub200(base, "train")


def test_cub_unknown_class_duplicate_id_and_bad_lines(tmp_path: Path) -> None:
    base = _make_cub(tmp_path)
    labels_file = base / "image_class_labels.txt"
    original = labels_file.read_text()
    labels_file.write_text(original.replace("6 3", "6 9"))
    with pytest.raises(ValueError, match="image 6 has class 9, which is not listed in classes.txt"):
        read_cub200(base, "train")
    labels_file.write_text(original + "6 3\n")
    with pytest.raises(ValueError, match="line 7: id 6 appears twice"):
        read_cub200(base, "train")
    labels_file.write_text(original.replace("6 3", "six 3"))
    with pytest.raises(ValueError, match="expected '<id> <value>', got 'six 3'"):
        read_cub200(base, "train")


def test_cub_missing_image_file_and_escaping_path(tmp_path: Path) -> None:
    base = _make_cub(tmp_path)
    (base / "images" / "002.Laysan_Albatross" / "img_3.png").unlink()
    with pytest.raises(ValueError, match="1 image file"):
        read_cub200(base, "train")
    assert len(read_cub200(base, "test")) == 2  # the missing file is only in the train split
    images_file = base / "images.txt"
    escaping = images_file.read_text().replace("002.Laysan_Albatross/img_3.png", "../../secret.png")
    images_file.write_text(escaping)
    with pytest.raises(ValueError, match="points outside the images/ folder"):
        read_cub200(base, "train")


def test_cub_bad_split_and_missing_root(tmp_path: Path) -> None:
    base = _make_cub(tmp_path)
    with pytest.raises(ValueError, match="Unknown split 'val'"):
        read_cub200(base, "val")
    with pytest.raises(ValueError, match="does not exist"):
        read_cub200(tmp_path / "nowhere", "train")


# ---------------------------------------------------------------------------------------- image folder


def _make_flat_folder(root: Path, counts: dict[str, int]) -> Path:
    for class_index, (class_name, count) in enumerate(counts.items()):
        for i in range(count):
            _png(root / class_name / f"{i:02d}.png", (class_index * 40, i * 10, 0))
    return root


def test_folder_stratified_split(tmp_path: Path) -> None:
    root = _make_flat_folder(tmp_path / "data", {"wren": 5, "crow": 5, "owl": 1})
    (root / "wren" / "notes.txt").write_text("not an image")
    train = read_image_folder(root, "train", test_fraction=0.4, seed=0)
    test = read_image_folder(root, "test", test_fraction=0.4, seed=0)
    assert train.classes == test.classes == ["crow", "owl", "wren"]
    assert test.labels.tolist() == [0, 0, 2, 2]  # round(0.4 * 5) = 2 per class; the lone owl stays in train
    assert train.labels.tolist() == [0, 0, 0, 1, 2, 2, 2]
    all_files = sorted(p.relative_to(root).as_posix() for p in train.paths + test.paths)
    assert all_files == sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    assert not set(train.paths) & set(test.paths)
    for split in (train, test):
        for path, label in zip(split.paths, split.labels, strict=True):
            assert path.parent.name == split.classes[label]
    # Pinned membership: the split must be identical on every machine and numpy version.
    assert [p.relative_to(root).as_posix() for p in test.paths] == [
        "crow/00.png",
        "crow/03.png",
        "wren/00.png",
        "wren/03.png",
    ]


def test_folder_split_is_deterministic_and_seeded(tmp_path: Path) -> None:
    root = _make_flat_folder(tmp_path / "data", {"a": 10, "b": 10})
    first = read_image_folder(root, "test", seed=3)
    again = read_image_folder(root, "test", seed=3)
    assert first.paths == again.paths and first.labels.tolist() == again.labels.tolist()
    assert first.labels.tolist() == [0, 0, 1, 1]
    others = {tuple(read_image_folder(root, "test", seed=s).paths) for s in range(6)}
    assert len(others) > 1
    # Adding a class does not reshuffle the existing classes.
    _make_flat_folder(root, {"c": 4})
    with_c = read_image_folder(root, "test", seed=3)
    assert [p for p in with_c.paths if p.parent.name != "c"] == first.paths


def test_folder_with_train_and_test_subfolders(tmp_path: Path) -> None:
    root = tmp_path / "presplit"
    _make_flat_folder(root / "train", {"gull": 2, "tern": 3})
    _make_flat_folder(root / "test", {"tern": 1, "auk": 1})
    train = read_image_folder(root, "train")
    test = read_image_folder(root, "test")
    assert train.classes == test.classes == ["auk", "gull", "tern"]
    assert train.labels.tolist() == [1, 1, 2, 2, 2]
    assert test.labels.tolist() == [0, 2]
    assert [p.relative_to(root).as_posix() for p in test.paths] == ["test/auk/00.png", "test/tern/00.png"]
    assert train.image(2).getpixel((0, 0)) == (40, 0, 0)


def test_folder_errors(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="has no class sub-folders"):
        read_image_folder(empty, "train")
    (empty / "sparrow").mkdir()
    (empty / "sparrow" / "list.txt").write_text("x")
    with pytest.raises(ValueError, match="sparrow contains no images"):
        read_image_folder(empty, "train")
    with pytest.raises(ValueError, match="does not exist"):
        read_image_folder(tmp_path / "missing", "train")
    loose = _make_flat_folder(tmp_path / "loose", {"kite": 3})
    _png(loose / "stray.png", (0, 0, 0))
    with pytest.raises(ValueError, match=r"outside any class sub-folder \(e.g. stray.png\)"):
        read_image_folder(loose, "train")
    with pytest.raises(ValueError, match="test_fraction must be between 0 and 1"):
        read_image_folder(loose, "train", test_fraction=1.0)
    presplit = tmp_path / "presplit"
    (presplit / "train" / "x").mkdir(parents=True)
    (presplit / "test" / "x").mkdir(parents=True)
    with pytest.raises(ValueError, match="contains no images in its class sub-folders"):
        read_image_folder(presplit, "test")


def test_folder_image_errors_surface_at_load_time(tmp_path: Path) -> None:
    root = _make_flat_folder(tmp_path / "data", {"heron": 2})
    broken = root / "heron" / "01.png"
    broken.write_text("not a png")
    splits = [read_image_folder(root, split, test_fraction=0.5) for split in ("train", "test")]
    assert [len(split) for split in splits] == [1, 1]
    holder = next(split for split in splits if broken in split.paths)
    with pytest.raises(ImageLoadError, match=r"01.png': it is not a supported image"):
        holder.image(holder.paths.index(broken))


# ----------------------------------------------------------------------------------------------- CIFAR

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _cifar_rows(first_value: int, n: int) -> np.ndarray:
    """n images in CIFAR's row layout (1024 red, 1024 green, 1024 blue values, each plane row-major)."""
    rows = np.zeros((n, 3 * 32 * 32), dtype=np.uint8)
    for i in range(n):
        planes = rows[i].reshape(3, 32, 32)
        planes[0] = first_value + i  # red
        planes[1, 0, 1] = 200  # green at row 0, column 1
        planes[2, 31, 0] = 7  # blue at row 31, column 0
    return rows


def _pickle(path: Path, obj: object) -> None:
    with path.open("wb") as handle:
        pickle.dump(obj, handle)


def _make_cifar10(root: Path) -> Path:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for b in range(1, 6):
        _pickle(folder / f"data_batch_{b}", {"data": _cifar_rows(10 * b, 2), "labels": [b - 1, b + 4]})
    _pickle(folder / "test_batch", {"data": _cifar_rows(100, 3), "labels": [3, 1, 4]})
    _pickle(folder / "batches.meta", {"label_names": CIFAR10_NAMES})
    return folder


@pytest.fixture
def skip_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let torchvision accept our fake files: it otherwise checks each file's MD5 against the real release."""
    cifar_module = pytest.importorskip("torchvision.datasets.cifar")
    monkeypatch.setattr(cifar_module, "check_integrity", lambda *args, **kwargs: True)


def test_cifar10_train_and_test(tmp_path: Path, skip_md5: None) -> None:
    _make_cifar10(tmp_path)
    train = read_cifar(tmp_path, "cifar10", "train")
    assert (train.name, train.split, train.paths) == ("cifar10", "train", [])
    assert train.classes == CIFAR10_NAMES
    assert train.arrays is not None
    assert train.arrays.shape == (10, 32, 32, 3) and train.arrays.dtype == np.uint8
    assert train.labels.dtype == np.int64
    assert train.labels.tolist() == [0, 5, 1, 6, 2, 7, 3, 8, 4, 9]
    assert train.arrays[:, 0, 0, 0].tolist() == [10, 11, 20, 21, 30, 31, 40, 41, 50, 51]
    image = train.image(3)
    assert (image.mode, image.size) == ("RGB", (32, 32))
    assert image.getpixel((0, 0)) == (21, 0, 0)
    assert image.getpixel((1, 0)) == (21, 200, 0)  # PIL (x=column 1, y=row 0)
    assert image.getpixel((0, 31)) == (21, 0, 7)
    test = read_cifar(tmp_path / "cifar-10-batches-py", "cifar10", "test")  # the batches folder itself
    assert len(test) == 3 and test.labels.tolist() == [3, 1, 4]
    assert test.image(2).getpixel((5, 5)) == (102, 0, 0)


def test_cifar100_fine_labels_and_readable_names(tmp_path: Path, skip_md5: None) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    names = [f"class_{i}" for i in range(99)] + ["aquarium_fish"]
    _pickle(folder / "train", {"data": _cifar_rows(1, 2), "fine_labels": [99, 0], "coarse_labels": [1, 0]})
    _pickle(folder / "test", {"data": _cifar_rows(5, 1), "fine_labels": [42], "coarse_labels": [3]})
    _pickle(folder / "meta", {"fine_label_names": names, "coarse_label_names": ["x"] * 20})
    train = read_cifar(tmp_path, "cifar100", "train")
    assert len(train.classes) == 100 and train.classes[99] == "aquarium fish"
    assert train.labels.tolist() == [99, 0]
    assert read_cifar(tmp_path, "cifar100", "test").labels.tolist() == [42]


def test_cifar_missing_or_unverified_files_say_download(tmp_path: Path) -> None:
    pytest.importorskip("torchvision")
    with pytest.raises(ValueError, match=r"pass download=True \(--download on the command line\)"):
        read_cifar(tmp_path, "cifar10", "train")
    _make_cifar10(tmp_path)  # files exist but are not the genuine release: torchvision's MD5 check refuses
    with pytest.raises(ValueError, match="cifar10 was not found .*/cifar-10-batches-py; pass download=True"):
        read_cifar(tmp_path, "cifar10", "test")


def test_cifar_argument_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Unknown CIFAR data set 'cifar20'"):
        read_cifar(tmp_path, "cifar20")
    with pytest.raises(ValueError, match="Unknown split 'validation'"):
        read_cifar(tmp_path, "cifar10", "validation")


# ------------------------------------------------------------------------------------------ LabeledImages


def test_labeled_images_validates_lengths_and_labels() -> None:
    with pytest.raises(ValueError, match="has 1 images but 2 labels"):
        LabeledImages(paths=[Path("a.png")], labels=np.array([0, 0]), classes=["a"], name="x", split="train")
    with pytest.raises(ValueError, match="labels outside 0..1"):
        LabeledImages(paths=[Path("a.png")], labels=[2], classes=["a", "b"], name="x", split="train")
    arrays = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    arrays[1, 4, 5] = (1, 2, 3)
    data = LabeledImages(paths=[], labels=[0, 1], classes=["a", "b"], name="mem", split="test", arrays=arrays)
    assert data.labels.dtype == np.int64 and len(data) == 2
    assert data.image(1).getpixel((5, 4)) == (1, 2, 3)
