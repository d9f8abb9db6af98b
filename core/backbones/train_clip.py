"""Train a small CLIP from scratch on ToyBirds images and captions (CPU-friendly).

The model is one of ConceptLens' open_clip configs (``configs/*.json``); the result is a
``clip`` bundle that :func:`core.backbones.clip.load_backbone` accepts as a backbone.

Captions of one species are often identical, so the contrastive loss uses *multi-positive*
targets: an image's target distribution is uniform over every caption in the batch that is
equal to its own (and symmetrically for texts), instead of pretending duplicates are negatives.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from core.backbones.clip import Backbone, build_clip, get_toy_config
from core.bundle import load_bundle, save_bundle
from core.data.spec import DataSpec, ImageSplit, open_split
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

KIND = "clip"
ZERO_SHOT_TEMPLATE = "a photo of a {}."


@dataclass
class ClipTrainConfig:
    config_name: str = "toyclip-s"
    epochs: int = 20
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup_epochs: int = 1
    seed: int = 0
    device: str = "auto"
    half: bool = False


def multi_positive_clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    caption_ids: torch.Tensor,
) -> torch.Tensor:
    """Symmetric contrastive loss where equal captions (same ``caption_ids``) are all positives."""
    image_features = F.normalize(image_features, dim=-1)
    text_features = F.normalize(text_features, dim=-1)
    logits = logit_scale.exp().clamp(max=100) * image_features @ text_features.t()
    same = (caption_ids[:, None] == caption_ids[None, :]).float()
    targets = same / same.sum(dim=1, keepdim=True)
    loss_i = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    loss_t = -(targets * F.log_softmax(logits.t(), dim=1)).sum(dim=1).mean()
    return 0.5 * (loss_i + loss_t)


@torch.no_grad()
def zero_shot_accuracy(
    backbone: Backbone,
    split: ImageSplit,
    template: str = ZERO_SHOT_TEMPLATE,
    pixels: torch.Tensor | None = None,
) -> float:
    """Top-1 accuracy of classifying ``split`` by the prompts ``template.format(class name)``."""
    if pixels is None:
        pixels = backbone.preprocess_split(split)
    images = backbone.encode_images(pixels)
    texts = backbone.encode_texts([template.format(name) for name in split.classes])
    predicted = (images @ texts.t()).argmax(dim=1).cpu().numpy()
    return float((predicted == split.labels).mean())


def train_clip(
    data: DataSpec,
    config: ClipTrainConfig,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: Progress = no_progress,
    log=print,
) -> Path:
    """Contrastive training on the train split; zero-shot accuracy on the test split; saves a bundle."""
    if data.kind != "toybirds":
        raise ValueError("Training a CLIP from scratch needs captions; only --data toybirds provides them.")
    out = prepare_output(out_dir, resume, overwrite)
    device = resolve_device(config.device)
    generator = seed_everything(config.seed)
    clip_config = get_toy_config(config.config_name)
    model, preprocess, tokenizer = build_clip(clip_config)
    model.to(device)
    backbone = Backbone(model, preprocess, tokenizer, {}, clip_config["preprocess_cfg"])
    train_split = open_split(data, "train")
    log(f"Rendering and preprocessing {len(train_split)} training images ...")
    pixels = backbone.preprocess_split(train_split, progress=progress)
    captions = [train_split.caption(i) for i in range(len(train_split))]
    unique = sorted(set(captions))
    caption_ids = torch.tensor([unique.index(c) for c in captions])
    tokens = tokenizer(captions)

    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    ckpt_file = checkpoint_path(out)
    settings = {"data": data.to_dict(), "train": asdict(config) | {"device": None}}
    start_epoch, history = 0, []
    if resume:
        start_epoch, history = restore_training_state(ckpt_file, model, optimizer, generator, settings)
        log(f"Resuming from {ckpt_file} at epoch {start_epoch}.")
    steps_per_epoch = len(batches(len(pixels), config.batch_size, drop_last=True))
    total = config.epochs * steps_per_epoch
    started = time.perf_counter()
    for epoch in range(start_epoch, config.epochs):
        model.train()
        running = 0.0
        for step, idx in enumerate(batches(len(pixels), config.batch_size, generator, drop_last=True)):
            global_step = epoch * steps_per_epoch + step
            set_lr(
                optimizer, cosine_lr(global_step, total, config.lr, config.warmup_epochs * steps_per_epoch)
            )
            loss = multi_positive_clip_loss(
                model.encode_image(pixels[idx].to(device)),
                model.encode_text(tokens[idx].to(device)),
                model.logit_scale,
                caption_ids[idx].to(device),
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += float(loss.detach())
            progress(global_step + 1, total)
        history.append({"loss": running / max(1, steps_per_epoch)})
        log(f"epoch {epoch + 1}/{config.epochs} loss={history[-1]['loss']:.4f}")
        save_training_state(ckpt_file, model, optimizer, generator, epoch + 1, history, settings)
    seconds = time.perf_counter() - started

    model.eval()
    test_split = open_split(data, "test")
    accuracy = zero_shot_accuracy(backbone, test_split)
    log(f"zero-shot species accuracy on the test split: {accuracy:.3f}")
    bundle_config: dict[str, Any] = {
        "backbone": {"name": config.config_name, **clip_config},
        "data": data.to_dict(),
        "train": asdict(config) | {"seconds": round(seconds, 1), "history": history},
        "classes": list(train_split.classes),
        "metrics": {
            "zero_shot_accuracy": accuracy,
            "zero_shot_template": ZERO_SHOT_TEMPLATE,
            "n_test": len(test_split),
        },
    }
    save_bundle(
        out,
        kind=KIND,
        config=bundle_config,
        weights=model.state_dict(),
        half=config.half,
        overwrite=overwrite,
    )
    ckpt_file.unlink(missing_ok=True)
    return out


def evaluate_clip_bundle(path: str, seed: int | None = None, device: str = "auto") -> dict[str, Any]:
    """``conceptlens eval`` for a CLIP bundle: zero-shot species accuracy on the test split."""
    from core.backbones.clip import load_backbone

    bundle = load_bundle(path, kind=KIND, load_arrays=False)
    data = DataSpec.from_dict(bundle.section("data"))
    if seed is not None:
        data = data.with_seed(seed)
    backbone = load_backbone(str(bundle.path), device=resolve_device(device))
    test_split = open_split(data, "test")
    return {
        "kind": KIND,
        "bundle": str(bundle.path),
        "data": data.to_dict(),
        "zero_shot_accuracy": zero_shot_accuracy(backbone, test_split),
        "n_test": len(test_split),
    }
