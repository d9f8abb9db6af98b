"""Code stores: the encodings of an image collection too big for one array, kept as shards on disk.

``conceptlens encode`` (:mod:`core.encode`) writes a store; this module reads and searches it.

A store is a directory::

    manifest.json          what the store is and which shards are complete
    files.json             the planned image files (relative to the encoded folder), in order
    shards/00000.json      shard 0 is complete: its image ids and the files that could not be read
    shards/00000.codes.npy its arrays, one .npy file per array (memory-mappable)

Files are split into shards of ``shard_size`` consecutive files of ``files.json``; shard ``i`` is complete
when ``shards/0000i.json`` exists. The arrays are written first and the JSON last (each atomically: a
temporary name, then a rename), so a killed encode leaves every finished shard usable and the next run
redoes only the others. Database row ``n`` of the store is row ``n`` of the concatenation of the complete
shards in shard order, and its image id is the matching entry of the shards' ``ids``.

ConceptHash stores hold ``codes``: packed binary codes (``uint64``, :func:`~core.retrieval.pack_codes`);
CEIR stores hold ``concepts`` (z-scored concept vectors) and ``latents`` (VAE latent means), ``float32``.

:meth:`CodeStore.search` is exact Hamming search over a store bigger than RAM: each shard is memory-mapped
and searched in turn (at most one shard's codes are in memory at a time) and the per-shard top k are merged
by (distance, row), which gives exactly the answer of :func:`~core.retrieval.hamming_topk` on all codes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.atomic import write_file_atomic
from core.retrieval.hamming import hamming_topk

STORE_FORMAT = "conceptlens-store"
STORE_VERSION = 1
MANIFEST_FILE = "manifest.json"
FILES_FILE = "files.json"
SHARDS_DIR = "shards"


def shard_name(index: int) -> str:
    return f"{index:05d}"


def write_json_atomic(path: Path, content: Any) -> None:
    """Write JSON through a temporary file and a rename: readers see the old file or the new one."""
    write_file_atomic(path, lambda stream: stream.write(json.dumps(content, indent=1).encode("utf-8")))


def write_array_atomic(path: Path, array: np.ndarray) -> None:
    write_file_atomic(path, lambda stream: np.save(stream, array, allow_pickle=False))


def write_shard(
    root: Path, index: int, arrays: dict[str, np.ndarray], ids: list[str], failed: list[dict[str, str]]
) -> None:
    """Write shard ``index`` (its arrays, then the JSON that marks it complete)."""
    folder = root / SHARDS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        if len(array) != len(ids):
            raise ValueError(f"Shard {index}: {len(array)} rows of '{name}' for {len(ids)} image ids.")
        write_array_atomic(folder / f"{shard_name(index)}.{name}.npy", array)
    write_json_atomic(folder / f"{shard_name(index)}.json", {"shard": index, "ids": ids, "failed": failed})


def complete_shards(root: Path, n_shards: int) -> list[int]:
    """The shards whose completion marker exists, in order."""
    folder = root / SHARDS_DIR
    return [i for i in range(n_shards) if (folder / f"{shard_name(i)}.json").is_file()]


def read_manifest(root: str | os.PathLike) -> dict[str, Any]:
    path = Path(root) / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{root} is not a code store (it has no {MANIFEST_FILE}).") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"The store manifest {path} cannot be read ({type(exc).__name__}).") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != STORE_FORMAT:
        raise ValueError(f"{path} is not a ConceptLens code store manifest.")
    if manifest.get("version") != STORE_VERSION:
        raise ValueError(
            f"The store {root} has format version {manifest.get('version')!r}; this ConceptLens reads "
            f"version {STORE_VERSION}."
        )
    return manifest


def summarise(root: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` with the shards found complete on disk, their row count and the unreadable files."""
    done = complete_shards(root, int(manifest["n_shards"]))
    rows, failed = 0, []
    for index in done:
        shard = _read_shard_json(root, index)
        rows += len(shard["ids"])
        failed.extend(shard["failed"])
    return manifest | {
        "complete_shards": done,
        "complete": len(done) == manifest["n_shards"],
        "rows": rows,
        "failed": failed,
    }


