"""The images a bundle names, found by the ids it stores — never by their position in today's data.

A bundle's cached arrays keep one id per row (``db_ids``, ``query_ids``, ``train_ids``). A data folder can
gain, lose or move files after the bundle was made, and then row ``i`` of a freshly read split is another
image than row ``i`` of the bundle. :class:`StoredImages` opens each row's image from its id alone:

- ToyBirds ``toybirds/<split>/seed<seed>/<index>``: the bird is drawn again (the world is deterministic);
- a file ``<path relative to the data root>`` (bundles before relative ids stored the whole path, which
  is read as it is): the file is opened with the safe loader;
- CIFAR ``cifar10/<split>/<index>``: the row of the fixed official array.

A row whose file is gone, unreadable or outside the data root raises :class:`MissingImage` with one sentence
naming it; the caller still has the row's stored code, attention and concepts and shows them.

A file edited in place keeps its id, so bundles made from files also store each file's fingerprint (the
first 8 bytes of its BLAKE2b digest, as an int64, beside the ids: ``db_prints`` beside ``db_ids``, see
:func:`prints_key`). A file whose fingerprint no longer matches is not shown either: its picture would sit
beside another picture's code. 0 means "not recorded" (a file that could not be read when the bundle was
made); drawn and array data sets need none.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path, PurePath
from typing import Any

import numpy as np
from PIL import Image

from core.data import toybirds
from core.data.images import ImageLoadError, load_image
from core.data.spec import DataSpec, open_split

TOYBIRDS_ID = re.compile(r"toybirds/(train|test)/seed(\d+)/(\d+)")
ARRAY_ID = re.compile(r"[a-z0-9]+/(train|test)/(\d+)")
NAME_CHARS = 48  # a display name longer than this keeps its end ("…ass/Some_bird_0042.jpg")


@lru_cache(maxsize=4096)
def _drawn(split: str, index: int, seed: int, image_size: int) -> toybirds.ToyBirdSample:
    return toybirds.render_sample(split, index, seed=seed, image_size=image_size)


class MissingImage(ValueError):
    """A stored id whose image cannot be shown: the file is gone, unreadable, or names no image."""


def display_name(image_id: str, limit: int = NAME_CHARS) -> str:
    """A short name for an id in captions, pickers and file names: ToyBirds ``#000123``; a file its last two
    path parts (class folder and file), keeping the end when that is still too long."""
    image_id = str(image_id)
    bird = TOYBIRDS_ID.fullmatch(image_id)
    if bird:
        return f"#{bird.group(3)}"
    parts = PurePath(image_id).parts
    name = "/".join(parts[-2:]) if len(parts) >= 2 else image_id
    return name if len(name) <= limit else "…" + name[-(limit - 1) :]


def prints_key(ids_key: str) -> str:
    """The array holding the fingerprints of the files an id array names (``db_ids`` -> ``db_prints``)."""
    return ids_key.removesuffix("_ids") + "_prints"


def file_print(data: bytes) -> int:
    """A file's fingerprint: the first 8 bytes of the BLAKE2b digest of its bytes, as a non-zero int64."""
    value = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)
    return value or 1  # 0 stands for "not recorded"


def split_prints(split: Any) -> np.ndarray | None:
    """(N,) int64 fingerprints of a split's files, row by row (0 for one that cannot be read); None for a
    split that is drawn or read from fixed arrays (ToyBirds, CIFAR): their ids alone say what an image is."""
    paths = split.file_paths() if hasattr(split, "file_paths") else None
    if not paths:
        return None
    prints = np.zeros(len(paths), dtype=np.int64)
    for row, path in enumerate(paths):
        with contextlib.suppress(OSError):
            prints[row] = file_print(Path(path).read_bytes())
    return prints


