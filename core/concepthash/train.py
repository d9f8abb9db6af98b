"""Train ConceptHash and write it as a bundle; load a bundle back into a model."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.backbones.clip import Backbone, load_backbone
from core.bundle import load_bundle, save_bundle
from core.concepthash.model import ConceptHash, ConceptHashConfig
from core.data.spec import DataSpec, open_split
from core.progress import Progress, no_progress
from core.runtime import resolve_device, seed_everything
from core.training import (
    batches,
    checkpoint_path,
    cosine_lr,
    prepare_output,
    restore_training_state,
    save_training_state,
    set_lr,
)

KIND = "concepthash"


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_epochs: int = 1
    seed: int = 0
    device: str = "auto"
    half: bool = False  # store weights as float16 in the bundle


@dataclass
class LoadedConceptHash:
    """A ConceptHash bundle ready to use: model (eval mode), its backbone, data spec and cached arrays."""

    path: Path
    model: ConceptHash
    backbone: Backbone
    data: DataSpec
    config: dict[str, Any]
    arrays: dict[str, np.ndarray]

    @property
    def metrics(self) -> dict[str, Any]:
        return self.config.get("metrics", {})


def train_concepthash(
    backbone_spec: str | dict,
    data: DataSpec,
    model_config: ConceptHashConfig,
    train_config: TrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: Progress = no_progress,
    log=print,
) -> Path:
    """Train on the train split, evaluate on the test split, save a bundle at ``out_dir``."""
    from core.concepthash.evaluate import evaluate_model

    out = prepare_output(out_dir, resume, overwrite)
    device = resolve_device(train_config.device)
    generator = seed_everything(train_config.seed)
    backbone = load_backbone(backbone_spec, device=device)
    train_split, test_split = open_split(data, "train"), open_split(data, "test")
    log(f"Preprocessing {len(train_split)} training images ...")
    pixels = backbone.preprocess_split(train_split, progress=progress)
    labels = torch.from_numpy(train_split.labels)
    model = ConceptHash(backbone, train_split.classes, model_config).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=train_config.lr, weight_decay=train_config.weight_decay
    )

    ckpt_file = checkpoint_path(out)
    settings = {
        "backbone": backbone.reference,
        "data": data.to_dict(),
        "model": model_config.to_dict(),
        "train": asdict(train_config) | {"device": None},
    }
    start_epoch, history = 0, []
    if resume:
        start_epoch, history = restore_training_state(ckpt_file, model, optimizer, generator, settings)
        log(f"Resuming from {ckpt_file} at epoch {start_epoch}.")

    steps_per_epoch = len(batches(len(pixels), train_config.batch_size, drop_last=True))
    total_steps = train_config.epochs * steps_per_epoch
    started = time.perf_counter()
    for epoch in range(start_epoch, train_config.epochs):
        model.train()
        sums: dict[str, float] = {}
        for step, idx in enumerate(batches(len(pixels), train_config.batch_size, generator, drop_last=True)):
            global_step = epoch * steps_per_epoch + step
            set_lr(
                optimizer,
                cosine_lr(
                    global_step, total_steps, train_config.lr, train_config.warmup_epochs * steps_per_epoch
                ),
            )
            terms = model.loss(model(pixels[idx].to(device)), labels[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            terms["total"].backward()
            optimizer.step()
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            progress(global_step + 1, total_steps)
        history.append({name: value / max(1, steps_per_epoch) for name, value in sums.items()})
        log(
            f"epoch {epoch + 1}/{train_config.epochs} "
            + " ".join(f"{k}={v:.4f}" for k, v in history[-1].items())
        )
        save_training_state(ckpt_file, model, optimizer, generator, epoch + 1, history, settings)
    train_seconds = time.perf_counter() - started

    model.eval()
    log("Encoding the database and evaluating on the test split ...")
    metrics, arrays = evaluate_model(model, backbone, train_split, test_split, database_pixels=pixels)
    config = {
        "backbone": backbone.reference,
        "data": data.to_dict(),
        "model": model_config.to_dict(),
        "train": asdict(train_config) | {"seconds": round(train_seconds, 1), "history": history},
        "classes": list(train_split.classes),
        "metrics": metrics,
    }
    save_bundle(
        out,
        kind=KIND,
        config=config,
        weights=model.state_dict(),
        arrays=arrays,
        half=train_config.half,
        overwrite=overwrite,
    )
    ckpt_file.unlink(missing_ok=True)
    return out


def load_concepthash(path: str | Path, device: str = "auto") -> LoadedConceptHash:
    """Load a ConceptHash bundle with its backbone (found by the reference the bundle stores)."""
    bundle = load_bundle(path, kind=KIND)
    model_config = ConceptHashConfig.from_dict(bundle.section("model"))
    classes = list(bundle.config.get("classes") or [])
    backbone = load_backbone(
        bundle.section("backbone"), device=resolve_device(device), relative_to=bundle.path
    )
    text_features = bundle.weights.get("text_features")
    if text_features is None:
        raise ValueError(
            f"The bundle {bundle.path} has no 'text_features' weights; it is not a ConceptHash model."
        )
    model = ConceptHash(backbone, classes, model_config, text_features=text_features)
    from core.bundle import check_shapes

    check_shapes(bundle.weights, {k: tuple(v.shape) for k, v in model.state_dict().items()}, path=bundle.path)
    model.load_state_dict(bundle.weights)
    model.to(backbone.device).eval()
    data = DataSpec.from_dict(bundle.section("data"))
    return LoadedConceptHash(bundle.path, model, backbone, data, bundle.config, bundle.arrays)
