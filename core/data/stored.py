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
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path, PurePath
from typing import Any

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


class StoredImages:
    """The images behind one of a bundle's id arrays, opened by id.

    ``spec`` is the bundle's data spec, ``split`` the split the ids come from (``train`` for the database and
    CEIR's training images, ``test`` for queries), ``ids`` the stored ids, one per row."""

    def __init__(self, spec: DataSpec, split: str, ids: Sequence[Any]) -> None:
        self.spec, self.split = spec, split
        self.ids = [str(i) for i in ids]
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
        try:
            return load_image(path)
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
