"""Settings every training run shares, as data.

Free of PyTorch on purpose: the CLI reads its defaults from these dataclasses (and from each method's
``config`` module) without paying for importing torch.
"""

from __future__ import annotations

from argparse import Namespace
from dataclasses import dataclass, fields
from typing import Any, TypeVar

T = TypeVar("T")

PRECISIONS = ("auto", "bf16", "fp16", "fp32")


def from_args(cls: type[T], args: Namespace, **overrides: Any) -> T:
    """A ``cls`` dataclass from the parsed flags named like its fields (``--n-db`` fills ``n_db``); fields
    with no flag keep their defaults, ``overrides`` win. Lists become tuples where the default is one."""
    values: dict[str, Any] = {}
    for field in fields(cls):  # type: ignore[arg-type]
        if field.name in vars(args):
            value = getattr(args, field.name)
            as_tuple = isinstance(field.default, tuple) and value is not None
            values[field.name] = tuple(value) if as_tuple else value
    return cls(**(values | overrides))


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
