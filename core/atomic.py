"""Atomic writes, written once: a file through a temporary sibling and a rename; a folder swapped in.

Readers see the old file or folder or the new one, never half of one. Every module that writes something a
crash must not leave half-written (bundles, checkpoints, rendered ToyBirds folders, concept banks, encoded
shards, map caches) goes through here.

Files and folders written here get the mode a plain ``open()`` or ``mkdir()`` gives under the user's umask
(``0o666 & ~umask`` and ``0o777 & ~umask``), whatever the library that wrote them chose: safetensors writes
its files 0600 and ``tempfile.mkdtemp`` makes folders 0700, which would leave a shared bundle or data folder
unreadable to colleagues.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """This process's umask, read without changing it where the system allows (Linux's /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # elsewhere the only way to read it is to set it and put it back
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def normal_file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: ``0o666`` less the umask."""
    return 0o666 & ~current_umask()


def normal_folder_mode() -> int:
    """The mode ``mkdir`` gives a new folder: ``0o777`` less the umask."""
    return 0o777 & ~current_umask()


def give_normal_modes(folder: Path) -> None:
    """Give ``folder``, every folder and every file under it the mode a plain mkdir / open would give.

    Symbolic links are left alone (their target is not ours to change).
    """
    folder = Path(folder)
    file_mode, folder_mode = normal_file_mode(), normal_folder_mode()
    os.chmod(folder, folder_mode)
    for parent, folders, files in os.walk(folder):
        for name in folders:
            entry = Path(parent, name)
            if not entry.is_symlink():
                os.chmod(entry, folder_mode)
        for name in files:
            entry = Path(parent, name)
            if not entry.is_symlink():
                os.chmod(entry, file_mode)


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
