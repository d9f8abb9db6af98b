"""Tests of the ToyBirds world: determinism, the species table, masks, captions and the disk writer."""

from __future__ import annotations

import csv
import hashlib
import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from core.data import toybirds
from core.data.toybirds import (
    ATTRIBUTE_VALUES,
    COLOURS,
    FAMILIES,
    MAIN_ATTRIBUTES,
    METADATA_COLUMNS,
    PART_ATTRIBUTES,
    PARTS,
    SPECIES,
    render_batch,
    render_sample,
    render_to_disk,
    species_of_index,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def samples() -> list[toybirds.ToyBirdSample]:
    """48 samples (two per species) shared by the mask tests."""
    return render_batch("test", range(48), seed=5)


def _pixels(sample: toybirds.ToyBirdSample) -> np.ndarray:
    return np.asarray(sample.image, dtype=np.float64)


# ----------------------------------------------------------------------------- determinism


def test_same_arguments_give_identical_bytes_and_masks() -> None:
    a = render_sample("train", 17, seed=3)
    b = render_sample("train", 17, seed=3)
    assert a.image.mode == "RGB" and a.image.size == (64, 64)
    assert a.image.tobytes() == b.image.tobytes()
    for part in PARTS:
        assert a.masks[part].dtype == bool and a.masks[part].shape == (64, 64)
        np.testing.assert_array_equal(a.masks[part], b.masks[part])
    assert (a.caption, a.species_id, a.split, a.index, a.seed) == (b.caption, b.species_id, "train", 17, 3)


@pytest.mark.parametrize("other", [("train", 1), ("test", 0), ("val", 0), ("val2", 0)])
def test_different_seed_or_split_gives_different_pixels(other: tuple[str, int]) -> None:
    base = _pixels(render_sample("train", 9, seed=0))
    changed = _pixels(render_sample(other[0], 9, seed=other[1]))
    differing = np.any(np.abs(base - changed) > 8, axis=-1).mean()
    assert differing > 0.3


def test_pixels_do_not_depend_on_the_python_hash_seed() -> None:
    code = (
        "import hashlib; from core.data.toybirds import render_sample; "
        "print(hashlib.sha256(render_sample('holdout', 4, seed=2).image.tobytes()).hexdigest())"
    )
    digests = set()
    for hash_seed in ("1", "2"):
        env = {"PYTHONHASHSEED": hash_seed, "PATH": "/usr/bin:/bin"}
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True,
                             text=True, check=True)
        digests.add(out.stdout.strip())
    here = hashlib.sha256(render_sample("holdout", 4, seed=2).image.tobytes()).hexdigest()
    assert digests == {here}


def test_render_batch_matches_single_renders() -> None:
    batch = render_batch("train", [5, 2, 30], seed=1)
    assert [s.index for s in batch] == [5, 2, 30]
    for sample in batch:
        single = render_sample("train", sample.index, seed=1)
        assert sample.image.tobytes() == single.image.tobytes()


def test_species_of_index_is_balanced_and_used_by_render() -> None:
    n = len(SPECIES)
    assert [species_of_index(i) for i in range(2 * n)] == list(range(n)) * 2
    for index in (0, 7, n + 3, 5 * n - 1):
        sample = render_sample("train", index)
        assert sample.species_id == index % n
        assert sample.species is SPECIES[index % n]
        assert sample.species_name == SPECIES[index % n].name
        assert sample.family == SPECIES[index % n].family
        assert sample.attributes == SPECIES[index % n].attributes


def test_other_image_sizes_keep_the_same_layout() -> None:
    small = render_sample("train", 11, seed=4, image_size=64)
    large = render_sample("train", 11, seed=4, image_size=128)
    assert large.image.size == (128, 128) and large.masks["body"].shape == (128, 128)
    for part in ("head", "body"):
        pooled = large.masks[part].reshape(64, 2, 64, 2).mean(axis=(1, 3)) >= 0.5
        overlap = (pooled & small.masks[part]).sum() / max((pooled | small.masks[part]).sum(), 1)
        assert overlap > 0.7


# ----------------------------------------------------------------------------- species table


def test_species_table_size_ids_and_names() -> None:
    assert len(SPECIES) >= 24
    assert len(FAMILIES) >= 4 and len(set(FAMILIES)) == len(FAMILIES)
    assert [s.id for s in SPECIES] == list(range(len(SPECIES)))
    names = [s.name for s in SPECIES]
    assert len(set(names)) == len(names)
    assert all(s.family in FAMILIES and s.name.endswith(s.family) for s in SPECIES)
    assert SPECIES[0].name == "ebony bar-winged scarlet-crested finch"


