"""A save killed between its two renames leaves the bundle recoverable: the next load or save restores it.

A save writes the new bundle into a hidden ``.tmp-`` sibling, renames the old bundle to a hidden ``.old-``
sibling, renames the new one into place and deletes the old one. The test kills a real process (``os._exit``,
no clean-up runs) right after the first rename, the worst moment: nothing is left at the bundle's path.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from core.bundle import find_bundles, load_bundle, save_bundle

ROOT = Path(__file__).resolve().parents[1]

KILLED_SAVE = textwrap.dedent(
    """
    import os, sys, torch
    from core import atomic, bundle
    real_replace, calls = os.replace, []
    def replace(source, target):
        real_replace(source, target)
        calls.append(target)
        if len(calls) == 1:  # the old bundle is out of the way, the new one not yet in place
            os._exit(9)
    atomic.os.replace = replace
    bundle.save_bundle(sys.argv[1], kind="clip", config={"run": 2}, weights={"w": torch.full((3,), 2.0)},
                       overwrite=True)
    """
)


def _hidden(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


@pytest.fixture
def killed_save(tmp_path: Path) -> Path:
    """A bundle at tmp_path/b whose overwrite was killed between the renames."""
    path = save_bundle(tmp_path / "b", kind="clip", config={"run": 1}, weights={"w": torch.ones(3)})
    done = subprocess.run([sys.executable, "-c", KILLED_SAVE, str(path)], cwd=ROOT, timeout=60)
    assert done.returncode == 9
    assert not path.exists()
    assert [name[:5] for name in _hidden(tmp_path)] == [".old-", ".tmp-"]
    return path


def test_load_after_a_kill_between_the_renames_restores_the_old_bundle(killed_save: Path) -> None:
    loaded = load_bundle(killed_save)
    assert loaded.config["run"] == 1 and torch.equal(loaded.weights["w"], torch.ones(3))
    assert _hidden(killed_save.parent) == []  # the stale new copy is cleaned up too


def test_save_after_a_kill_between_the_renames_recovers_then_saves(killed_save: Path) -> None:
    with pytest.raises(ValueError, match="already exists"):
        save_bundle(killed_save, kind="clip", config={"run": 3}, weights={"w": torch.zeros(3)})
    assert load_bundle(killed_save).config["run"] == 1
    save_bundle(killed_save, kind="clip", config={"run": 3}, weights={"w": torch.zeros(3)}, overwrite=True)
    assert load_bundle(killed_save).config["run"] == 3
    assert _hidden(killed_save.parent) == []


def test_listing_a_folder_finds_the_restored_bundle(killed_save: Path) -> None:
    assert find_bundles(killed_save.parent) == [killed_save]


def test_a_save_in_progress_in_a_live_process_is_left_alone(tmp_path: Path) -> None:
    """Hidden copies of a writer that is still running (here: this test process) are not touched."""
    path = save_bundle(tmp_path / "b", kind="clip", config={}, weights={"w": torch.ones(3)})
    import os

    busy = tmp_path / f".tmp-b-{os.getpid()}-0123456789ab"
    busy.mkdir()
    load_bundle(path)
    save_bundle(path, kind="clip", config={}, weights={"w": torch.ones(3)}, overwrite=True)
    assert busy.is_dir()
