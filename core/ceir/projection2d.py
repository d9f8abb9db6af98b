"""A fixed 2-D map of CEIR latents for plotting: UMAP with a fixed random state, computed once and cached.

``umap_2d`` embeds latents with umap-learn (seeded, so the same latents always give the same map).
``ensure_umap`` returns a bundle's map, computing it only the first time: it is stored in the bundle as the
cached array ``train_umap`` (atomic rewrite through :func:`core.bundle.update_bundle_arrays`), or, when the
bundle folder cannot be written (e.g. shipped read-only), in
``~/.cache/conceptlens/umap/<hash of path, modification time and parameters>.npy``.

umap-learn imports numba, and its first fit in a process compiles code (seconds), so it is imported
lazily and the exact nearest neighbours are computed with scikit-learn, which skips numba's
nearest-neighbour compilation. ``known_map`` returns a map only if it is already made, so a page can show
a quick PCA stand-in for a large bundle (above ``MAX_WAITED_POINTS`` latents) instead of waiting a minute.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import numpy as np

from core.atomic import write_file_atomic
from core.bundle import ARRAYS_FILE, BundleError, read_bundle_config, update_bundle_arrays
from core.ceir.arrays import TRAIN_LATENTS, TRAIN_UMAP

UMAP_ARRAY, LATENTS_ARRAY = TRAIN_UMAP, TRAIN_LATENTS
DEFAULT_SEED = 0
DEFAULT_NEIGHBORS = 15
MIN_UMAP_POINTS = 5  # below this UMAP has no neighbourhood graph worth the name: PCA instead
# Above this many latents a map is not computed while a page waits (20,000 took ~1 min on 2 cores): CEIR
# training stores it, and a page shows the PCA map until someone asks for the UMAP one.
MAX_WAITED_POINTS = 3000


def projection_method(n_points: int) -> str:
    """Which method :func:`umap_2d` uses for ``n_points`` points: ``"umap"`` or ``"pca"``."""
    return "umap" if n_points >= MIN_UMAP_POINTS else "pca"


def _check_latents(latents: np.ndarray) -> np.ndarray:
    """Latents as a finite float32 (N, D) array; one clear sentence otherwise."""
    x = np.asarray(latents)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"Latents must be a non-empty (N, D) array, got shape {x.shape}.")
    if x.dtype.kind not in "biuf":
        raise ValueError(f"Latents must be numbers, got dtype {x.dtype}.")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise ValueError("Latents contain NaN or infinite values, so they cannot be mapped to 2-D.")
    return x


def pca_2d(latents: np.ndarray) -> np.ndarray:
    """First two principal components (N, 2) float32; signs fixed so the largest loading is positive."""
    x = _check_latents(latents).astype(np.float64)
    centred = x - x.mean(axis=0)
    out = np.zeros((len(x), 2), dtype=np.float64)
    if len(x) < 2 or not centred.any():
        return out.astype(np.float32)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    components = vt[:2]
    signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
    components = components * signs[:, None]
    out[:, : len(components)] = centred @ components.T
    return out.astype(np.float32)


def umap_2d(
    latents: np.ndarray, seed: int = DEFAULT_SEED, n_neighbors: int = DEFAULT_NEIGHBORS
) -> np.ndarray:
    """(N, 2) float32 UMAP of ``latents`` with a fixed random state (same input and seed, same map).

    ``n_neighbors`` is clipped to ``[2, N - 1]`` for small N; with fewer than ``MIN_UMAP_POINTS`` points
    (or all points equal) the map is the PCA projection instead, with a warning saying so.
    """
    x = _check_latents(latents)
    if n_neighbors < 2:
        raise ValueError(f"n_neighbors must be at least 2, got {n_neighbors}.")
    if projection_method(len(x)) == "pca" or not np.ptp(x, axis=0).any():
        warnings.warn(
            f"Only {len(x)} points (or all identical): the 2-D map is PCA, not UMAP.",
            UserWarning,
            stacklevel=2,
        )
        return pca_2d(x)
    k = int(min(n_neighbors, len(x) - 1))
    import umap  # lazy: numba makes the first import slow
    from sklearn.neighbors import NearestNeighbors

    distances, indices = NearestNeighbors(n_neighbors=k).fit(x).kneighbors(x)
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=k,
        random_state=seed,
        n_jobs=1,
        precomputed_knn=(indices.astype(np.int32), distances.astype(np.float32), None),
    )
    with warnings.catch_warnings():
        # tiny data sets trigger umap's "disconnected graph" and "no search index" notices
        warnings.simplefilter("ignore", category=UserWarning)
        embedding = reducer.fit_transform(x)
    return np.asarray(embedding, dtype=np.float32)


# ----------------------------------------------------------------------------------------------------------
# Caching for bundles
# ----------------------------------------------------------------------------------------------------------


def _read_bundle_arrays(path: Path, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Only the named numeric arrays of a bundle (the file may hold much more)."""
    from safetensors import SafetensorError, safe_open

    file = path / ARRAYS_FILE
    if not file.is_file():
        return {}
    try:
        with safe_open(str(file), framework="numpy") as handle:
            present = set(handle.keys())
            return {name: handle.get_tensor(name) for name in names if name in present}
    except (SafetensorError, OSError, ValueError) as error:
        raise BundleError(f"Bundle {path} has a corrupt or truncated {ARRAYS_FILE} ({error}).") from error