def test_attributes_follow_the_declared_schema() -> None:
    assert PARTS == ("head", "wing", "body", "tail")
    for species in SPECIES:
        assert list(species.attributes) == list(PARTS)
        for part in PARTS:
            assert tuple(species.attributes[part]) == PART_ATTRIBUTES[part]
            for name, value in species.attributes[part].items():
                assert value in ATTRIBUTE_VALUES[part][name]
    looks = {tuple(s.part_label(p) for p in PARTS) for s in SPECIES}
    assert len(looks) == len(SPECIES), "two species would be drawn identically"


def test_part_label_format() -> None:
    assert SPECIES[0].part_label("head") == "red|crested"
    assert SPECIES[0].part_label("wing") == "black|striped"
    assert SPECIES[0].part_label("body") == "yellow|round"
    assert SPECIES[0].part_label("tail") == "black|forked"
    with pytest.raises(ValueError, match="beak"):
        SPECIES[0].part_label("beak")


def test_species_within_a_family_differ_in_one_or_two_parts() -> None:
    for family in FAMILIES:
        members = [s for s in SPECIES if s.family == family]
        assert len(members) >= 4
        for a, b in itertools.combinations(members, 2):
            differing = sum(a.part_label(p) != b.part_label(p) for p in PARTS)
            assert differing in (1, 2), (a.name, b.name)


def test_every_part_and_main_attribute_varies_across_the_world() -> None:
    for part in PARTS:
        assert len({s.part_label(part) for s in SPECIES}) >= 2
    for part, name in MAIN_ATTRIBUTES:
        assert len({s.attributes[part][name] for s in SPECIES}) >= 3, (part, name)
    for part in PARTS:  # every attribute of every part takes at least two values
        for name in PART_ATTRIBUTES[part]:
            assert len({s.attributes[part][name] for s in SPECIES}) >= 2


def test_palette_colours_are_far_apart() -> None:
    rgb = np.array(list(COLOURS.values()), dtype=np.float64)
    distances = np.linalg.norm(rgb[:, None] - rgb[None, :], axis=-1)
    np.fill_diagonal(distances, np.inf)
    assert distances.min() > 80.0


# ----------------------------------------------------------------------------- masks


def test_masks_are_disjoint_and_mostly_non_empty(samples: list[toybirds.ToyBirdSample]) -> None:
    non_empty = dict.fromkeys(PARTS, 0)
    for sample in samples:
        stack = np.stack([sample.masks[p] for p in PARTS])
        assert stack.sum(axis=0).max() <= 1
        for part in PARTS:
            non_empty[part] += int(sample.masks[part].any())
    for part in ("head", "wing", "body"):
        assert non_empty[part] >= len(samples) - 2, part
    assert non_empty["tail"] >= len(samples) - 4


def test_parts_are_large_enough_for_an_8x8_patch_grid(samples: list[toybirds.ToyBirdSample]) -> None:
    for part in PARTS:
        mean_fraction = np.mean([s.masks[part].mean() for s in samples])
        assert mean_fraction > 0.015, part  # a 64 px image has 64 patches of 1.56 % each


def _share_in_part_colour(sample: toybirds.ToyBirdSample, part: str, mask: np.ndarray) -> float:
    """Fraction of ``mask`` pixels within RGB distance 60 of the species' colour for ``part``."""
    distance = np.linalg.norm(_pixels(sample) - np.array(sample.species.part_rgb(part)), axis=-1)
    return float((distance[mask] < 60.0).mean())


def test_mask_pixels_carry_the_part_colour(samples: list[toybirds.ToyBirdSample]) -> None:
    for part in PARTS:
        aligned, mirrored, majority = [], [], []
        for sample in samples:
            mask = sample.masks[part]
            if not mask.any():
                continue
            share = _share_in_part_colour(sample, part, mask)
            aligned.append(share)
            majority.append(share > 0.5)
            mirrored.append(_share_in_part_colour(sample, part, mask[:, ::-1]))
        assert np.mean(aligned) > 0.65, part
        assert np.mean(majority) >= 0.9, part
        # The same check on mirrored masks fails, so it would catch masks misaligned under flip.
        assert np.mean(mirrored) < np.mean(aligned) - 0.3, part


def test_masks_form_one_bird_and_clutter_is_not_counted(samples: list[toybirds.ToyBirdSample]) -> None:
    single = 0
    for sample in samples:
        union = np.logical_or.reduce([sample.masks[p] for p in PARTS])
        _, components = ndimage.label(union, structure=np.ones((3, 3)))
        single += components == 1
    # A foreground twig can cut the bird in two; scattered clutter in the masks would add many pieces.
    assert single >= 0.85 * len(samples)


