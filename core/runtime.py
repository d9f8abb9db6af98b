"""Run-time choices shared by training and inference: device and seeding."""

from __future__ import annotations

import contextlib
import random
from dataclasses import dataclass

import numpy as np
import torch

from core.settings import PRECISIONS


def resolve_device(name: str | None = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; any other name is passed to torch."""
    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"Unknown device '{name}'; use auto, cpu, cuda or mps.") from exc
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"Device '{name}' cannot run a model here; use auto, cpu, cuda or mps.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("CUDA was requested but no CUDA device is available here.")
    if device.type == "mps" and not _mps_available():
        raise ValueError(f"Device '{name}' was requested but Apple MPS is not available here.")
    return device


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; returns a torch generator for data order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def resolve_precision(name: str | None, device: torch.device) -> str:
    """``auto`` is bf16 on CUDA and fp32 elsewhere; fp16 needs CUDA (its loss scaling is a CUDA feature)."""
    name = name or "auto"
    if name not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, not {name!r}.")
    if name == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    if name == "fp16" and device.type != "cuda":
        raise ValueError(
            f"--precision fp16 needs a CUDA device (this run uses {device.type}); use bf16 or fp32."
        )
    return name


@dataclass
class MixedPrecision:
    """The precision of a training run's forward passes, with the loss scaling fp16 needs."""

    precision: str
    device: torch.device

    def __post_init__(self) -> None:
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    @classmethod
    def resolve(cls, name: str | None, device: torch.device) -> MixedPrecision:
        return cls(resolve_precision(name, device), device)

    def autocast(self):
        """The context of a forward pass and loss; fp32 runs exactly as without one."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    def backward_and_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """``loss.backward(); optimizer.step()``, through the loss scaler under fp16."""
        if not self.scaler.is_enabled():
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()
