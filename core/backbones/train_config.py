"""The toy CLIP's training run as data (free of PyTorch, so the CLI reads its defaults from here)."""

from __future__ import annotations

from dataclasses import dataclass

from core.settings import RunSettings


@dataclass
class ClipTrainConfig(RunSettings):
    """A ToyBirds CLIP run: one of ``core/backbones/configs`` trained from scratch on streamed images."""

    epochs: int = 20
    batch_size: int = 128
    lr: float = 5e-4
    config_name: str = "toyclip-s"
    weight_decay: float = 0.1
    warmup_epochs: int = 1
