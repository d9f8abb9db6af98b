"""Atomic writes, written once: a file through a temporary sibling and a rename; a folder swapped in.

Readers see the old file or folder or the new one, never half of one. Every module that writes something a
crash must not leave half-written (bundles, checkpoints, rendered ToyBirds folders, concept banks, encoded
shards, map caches) goes through here.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO


def write_file_atomic(path: Path, write: Callable[[IO[bytes]], None], *, fsync: bool = False) -> None:
    """Call ``write(stream)`` on a temporary file beside ``path``, then rename it to ``path``.

    On any failure the temporary file is removed and ``path`` is left as it was. ``fsync`` flushes the data
    to disk before the rename (for files that must survive a power cut, not only a crash).
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as stream:
            write(stream)
            if fsync:
                stream.flush()
                os.fsync(stream.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def swap_folder_into_place(tmp: Path, target: Path, old: Path) -> None:
    """Rename the finished folder ``tmp`` to ``target``.

    An existing ``target`` is first renamed to ``old`` (a sibling that does not exist yet); if the second
    rename fails the old folder is put back, else it is deleted. Between the two renames ``target`` is
    briefly absent, which is why callers name ``old`` so they can recover it (see core.bundle).
    """
    if not (target.exists() or target.is_symlink()):
        os.replace(tmp, target)
        return
    os.replace(target, old)
    try:
        os.replace(tmp, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