def _fits(array: np.ndarray | None, n_points: int) -> bool:
    return (
        array is not None
        and array.shape == (n_points, 2)
        and array.dtype.kind == "f"
        and bool(np.isfinite(array).all())
    )


def _bundle_mtime_ns(path: Path) -> int:
    """Newest modification time of the bundle's entries (changes whenever the bundle is rewritten)."""
    stamps = [path.stat().st_mtime_ns]
    for entry in path.iterdir():
        try:
            stamps.append(entry.stat().st_mtime_ns)
        except OSError:
            continue
    return max(stamps)


def cache_dir() -> Path:
    """Where maps of read-only bundles are kept: ``~/.cache/conceptlens/umap``."""
    return Path.home() / ".cache" / "conceptlens" / "umap"


def disk_cache_file(
    path: str | os.PathLike, seed: int = DEFAULT_SEED, n_neighbors: int = DEFAULT_NEIGHBORS
) -> Path:
    """The on-disk cache file of a bundle's map: keyed on its resolved path, mtime and the parameters."""
    resolved = Path(path).resolve()
    key = f"{resolved}|{_bundle_mtime_ns(resolved)}|seed={seed}|neighbors={n_neighbors}"
    return cache_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.npy"


def _load_disk_cache(file: Path, n_points: int) -> np.ndarray | None:
    try:
        array = np.load(file, allow_pickle=False)
    except (OSError, ValueError):
        return None
    return array.astype(np.float32) if _fits(array, n_points) else None


def _save_disk_cache(file: Path, array: np.ndarray) -> None:
    """Write atomically (temporary file + rename); a cache that cannot be written is only a warning."""
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        write_file_atomic(file, lambda stream: np.save(stream, array, allow_pickle=False))
    except OSError as error:
        warnings.warn(
            f"The 2-D map could not be cached in {file.parent} ({error}).", UserWarning, stacklevel=3
        )


def _bundle_writable(path: Path) -> bool:
    """update_bundle_arrays writes a sibling folder and renames it, so both must be writable."""
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def _bundle_latents(path: Path) -> dict[str, np.ndarray]:
    read_bundle_config(path)  # a clear error for a missing or broken bundle
    arrays = _read_bundle_arrays(path, (LATENTS_ARRAY, UMAP_ARRAY))
    if LATENTS_ARRAY not in arrays:
        raise BundleError(f"Bundle {path} has no cached '{LATENTS_ARRAY}' array to map; train it again.")
    return arrays


def known_map(bundle_path: str | os.PathLike) -> np.ndarray | None:
    """The bundle's (N, 2) map if it is already made — stored in the bundle or in the disk cache — else
    None; never computes one. A map whose shape does not match the latents (stale) does not count."""
    path = Path(bundle_path)
    arrays = _bundle_latents(path)
    n_points = len(arrays[LATENTS_ARRAY])
    if _fits(arrays.get(UMAP_ARRAY), n_points):
        return arrays[UMAP_ARRAY].astype(np.float32)
    return _load_disk_cache(disk_cache_file(path), n_points)


def ensure_umap(bundle_path: str | os.PathLike) -> np.ndarray:
    """The (N, 2) map of a bundle's ``train_latents``: cached in the bundle, else on disk, else computed
    (and then stored in the bundle, or on disk for a bundle that cannot be written).

    A cached map whose shape does not match the latents (stale) is recomputed.
    """
    path = Path(bundle_path)
    known = known_map(path)
    if known is not None:
        return known
    embedding = umap_2d(_bundle_latents(path)[LATENTS_ARRAY], DEFAULT_SEED, DEFAULT_NEIGHBORS)
    if _bundle_writable(path):
        try:
            update_bundle_arrays(path, {UMAP_ARRAY: embedding})
            return embedding
        except OSError:
            pass  # e.g. a read-only file system that os.access did not see: fall through to the disk cache
    _save_disk_cache(disk_cache_file(path), embedding)
    return embedding