class StoredImages:
    """The images behind one of a bundle's id arrays, opened by id.

    ``spec`` is the bundle's data spec, ``split`` the split the ids come from (``train`` for the database and
    CEIR's training images, ``test`` for queries), ``ids`` the stored ids, one per row."""

    def __init__(self, spec: DataSpec, split: str, ids: Sequence[Any], prints: Any = None) -> None:
        """``prints``: the files' fingerprints the bundle stores (:func:`split_prints`), or None."""
        self.spec, self.split = spec, split
        self.ids = [str(i) for i in ids]
        self.prints = None if prints is None else np.asarray(prints, dtype=np.int64)
        if self.prints is not None and self.prints.shape != (len(self.ids),):
            raise ValueError(f"{len(self.ids)} image ids come with {self.prints.shape} fingerprints.")
        self._arrays: Any = None  # the opened CIFAR split, for array ids

    def __len__(self) -> int:
        return len(self.ids)

    def name(self, row: int) -> str:
        return display_name(self.ids[int(row)])

    def image(self, row: int) -> Image.Image:
        """Row ``row``'s image as RGB; :class:`MissingImage` (one sentence) when it cannot be found."""
        image_id = self.ids[int(row)]
        if self.spec.kind == "toybirds":
            return self.sample(row).image
        if self.spec.kind in ("cifar10", "cifar100"):
            return self._array_image(image_id)
        path = self.path(row)
        if not path.is_file():
            raise MissingImage(
                f"Image '{image_id}' is no longer in the data folder {self.spec.root}: the folder changed or "
                "moved since the bundle was made (its stored code, attention and concepts are still shown)."
            )
        source: Path | bytes = path
        if self.prints is not None and self.prints[int(row)] != 0:
            try:
                source = path.read_bytes()  # read once: fingerprinted, then decoded
            except OSError as exc:
                raise MissingImage(f"Image '{image_id}' can no longer be read: {exc}") from exc
            if file_print(source) != self.prints[int(row)]:
                raise MissingImage(
                    f"Image '{image_id}' changed since the bundle was made (the file is not the one it "
                    "encoded), so it is not shown beside the stored code, attention and concepts."
                )
        try:
            return load_image(source, name=str(path))
        except ImageLoadError as exc:
            raise MissingImage(f"Image '{image_id}' can no longer be read: {exc}") from exc

    def sample(self, row: int) -> toybirds.ToyBirdSample:
        """The ToyBirds sample (image, masks, part values) row ``row`` names."""
        image_id = self.ids[int(row)]
        match = TOYBIRDS_ID.fullmatch(image_id)
        if self.spec.kind != "toybirds" or match is None:
            raise MissingImage(f"'{image_id}' is not a ToyBirds image id (toybirds/<split>/seed<n>/<index>).")
        split, seed, index = match.group(1), int(match.group(2)), int(match.group(3))
        self.spec.check_world()
        return _drawn(split, index, seed, self.spec.image_size)

    def toybirds_index(self, row: int) -> int:
        """The ToyBirds sample index row ``row`` names (what the renderer and its counterfactuals take)."""
        match = TOYBIRDS_ID.fullmatch(self.ids[int(row)])
        if match is None:
            raise MissingImage(f"'{self.ids[int(row)]}' is not a ToyBirds image id.")
        return int(match.group(3))

    def path(self, row: int) -> Path:
        """The file row ``row`` names, inside the data root; :class:`MissingImage` for an id that would leave
        it (``..``, or a whole path elsewhere), which no bundle ConceptLens writes holds."""
        image_id = self.ids[int(row)]
        root = PurePath(self.spec.root or ".")
        stored = PurePath(image_id)
        if ".." in stored.parts:
            raise MissingImage(f"Image id '{image_id}' leaves the data folder ('..'); it is not opened.")
        whole = stored.is_absolute() or stored.parts[: len(root.parts)] == root.parts
        candidate = stored if whole else root / stored
        if candidate.parts[: len(root.parts)] != root.parts:
            raise MissingImage(
                f"Image id '{image_id}' names a file outside the data folder {self.spec.root}; "
                "it is not opened."
            )
        return Path(candidate)

    def _array_image(self, image_id: str) -> Image.Image:
        match = ARRAY_ID.fullmatch(image_id)
        if match is None or match.group(1) != self.split:
            raise MissingImage(f"'{image_id}' is not a {self.spec.kind} {self.split} image id.")
        if self._arrays is None:
            self._arrays = open_split(self.spec, self.split)
        index = int(match.group(2))
        if index >= len(self._arrays):
            raise MissingImage(f"'{image_id}' is beyond the {len(self._arrays)} images of {self.spec.kind}.")
        return self._arrays.image(index)
