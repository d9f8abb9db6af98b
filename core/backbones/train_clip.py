"""Train a small CLIP from scratch on ToyBirds images and captions (CPU-friendly).

The model is one of ConceptLens' open_clip configs (``configs/*.json``); the result is a
``clip`` bundle that :func:`core.backbones.clip.load_backbone` accepts as a backbone.

Training streams freshly drawn images: epoch ``e`` uses ToyBirds train indices
``e*N .. (e+1)*N - 1`` (N = images per epoch), rendered in a DataLoader worker, so no image is
seen twice and the run is still fully determined by its seed.

Every image gets a random text (:func:`core.data.toybirds.random_caption`): the full caption,
the species prompt, or phrases naming a random subset of its parts ("a bird with a blue head").
Many texts in a batch are true of several images, so the contrastive loss uses *multi-positive*
targets: text j is a positive for image i when every claim of text j is a fact of image i
(``sample_facts``), and an image's target is uniform over its positives (and symmetrically for
texts).  Treating "a bird with a red head" as a negative for every other red-headed bird in the
batch would teach the text tower the wrong thing.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from core.backbones.clip import Backbone, build_clip, get_toy_config
from core.backbones.evaluate_clip import KIND, clip_report
from core.backbones.train_config import ClipTrainConfig
from core.bundle import save_bundle
from core.data import toybirds
from core.data.spec import DataSpec
from core.distributed import (
    DistContext,
    WithLoss,
    distributed_run,
    gather_objects,
    gather_with_grad,
    main_rank_only,
    wrap_model,
)
from core.progress import Progress, no_progress
from core.runtime import MixedPrecision, seed_everything
from core.training import (
    RunState,
    checkpoint_path,
    epoch_loader,
    prepare_output,
    run_epochs,
)


def multi_positive_clip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: torch.Tensor,
    positives: torch.Tensor,
) -> torch.Tensor:
    """Symmetric contrastive loss; ``positives[i, j]`` says text j is true of image i.

    Each row (image) and column (text) must have at least one positive (its own pair does).
    """
    image_features = F.normalize(image_features, dim=-1)
    text_features = F.normalize(text_features, dim=-1)
    logits = logit_scale.exp().clamp(max=100) * image_features @ text_features.t()
    positives = positives.float()
    image_targets = positives / positives.sum(dim=1, keepdim=True)
    text_targets = positives.t() / positives.t().sum(dim=1, keepdim=True)
    loss_i = -(image_targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    loss_t = -(text_targets * F.log_softmax(logits.t(), dim=1)).sum(dim=1).mean()
    return 0.5 * (loss_i + loss_t)


def global_batch_clip_loss(
    model: torch.nn.Module,
    pixels: torch.Tensor,
    tokens: torch.Tensor,
    positives: torch.Tensor,
    ctx: DistContext,
) -> torch.Tensor:
    """:func:`multi_positive_clip_loss` of the global batch: under torchrun every rank encodes its slice
    and the features are gathered (``positives`` is already the global matrix)."""
    return multi_positive_clip_loss(
        gather_with_grad(model.encode_image(pixels), ctx),
        gather_with_grad(model.encode_text(tokens), ctx),
        model.logit_scale,
        positives,
    )


def claim_positives(facts: list[frozenset], claims: list[frozenset]) -> torch.Tensor:
    """``[i, j]`` is True when every claim of text j is a fact of image i."""
    return torch.tensor([[c <= f for c in claims] for f in facts], dtype=torch.bool)


class CaptionStream(Dataset):
    """ToyBirds train images with one random caption each, for the indices ``start .. start+n-1``."""

    def __init__(self, data: DataSpec, start: int, count: int, preprocess, tokenizer, seed: int) -> None:
        self.data, self.start, self.count = data, start, count
        self.preprocess, self.tokenizer, self.seed = preprocess, tokenizer, seed

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str, frozenset, frozenset]:
        index = self.start + int(i)
        sample = toybirds.render_sample("train", index, seed=self.data.seed, image_size=self.data.image_size)
        caption = toybirds.random_caption(sample, np.random.default_rng([self.seed, index]))
        return self.preprocess(sample.image), caption.text, toybirds.sample_facts(sample), caption.claims

    def collate(self, items: list) -> tuple[torch.Tensor, torch.Tensor, list[frozenset], list[frozenset]]:
        """Pixels, caption tokens, and each image's facts and caption's claims (for the positives)."""
        pixels, texts, facts, claims = zip(*items, strict=True)
        return torch.stack(pixels), self.tokenizer(list(texts)), list(facts), list(claims)


def _epoch_loader(
    data: DataSpec,
    epoch: int,
    per_epoch: int,
    preprocess,
    tokenizer,
    config: ClipTrainConfig,
    ctx: DistContext | None = None,
) -> DataLoader:
    """The fresh images of one epoch, each with a random caption (this rank's slices under torchrun)."""
    stream = CaptionStream(data, epoch * per_epoch, per_epoch, preprocess, tokenizer, config.seed)
    return epoch_loader(stream, config.batch_size, config.seed, epoch, config.workers, stream.collate, ctx)


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
    """Contrastive training on freshly drawn train images; the report on the test split; saves a bundle.

    Under ``torchrun`` each process encodes its slice of every global batch and the contrastive loss is
    taken over the gathered global batch (see :mod:`core.distributed`); rank 0 alone writes.
    """
    if data.kind != "toybirds":
        raise ValueError("Training a CLIP from scratch needs captions; only --data toybirds provides them.")
    data.check_world()
    with distributed_run(config.device) as ctx:
        progress, log = main_rank_only(ctx, progress, log)
        return _train_clip(ctx, data, config, out_dir, resume, overwrite, progress, log)


def _train_clip(
    ctx: DistContext,
    data: DataSpec,
    config: ClipTrainConfig,
    out_dir: str | Path,
    resume: bool,
    overwrite: bool,
    progress: Progress,
    log,
) -> Path:
    out = prepare_output(out_dir, resume, overwrite)
    device = ctx.device
    mixed = MixedPrecision.resolve(config.precision, device)
    generator = seed_everything(config.seed)
    clip_config = get_toy_config(config.config_name)
    model, preprocess, tokenizer = build_clip(clip_config)
    model.to(device)
    trained = wrap_model(WithLoss(model, partial(global_batch_clip_loss, ctx=ctx)), ctx)
    backbone = Backbone(model, preprocess, tokenizer, {}, clip_config["preprocess_cfg"])
    per_epoch = data.train_per_class * len(toybirds.SPECIES)
    if per_epoch < config.batch_size:
        raise ValueError(
            f"An epoch of {per_epoch} images is smaller than the batch size {config.batch_size}; "
            "raise --train-per-class or lower --batch-size."
        )

    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    settings = {
        "data": data.to_dict(),
        "train": asdict(config) | {"device": None, "workers": None, "precision": None},
    }
    state = RunState(ctx, checkpoint_path(out), model, optimizer, generator, settings)
    start_epoch, history = state.restore(resume, log)
    steps_per_epoch = per_epoch // config.batch_size
    total = config.epochs * steps_per_epoch
    log(f"Streaming {per_epoch} fresh images per epoch, {config.epochs} epochs ({total} steps).")

    def step(batch):
        pixels, tokens, facts, claims = batch
        positives = claim_positives(gather_objects(facts, ctx), gather_objects(claims, ctx))
        with mixed.autocast():
            loss = trained(pixels.to(device), tokens.to(device), positives.to(device))
        return loss, {"loss": loss}  # the contrastive loss is already the global batch's

    started = time.perf_counter()
    history = run_epochs(
        state=state,
        mixed=mixed,
        epochs=range(start_epoch, config.epochs),
        steps_per_epoch=steps_per_epoch,
        lr=config.lr,
        warmup_steps=config.warmup_epochs * steps_per_epoch,
        batches=lambda epoch: _epoch_loader(data, epoch, per_epoch, preprocess, tokenizer, config, ctx),
        step=step,
        history=history,
        out=out,
        progress=progress,
        log=log,
    )
    seconds = time.perf_counter() - started
    if not ctx.is_main:
        return out  # rank 0 evaluates and writes the bundle

    model.eval()
    report = clip_report(backbone, data)
    log(
        f"zero-shot species accuracy {report['zero_shot_accuracy']:.3f}, linear probe "
        f"{report['linear_probe_accuracy']:.3f} (test split)"
    )
    bundle_config: dict[str, Any] = {
        "backbone": {"name": config.config_name, **clip_config},
        "data": data.to_dict(),
        "train": asdict(config)
        | {
            "precision": mixed.precision,
            "seconds": round(seconds, 1),
            "history": history,
            "images_seen": total * config.batch_size,
        },
        "classes": [s.name for s in toybirds.SPECIES],
        "metrics": report,
    }
    save_bundle(
        out,
        kind=KIND,
        config=bundle_config,
        weights=model.state_dict(),
        half=config.half,
        overwrite=overwrite,
    )
    state.path.unlink(missing_ok=True)
    return out
