"""Run-time choices shared by training and inference: device and seeding."""

from __future__ import annotations

import random

import numpy as np
import torch


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
