"""Shared files get the modes a plain open / mkdir gives under the umask (issue 26: safetensors was 0600)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from core.atomic import current_umask, give_normal_modes
from core.bundle import save_bundle, update_bundle_arrays
from core.data.toybirds import render_to_disk


@pytest.fixture(params=[0o022, 0o027], ids=["umask022", "umask027"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    old = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(old)


def _modes(root: Path) -> dict[str, int]:
    """Permission bits of ``root`` and everything under it, by path relative to ``root``."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for entry in root.rglob("*"):
        found[str(entry.relative_to(root))] = stat.S_IMODE(entry.stat().st_mode)
    return found


def _expected(root: Path, mask: int) -> dict[str, int]:
    return {name: (0o777 if (root / name).is_dir() else 0o666) & ~mask for name in _modes(root)}


def test_current_umask_reads_without_changing_it(umask: int) -> None:
    assert current_umask() == umask
    assert current_umask() == umask


def test_bundle_files_are_as_readable_as_the_config(tmp_path: Path, umask: int) -> None:
    weights = {"head.weight": torch.ones(3, 4)}
    arrays = {"codes": np.zeros((5, 2), dtype=np.uint8), "ids": np.asarray(["a", "b"], dtype=str)}
    path = save_bundle(
        tmp_path / "b", kind="concepthash", config={"hyper": {}}, weights=weights, arrays=arrays
    )
    names = {p.name for p in path.iterdir()}
    assert {"config.json", "weights.safetensors", "arrays.safetensors", "arrays.json"} <= names
    assert _modes(path) == _expected(path, umask)
    assert _modes(path)["weights.safetensors"] == 0o666 & ~umask


def test_updating_arrays_repairs_an_old_bundle_written_0600(tmp_path: Path, umask: int) -> None:
    path = save_bundle(tmp_path / "b", kind="ceir", config={}, weights={"w": torch.zeros(2)})
    (path / "weights.safetensors").chmod(0o600)  # as written before the fix
    update_bundle_arrays(path, {"latents": np.ones((4, 2), dtype=np.float32)})
    assert _modes(path) == _expected(path, umask)


def test_rendered_toybirds_folder_is_shareable(tmp_path: Path, umask: int) -> None:
    out = render_to_disk(tmp_path / "birds", "train", 2, image_size=32)
    assert _modes(out) == _expected(out, umask)


def test_give_normal_modes_leaves_symlink_targets_alone(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("x")
    outside.chmod(0o600)
    folder = tmp_path / "folder"
    folder.mkdir(mode=0o700)
    (folder / "link").symlink_to(outside)
    give_normal_modes(folder)
    assert stat.S_IMODE(outside.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o777 & ~current_umask()
