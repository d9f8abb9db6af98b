"""2-D maps of CEIR latents: seeded UMAP, PCA for tiny sets, caching in the bundle or on disk."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch

from core.bundle import BundleError, load_bundle, save_bundle
from core.ceir import projection2d
from core.ceir.arrays import TRAIN_IDS, TRAIN_LATENTS, TRAIN_UMAP
from core.ceir.projection2d import ensure_umap, pca_2d, umap_2d


def two_blobs(n_per_blob: int = 12, dim: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.zeros((2, dim), dtype=np.float32)
    centres[1, 0] = 20.0
    labels = np.repeat([0, 1], n_per_blob)
    points = centres[labels] + rng.normal(scale=0.5, size=(2 * n_per_blob, dim)).astype(np.float32)
    return points.astype(np.float32), labels


def make_bundle(path, latents: np.ndarray, extra: dict | None = None):
    arrays = {
        TRAIN_LATENTS: latents.astype(np.float32),
        TRAIN_IDS: np.array([f"id{i}" for i in range(len(latents))]),
    }
    return save_bundle(
        path,
        kind="ceir",
        config={"concepts": ["a", "b"]},
        weights={"w": torch.arange(6, dtype=torch.float32)},
        arrays=arrays | (extra or {}),
    )


@pytest.fixture
def home(tmp_path, monkeypatch):
    """Point ~ at a temporary folder so the disk cache lands there."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def counting(monkeypatch) -> list[int]:
    """Replace the UMAP computation by a cheap fake that records each call (its row count)."""
    calls: list[int] = []

    def fake(latents, seed=0, n_neighbors=15):
        calls.append(len(latents))
        return np.column_stack([np.arange(len(latents)), np.asarray(latents)[:, 0]]).astype(np.float32)

    monkeypatch.setattr(projection2d, "umap_2d", fake)
    return calls


def test_umap_is_deterministic_for_a_seed_and_keeps_blobs_apart():
    points, labels = two_blobs()
    first = umap_2d(points, seed=3)
    again = umap_2d(points, seed=3)
    other = umap_2d(points, seed=4)
    assert first.shape == (24, 2) and first.dtype == np.float32
    assert first.tobytes() == again.tobytes()
    assert not np.array_equal(first, other)
    # every point's nearest 2-D neighbour comes from its own blob
    d = np.linalg.norm(first[:, None] - first[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert (labels[d.argmin(axis=1)] == labels).all()


def test_umap_clips_neighbours_for_small_sets():
    points, _ = two_blobs(n_per_blob=3)
    out = umap_2d(points, n_neighbors=15)  # 6 points: 15 neighbours is impossible, 5 are used
    assert out.shape == (6, 2) and np.isfinite(out).all()


def test_fewer_than_five_points_fall_back_to_pca_with_a_warning():
    points = np.array([[0.0, 0.0, 5.0], [1.0, 0.0, 5.0], [2.0, 0.0, 5.0], [3.0, 0.0, 5.0]], dtype=np.float32)
    with pytest.warns(UserWarning, match="PCA"):
        out = umap_2d(points)
    # centred along x; the second component carries nothing
    np.testing.assert_allclose(out, [[-1.5, 0.0], [-0.5, 0.0], [0.5, 0.0], [1.5, 0.0]], atol=1e-6)
    assert projection2d.projection_method(4) == "pca" and projection2d.projection_method(5) == "umap"


def test_pca_matches_hand_computed_components():
    # points on the line y = x: the first component is the diagonal, positive orientation
    points = np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]])
    out = pca_2d(points)
    np.testing.assert_allclose(out[:, 0], [-np.sqrt(2), 0.0, np.sqrt(2)], atol=1e-6)
    np.testing.assert_allclose(out[:, 1], 0.0, atol=1e-6)
    assert pca_2d(np.ones((1, 3))).tolist() == [[0.0, 0.0]]


@pytest.mark.parametrize(
    ("latents", "message"),
    [(np.zeros(5), "shape"), (np.zeros((0, 3)), "shape"), (np.array([[np.nan, 1.0]] * 6), "NaN")],
)
def test_bad_latents_are_refused_in_one_sentence(latents, message):
    with pytest.raises(ValueError, match=message):
        umap_2d(latents)


