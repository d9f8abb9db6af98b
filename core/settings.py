"""Settings every training run shares, as data.

Free of PyTorch on purpose: the CLI reads its defaults from these dataclasses (and from each method's
``config`` module) without paying for importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


@dataclass
class RunSettings:
    """The training-loop settings of every trainer (the CLI's ``run`` flags); subclasses set defaults."""

    epochs: int = 1
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    half: bool = False  # store weights as float16 in the bundle
    precision: str = "auto"  # of the forward pass: bf16 on CUDA, fp32 elsewhere (core.runtime)
    workers: int = 1  # DataLoader processes that render / load the images (0: the main process)