def test_pose_position_and_flip_vary(samples: list[toybirds.ToyBirdSample]) -> None:
    facing_right, body_areas, centres = 0, [], []
    for sample in samples:
        head = np.argwhere(sample.masks["head"]).mean(axis=0)
        body = np.argwhere(sample.masks["body"]).mean(axis=0)
        facing_right += head[1] > body[1]
        body_areas.append(sample.masks["body"].sum())
        centres.append(body)
    assert 0.2 * len(samples) <= facing_right <= 0.8 * len(samples)
    assert max(body_areas) / min(body_areas) > 1.8
    assert np.asarray(centres).std(axis=0).min() > 4.0


# ----------------------------------------------------------------------------- captions


def test_caption_names_species_family_and_every_attribute(samples: list[toybirds.ToyBirdSample]) -> None:
    for sample in samples:
        assert sample.caption.startswith("a photo of ")
        assert sample.species_name in sample.caption and sample.family in sample.caption
        for part in PARTS:
            if sample.masks[part].any():
                assert part in sample.caption
                for value in sample.attributes[part].values():
                    assert value in sample.caption, (part, value, sample.caption)


def test_caption_of_a_known_sample() -> None:
    sample = render_sample("train", 0, seed=0)
    assert all(sample.masks[p].any() for p in PARTS)
    assert sample.caption == (
        "a photo of an ebony bar-winged scarlet-crested finch, a finch with a crested red head, "
        "striped black wings, a round yellow body and a forked black tail"
    )


# ----------------------------------------------------------------------------- disk writer


def test_render_to_disk_writes_images_masks_and_metadata(tmp_path: Path) -> None:
    out = tmp_path / "birds"
    calls: list[tuple[int, int]] = []
    result = render_to_disk(out, "test", 5, seed=2, progress=lambda done, total: calls.append((done, total)))
    assert result == out
    assert calls == [(i, 5) for i in range(1, 6)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["birds"], "temporary directory left behind"
    assert len(list((out / "images").iterdir())) == 5
    assert len(list((out / "masks").iterdir())) == 5 * len(PARTS)
    with open(out / "metadata.csv", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == METADATA_COLUMNS
        rows = list(reader)
    assert [row["index"] for row in rows] == ["0", "1", "2", "3", "4"]
    for row in rows:
        sample = render_sample("test", int(row["index"]), seed=2)
        assert row["file"] == f"images/test_{sample.index:06d}.png"
        assert (row["split"], row["seed"], row["species_id"]) == ("test", "2", str(sample.species_id))
        assert (row["species_name"], row["family"], row["caption"]) == (
            sample.species_name, sample.family, sample.caption)
        assert [row[p] for p in PARTS] == [sample.species.part_label(p) for p in PARTS]
        with Image.open(out / row["file"]) as image:
            assert image.mode == "RGB" and image.tobytes() == sample.image.tobytes()
        for part in PARTS:
            with Image.open(out / "masks" / f"test_{sample.index:06d}_{part}.png") as mask_image:
                assert mask_image.mode == "L"
                mask = np.asarray(mask_image)
            assert set(np.unique(mask)) <= {0, 255}
            np.testing.assert_array_equal(mask == 255, sample.masks[part])


def test_render_to_disk_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    out = tmp_path / "birds"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        render_to_disk(out, "train", 2)
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    render_to_disk(out, "train", 2, overwrite=True)
    assert not (out / "keep.txt").exists()
    assert len(list((out / "images").iterdir())) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["birds"]


def test_render_to_disk_accepts_an_empty_directory_and_rejects_a_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    render_to_disk(empty, "train", 1)
    assert (empty / "images" / "train_000000.png").is_file()
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        render_to_disk(a_file, "train", 1)


def test_render_to_disk_leaves_nothing_when_interrupted(tmp_path: Path) -> None:
    def explode(done: int, total: int) -> None:
        if done == 2:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError, match="stop"):
        render_to_disk(tmp_path / "birds", "train", 4, progress=explode)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("split", ["", "a/b", "has space", None, 3])
def test_bad_split_is_rejected(split: object, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Split"):
        render_sample(split, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Split"):
        render_to_disk(tmp_path / "out", split, 1)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [({"index": -1}, "index"), ({"index": 1.5}, "index"), ({"index": True}, "index"),
     ({"seed": -3}, "seed"), ({"image_size": 8}, "image_size")],
)
def test_bad_numbers_are_rejected(kwargs: dict[str, object], word: str) -> None:
    args: dict[str, object] = {"split": "train", "index": 0, **kwargs}
    with pytest.raises(ValueError, match=word):
        render_sample(**args)  # type: ignore[arg-type]
    if word == "index":
        with pytest.raises(ValueError, match="index"):
            species_of_index(kwargs["index"])  # type: ignore[arg-type]


def test_bad_count_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="count"):
        render_to_disk(tmp_path / "out", "train", -1)