def test_ensure_umap_stores_the_map_in_the_bundle_and_does_not_recompute(tmp_path, home, monkeypatch):
    calls = counting(monkeypatch)
    latents, _ = two_blobs()
    bundle = make_bundle(tmp_path / "b", latents)
    weights_before = (bundle / "weights.safetensors").read_bytes()

    first = ensure_umap(bundle)
    assert calls == [24]
    stored = load_bundle(bundle).arrays
    assert stored[TRAIN_UMAP].tobytes() == first.tobytes()
    assert stored[TRAIN_IDS].tolist()[:2] == ["id0", "id1"]  # other arrays kept
    assert (bundle / "weights.safetensors").read_bytes() == weights_before

    second = ensure_umap(bundle)
    assert calls == [24], "the second call reads the cached map"
    assert second.tobytes() == first.tobytes()
    assert not (home / ".cache").exists(), "a writable bundle needs no disk cache"


def test_a_stale_cached_map_is_recomputed(tmp_path, home, monkeypatch):
    calls = counting(monkeypatch)
    latents, _ = two_blobs()
    bundle = make_bundle(tmp_path / "b", latents, {TRAIN_UMAP: np.zeros((3, 2), dtype=np.float32)})
    out = ensure_umap(bundle)
    assert calls == [24] and out.shape == (24, 2)
    assert load_bundle(bundle).arrays[TRAIN_UMAP].shape == (24, 2)


def test_read_only_bundle_is_cached_on_disk(tmp_path, home, monkeypatch):
    calls = counting(monkeypatch)
    monkeypatch.setattr(projection2d, "_bundle_writable", lambda path: False)
    latents, _ = two_blobs()
    bundle = make_bundle(tmp_path / "b", latents)
    files_before = sorted(p.name for p in bundle.iterdir())

    first = ensure_umap(bundle)
    cached = list((home / ".cache" / "conceptlens" / "umap").glob("*.npy"))
    assert len(cached) == 1 and np.load(cached[0]).tobytes() == first.tobytes()
    assert cached[0] == projection2d.disk_cache_file(bundle)
    assert sorted(p.name for p in bundle.iterdir()) == files_before
    assert TRAIN_UMAP not in load_bundle(bundle).arrays

    second = ensure_umap(bundle)
    assert calls == [24] and second.tobytes() == first.tobytes()


def test_a_failed_bundle_write_falls_back_to_the_disk_cache(tmp_path, home, monkeypatch):
    calls = counting(monkeypatch)

    def refuse(*_args, **_kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(projection2d, "update_bundle_arrays", refuse)
    bundle = make_bundle(tmp_path / "b", two_blobs()[0])
    ensure_umap(bundle)
    ensure_umap(bundle)
    assert calls == [24]
    assert projection2d.disk_cache_file(bundle).is_file()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_really_read_only_folder_uses_the_disk_cache(tmp_path, home, monkeypatch):
    calls = counting(monkeypatch)
    bundle = make_bundle(tmp_path / "shipped" / "b", two_blobs()[0])
    os.chmod(bundle, 0o555)
    os.chmod(bundle.parent, 0o555)
    try:
        ensure_umap(bundle)
        ensure_umap(bundle)
    finally:
        os.chmod(bundle.parent, 0o755)
        os.chmod(bundle, 0o755)
    assert calls == [24] and projection2d.disk_cache_file(bundle).is_file()


def test_ensure_umap_computes_the_seeded_umap(tmp_path, home):
    latents, _ = two_blobs()
    bundle = make_bundle(tmp_path / "b", latents)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no stray warnings from a normal-sized set
        out = ensure_umap(bundle)
    assert out.tobytes() == umap_2d(latents).tobytes()


def test_a_bundle_without_latents_says_so(tmp_path, home):
    bundle = save_bundle(tmp_path / "b", kind="ceir", config={}, weights={"w": torch.zeros(1)})
    with pytest.raises(BundleError, match="train_latents"):
        ensure_umap(bundle)
