"""``conceptlens encode``: encode an image folder with a bundle into a sharded, resumable code store.

The store layout is described in :mod:`core.retrieval.store`. Under ``torchrun`` shard ``i`` is encoded by
rank ``i % world_size``; shards are fixed slices of the sorted file list, so the store is the same whatever
the number of processes. Rank 0 alone writes the plan and the manifest; every rank writes its own shards.
A file that cannot be read is listed in its shard (and the manifest) and skipped, never fatal.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from core.data.images import ImageLoadError, list_image_files, load_image
from core.distributed import DistContext, barrier, distributed_run, main_rank_only
from core.progress import Progress, no_progress
from core.retrieval.hamming import pack_codes
from core.retrieval.store import (
    FILES_FILE,
    MANIFEST_FILE,
    STORE_FORMAT,
    STORE_VERSION,
    complete_shards,
    read_manifest,
    summarise,
    write_json_atomic,
    write_shard,
)

MAX_SHARD_SIZE = 1_000_000
ENCODE_TIMEOUT = timedelta(hours=24)  # the last rank may finish long after the first


@dataclass
class EncodeConfig:
    shard_size: int = 4096  # images per shard: the unit of resumption and of memory in search
    batch_size: int = 64
    device: str = "auto"

    def __post_init__(self) -> None:
        if not 1 <= self.shard_size <= MAX_SHARD_SIZE:
            raise ValueError(f"shard_size must be between 1 and {MAX_SHARD_SIZE}, got {self.shard_size}.")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}.")


class BundleEncoder:
    """Images -> the arrays a store of this bundle's kind holds."""

    kind: str
    layout: dict[str, dict[str, Any]]  # array name -> {"dtype", "columns"}
    extra: dict[str, Any]  # manifest fields of this kind (e.g. n_bits)
    ood: Any = None  # the bundle's out-of-distribution check (core.ood.OODTest); None: it cannot tell

    def encode(self, images: list[Image.Image]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def check_ood(self) -> None:
        """Record per image whether the out-of-distribution check (core.ood) flags it, where the bundle can
        tell (``ood_check`` in the manifest says whether it could)."""
        from core.ood import OOD_ARRAY, ood_test

        self.ood = ood_test(self.loaded)
        self.extra = {**self.extra, "ood_check": self.ood is not None}
        if self.ood is not None:
            self.layout = {**self.layout, OOD_ARRAY: {"dtype": "uint8", "columns": 1}}

    def ood_flags(self, images: list[Image.Image], embeddings: torch.Tensor | None = None) -> dict[str, Any]:
        """The ``ood`` column of these images (1: flagged), or nothing when the bundle cannot tell."""
        from core.ood import OOD_ARRAY, embed_images

        if self.ood is None:
            return {}
        embeddings = embed_images(self.loaded.backbone, images) if embeddings is None else embeddings
        return {OOD_ARRAY: self.ood.flags(embeddings).astype(np.uint8)[:, None]}


class ConceptHashEncoder(BundleEncoder):
    kind = "concepthash"

    def __init__(self, path: Path, device: torch.device, batch_size: int) -> None:
        from core.concepthash.bundle import load_concepthash

        self.loaded = load_concepthash(path, device=str(device))
        self.batch_size = batch_size
        bits = self.loaded.model.config.bits
        self.layout = {"codes": {"dtype": "uint64", "columns": math.ceil(bits / 64)}}
        self.extra = {"n_bits": bits}
        self.check_ood()

    def encode(self, images: list[Image.Image]) -> dict[str, np.ndarray]:
        from core.concepthash.evaluate import encode_images

        codes = encode_images(self.loaded.model, self.loaded.backbone, images, self.batch_size)
        return {"codes": pack_codes(codes), **self.ood_flags(images)}


class CEIREncoder(BundleEncoder):
    kind = "ceir"

    def __init__(self, path: Path, device: torch.device, batch_size: int) -> None:
        from core.ceir.bundle import load_ceir

        self.loaded = load_ceir(path, device=str(device))
        model = self.loaded.model
        self.layout = {
            "concepts": {"dtype": "float32", "columns": len(model.concepts)},
            "latents": {"dtype": "float32", "columns": int(model.cluster_centers.shape[1])},
        }
        self.extra = {"concepts": list(model.concepts)}
        self.check_ood()

    @torch.no_grad()
    def encode(self, images: list[Image.Image]) -> dict[str, np.ndarray]:
        backbone, model = self.loaded.backbone, self.loaded.model
        embeddings = backbone.encode_images(backbone.preprocess_images(images)).cpu()
        vectors = model.concept_vectors(embeddings)
        return {
            "concepts": vectors.numpy().astype(np.float32),
            "latents": model.latent(vectors).numpy().astype(np.float32),
            **self.ood_flags(images, embeddings),
        }


def open_encoder(bundle: str | Path, device: torch.device, batch_size: int) -> BundleEncoder:
    from core.bundle import read_bundle_config

    kind = read_bundle_config(bundle)["kind"]
    encoders = {"concepthash": ConceptHashEncoder, "ceir": CEIREncoder}
    if kind not in encoders:
        raise ValueError(f"'{bundle}' is a {kind} bundle; encode takes a concepthash or ceir bundle.")
    return encoders[kind](Path(bundle), device, batch_size)


def parse_folder(data: str) -> Path:
    """``folder:DIR`` (or a plain DIR) -> the folder, which must exist."""
    folder = Path(data.removeprefix("folder:"))
    if not folder.is_dir():
        raise ValueError(f"--data {data}: {folder} is not a folder of images.")
    return folder


def plan_store(
    out: Path, folder: Path, bundle: str | Path, encoder: BundleEncoder, config: EncodeConfig, resume: bool
) -> dict[str, Any]:
    """Write the store's plan (rank 0), or check that the store at ``out`` has the same plan (resume). Files
    of the folder that are not images to open (a FIFO, another kind of file, an unreadable sub-folder) are
    listed in the plan's ``skipped``, each with the reason, so every file is accounted for."""
    skipped: list[dict[str, str]] = []

    def skip(error: ImageLoadError) -> None:
        skipped.append({"file": error.source_name, "error": str(error)})

    files = [path.relative_to(folder).as_posix() for path in list_image_files([folder], on_error=skip)]
    if not files:
        raise ValueError(f"No images found in {folder}.")
    manifest = {
        "format": STORE_FORMAT,
        "version": STORE_VERSION,
        "kind": encoder.kind,
        "bundle": str(Path(bundle).resolve()),
        "folder": str(folder.resolve()),
        "shard_size": config.shard_size,
        "n_files": len(files),
        "n_shards": math.ceil(len(files) / config.shard_size),
        "arrays": encoder.layout,
        **encoder.extra,
        "skipped": skipped,
    }
    if (out / MANIFEST_FILE).exists():
        if not resume:
            raise ValueError(f"The store {out} exists; pass --resume to finish it or choose another --out.")
        _check_same_plan(out, manifest, files)
        return manifest
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not a code store; choose another --out.")
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / FILES_FILE, files)
    write_json_atomic(out / MANIFEST_FILE, summarise(out, manifest))
    return manifest