def _read_shard_json(root: Path, index: int) -> dict[str, Any]:
    return json.loads((root / SHARDS_DIR / f"{shard_name(index)}.json").read_text(encoding="utf-8"))


@dataclass
class Shard:
    root: Path
    index: int
    ids: list[str]

    def array(self, name: str) -> np.ndarray:
        """The shard's ``name`` array, memory-mapped (read-only)."""
        return np.load(self.root / SHARDS_DIR / f"{shard_name(self.index)}.{name}.npy", mmap_mode="r")

    def __len__(self) -> int:
        return len(self.ids)


class CodeStore:
    """A store written by ``conceptlens encode``, opened for reading (complete shards only)."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.manifest = summarise(self.root, read_manifest(self.root))
        self.shards = [
            Shard(self.root, index, _read_shard_json(self.root, index)["ids"])
            for index in self.manifest["complete_shards"]
        ]

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def n_bits(self) -> int | None:
        return self.manifest.get("n_bits")

    @property
    def complete(self) -> bool:
        return self.manifest["complete"]

    def __len__(self) -> int:
        return sum(len(shard) for shard in self.shards)

    @property
    def ids(self) -> list[str]:
        return [image_id for shard in self.shards for image_id in shard.ids]

    def ids_at(self, rows) -> list[str]:
        """The image ids of database ``rows`` (as :meth:`search` returns them), found shard by shard without
        listing every id of the store (a million of them on each search would cost more than the search)."""
        ends = np.cumsum([len(shard) for shard in self.shards])
        found = []
        for row in (int(r) for r in np.asarray(rows).reshape(-1)):
            if not 0 <= row < (ends[-1] if len(ends) else 0):
                raise IndexError(f"Row {row} is not in the store {self.root} ({len(self)} rows).")
            shard = int(np.searchsorted(ends, row, side="right"))
            found.append(self.shards[shard].ids[row - (int(ends[shard - 1]) if shard else 0)])
        return found

    def arrays(self, name: str) -> Iterator[np.ndarray]:
        """The ``name`` array of every complete shard, memory-mapped, in row order."""
        if name not in self.manifest["arrays"]:
            raise ValueError(
                f"The {self.kind} store {self.root} has no '{name}' array "
                f"(it has {', '.join(self.manifest['arrays'])})."
            )
        for shard in self.shards:
            if len(shard):
                yield shard.array(name)

    def load(self, name: str) -> np.ndarray:
        """All rows of the ``name`` array in memory (for stores that fit in RAM)."""
        parts = list(self.arrays(name))
        if not parts:
            layout = self.manifest["arrays"][name]
            return np.zeros((0, layout["columns"]), dtype=layout["dtype"])
        return np.concatenate(parts)

    def search(
        self, query_packed: np.ndarray, k: int, *, batch_size: int | None = None, n_threads: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact Hamming top-k over the store's codes: ``(rows, distances)``, both ``(Q, k)``, ordered by
        (distance, row) exactly as :func:`~core.retrieval.hamming_topk` over all codes at once."""
        if "codes" not in self.manifest["arrays"]:
            raise ValueError(f"The {self.kind} store {self.root} holds no binary codes to search.")
        if len(self) == 0:
            raise ValueError(f"The store {self.root} has no encoded images yet.")
        best_rows = best_dist = None
        offset = 0
        for codes in self.arrays("codes"):
            rows, dist = hamming_topk(query_packed, codes, k, batch_size=batch_size, n_threads=n_threads)
            best_rows, best_dist = merge_topk(best_rows, best_dist, rows + offset, dist, k)
            offset += len(codes)
        return best_rows, best_dist


def merge_topk(
    rows_a: np.ndarray | None, dist_a: np.ndarray | None, rows_b: np.ndarray, dist_b: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per query, the k smallest by (distance, row) of two top-k lists."""
    if rows_a is None or dist_a is None:
        return rows_b, dist_b
    rows, dist = np.concatenate([rows_a, rows_b], axis=1), np.concatenate([dist_a, dist_b], axis=1)
    order = np.lexsort((rows, dist), axis=-1)[:, :k]
    return np.take_along_axis(rows, order, axis=1), np.take_along_axis(dist, order, axis=1)