PLAN_KEYS = ("kind", "bundle", "shard_size", "n_files", "arrays")


def _check_same_plan(out: Path, manifest: dict[str, Any], files: list[str]) -> None:
    saved = read_manifest(out)
    changed = [key for key in PLAN_KEYS if saved.get(key) != manifest[key]]
    if not changed and _read_files(out) != files:
        changed = ["the image files"]
    if changed:
        raise ValueError(
            f"The store {out} was started with other settings ({', '.join(changed)} differ); resume it with "
            "the same bundle, folder and --shard-size, or choose another --out."
        )


def _read_files(out: Path) -> list[str]:
    import json

    return json.loads((out / FILES_FILE).read_text(encoding="utf-8"))


def encode_shard(
    encoder: BundleEncoder, folder: Path, names: list[str], batch_size: int
) -> tuple[dict[str, np.ndarray], list[str], list[dict[str, str]]]:
    """Arrays, image ids and unreadable files of one shard's files."""
    ids, failed, parts = [], [], []
    batch: list[Image.Image] = []
    for name in names:
        try:
            batch.append(load_image(folder / name, name=name))
            ids.append(name)
        except (ImageLoadError, OSError) as exc:
            failed.append({"file": name, "error": str(exc)})
        if len(batch) == batch_size:
            parts.append(encoder.encode(batch))
            batch = []
    if batch:
        parts.append(encoder.encode(batch))
    arrays = {
        name: np.concatenate([part[name] for part in parts])
        if parts
        else np.zeros((0, layout["columns"]), dtype=layout["dtype"])
        for name, layout in encoder.layout.items()
    }
    return arrays, ids, failed


def encode_folder(
    bundle: str | Path,
    data: str,
    out: str | Path,
    config: EncodeConfig,
    *,
    resume: bool = False,
    progress: Progress = no_progress,
    log=print,
) -> dict[str, Any]:
    """Encode every image of the folder ``data`` (``folder:DIR``) with ``bundle`` into the store ``out``;
    returns the final manifest, with ``encoded_now`` (rows this run added) and ``seconds`` (its wall time)."""
    folder, out = parse_folder(data), Path(out)
    with distributed_run(config.device, timeout=ENCODE_TIMEOUT) as ctx:
        progress, log = main_rank_only(ctx, progress, log)
        encoder = open_encoder(bundle, ctx.device, config.batch_size)
        if ctx.is_main:
            plan_store(out, folder, bundle, encoder, config, resume)
        barrier(ctx)
        return _encode_shards(ctx, encoder, folder, out, config, progress, log)


def _encode_shards(
    ctx: DistContext,
    encoder: BundleEncoder,
    folder: Path,
    out: Path,
    config: EncodeConfig,
    progress: Progress,
    log,
) -> dict[str, Any]:
    started = time.perf_counter()
    manifest, files = read_manifest(out), _read_files(out)
    n_shards = manifest["n_shards"]
    rows_before = summarise(out, manifest)["rows"]
    done = set(complete_shards(out, n_shards))
    mine = [i for i in range(n_shards) if i % ctx.world_size == ctx.rank and i not in done]
    log(
        f"{len(files)} images in {n_shards} shards; {len(done)} already complete, "
        f"{n_shards - len(done)} to encode" + (f" on {ctx.world_size} processes." if ctx.distributed else ".")
    )
    for n, index in enumerate(mine, 1):
        names = files[index * config.shard_size : (index + 1) * config.shard_size]
        arrays, ids, failed = encode_shard(encoder, folder, names, config.batch_size)
        write_shard(out, index, arrays, ids, failed)
        if ctx.is_main:  # the manifest says which shards are complete, even if the run is killed later
            write_json_atomic(out / MANIFEST_FILE, summarise(out, manifest))
        progress(n, len(mine))
    barrier(ctx)
    final = summarise(out, manifest)
    if ctx.is_main:
        write_json_atomic(out / MANIFEST_FILE, final)
    return final | {"encoded_now": final["rows"] - rows_before, "seconds": time.perf_counter() - started}
