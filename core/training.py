"""Pieces every training loop shares: the epoch loop, resumable checkpoints, batching, learning-rate schedule.

A run that writes the bundle ``OUT`` keeps its checkpoint next to it in ``OUT.ckpt`` (a file
saved with ``torch.save`` and read back with ``weights_only=True``, so no pickle code runs). The
checkpoint is removed once the bundle is written; ``--resume`` continues from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.utils.data

from core.atomic import write_file_atomic
from core.distributed import DistContext, RankSliceSampler, check_global_batch


def checkpoint_path(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    return out.with_name(out.name + ".ckpt")


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_file_atomic(path, lambda stream: torch.save(state, stream))


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint gets the same sentence
        raise ValueError(
            f"The checkpoint {path} cannot be read ({type(exc).__name__}); delete it to start over."
        ) from exc


def prepare_output(out_dir: str | Path, resume: bool, overwrite: bool) -> Path:
    """Check the output directory before hours of training, not after: a file or a folder that is not a
    bundle is never replaced, an existing bundle only with ``overwrite``."""
    from core.bundle import check_save_target

    out = Path(out_dir)
    check_save_target(out, overwrite=True)  # a file, a foreign folder: refused even with --overwrite
    if out.exists() and not overwrite:
        raise ValueError(f"{out} already exists; choose another --out or pass --overwrite.")
    if not resume and checkpoint_path(out).exists():
        raise ValueError(
            f"A checkpoint {checkpoint_path(out)} exists from an earlier run; pass --resume to "
            "continue it or delete it to start over."
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def batches(
    n: int, batch_size: int, generator: torch.Generator | None = None, drop_last: bool = False
) -> list[torch.Tensor]:
    """Index batches over ``range(n)``, shuffled when a generator is given."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    chunks = list(order.split(batch_size))
    if drop_last and len(chunks) > 1 and len(chunks[-1]) < batch_size:
        chunks.pop()
    return chunks


def epoch_loader(
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    seed: int,
    epoch: int,
    workers: int = 0,
    collate_fn=None,
    ctx: DistContext | None = None,
) -> torch.utils.data.DataLoader:
    """Shuffled batches of one epoch, ordered by a generator seeded from (seed, epoch), so a resumed
    run sees exactly the batches it would have seen; the last short batch is dropped when there
    is more than one batch.

    Under torchrun (``ctx`` with several processes) every rank shuffles the same way and loads only its
    contiguous slice of each global batch: the slices of all ranks are the one-process batch.
    """
    order = torch.Generator().manual_seed(seed * 100_003 + epoch)
    drop_last = len(dataset) > batch_size
    if ctx is None or not ctx.distributed:
        return torch.utils.data.DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=True,
            generator=order,
            drop_last=drop_last,
            num_workers=workers,
            collate_fn=collate_fn,
        )
    check_global_batch(ctx, batch_size, len(dataset))
    shuffled = torch.utils.data.RandomSampler(dataset, generator=order)
    global_batches = torch.utils.data.BatchSampler(shuffled, batch_size, drop_last)
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=RankSliceSampler(global_batches, ctx),
        generator=order,  # drawn from first, as the one-process loader does, so the order is the same
        num_workers=workers,
        collate_fn=collate_fn,
        pin_memory=ctx.device.type == "cuda",
    )


def cosine_lr(step: int, total: int, base_lr: float, warmup: int = 0) -> float:
    """Linear warm-up then cosine decay to zero."""
    if warmup and step < warmup:
        return base_lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * min(1.0, progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def save_training_state(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    epoch: int,
    history: list[dict],
    settings: dict,
) -> None:
    """Everything a resumable loop needs after ``epoch`` epochs, with the settings it ran under."""
    save_checkpoint(
        path,
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "generator": generator.get_state(),
            "epoch": epoch,
            "history": history,
            "settings": settings,
        },
    )


def restore_training_state(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    settings: dict,
    what: str = "settings",
) -> tuple[int, list[dict]]:
    """Continue from a checkpoint written by :func:`save_training_state`: (epochs done, history).

    No checkpoint gives (0, []). One written under other settings is refused, since continuing it
    would silently mix two different runs.
    """
    state = load_checkpoint(path)
    if state is None:
        return 0, []
    if state.get("settings") != settings:
        differences = _differences(state.get("settings"), settings)
        more = f"; {len(differences) - 3} more" if len(differences) > 3 else ""
        shown = "; ".join(differences[:3]) + more
        raise ValueError(
            f"The checkpoint {path} was written with a different {what} ({shown}); delete it or resume "
            "with the same settings."
        )
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    return int(state["epoch"]), [dict(row) for row in state["history"]]


def _differences(saved: Any, now: Any, where: str = "") -> list[str]:
    """Each setting that differs, as 'name (X in the checkpoint, Y now)'; nested sections joined by dots."""
    if isinstance(saved, dict) and isinstance(now, dict):
        return [
            difference
            for key in dict.fromkeys([*saved, *now])
            for difference in _differences(saved.get(key), now.get(key), f"{where}.{key}" if where else key)
        ]
    if saved == now:
        return []
    return [f"{where or 'settings'} ({saved!r} in the checkpoint, {now!r} now)"]


class NonFiniteError(ValueError):
    """Training produced NaN or infinity; the run stops and nothing is saved."""


def check_finite_loss(loss: torch.Tensor, epoch: int, step: int, out: Path) -> None:
    """Stop a run whose loss is NaN or infinite: every later step would only spread it into the weights."""
    if not bool(torch.isfinite(loss.detach()).all()):
        raise NonFiniteError(
            f"Training stopped at epoch {epoch + 1}, step {step + 1}: the loss became non-finite "
            f"({float(loss.detach()):g}), so {out} was not saved; lower --lr or the loss weights."
        )


def check_finite_weights(model: torch.nn.Module, out: Path) -> None:
    """Refuse to save a model with a NaN or infinite weight (the last step can break a model by itself)."""
    broken = [name for name, tensor in model.state_dict().items() if not bool(torch.isfinite(tensor).all())]
    if broken:
        raise NonFiniteError(
            f"Training made {len(broken)} weight tensors non-finite (e.g. '{broken[0]}'), so {out} was not "
            "saved; lower --lr or the loss weights."
        )


@dataclass
class RunState:
    """What a resumable run keeps in ``path`` after each epoch, under the ``settings`` it ran with: the model,
    the optimiser and the random generator. Rank 0 writes; every rank restores."""

    ctx: DistContext
    path: Path
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    settings: dict

    def restore(self, resume: bool, log: Callable[[str], None]) -> tuple[int, list[dict]]:
        """(epochs done, history): (0, []) for a fresh run; with ``resume``, what the checkpoint holds."""
        if not resume:
            return 0, []
        epoch, history = restore_training_state(
            self.path, self.model, self.optimizer, self.generator, self.settings
        )
        log(f"Resuming from {self.path} at epoch {epoch}.")
        return epoch, history

    def save(self, epochs_done: int, history: list[dict]) -> None:
        if self.ctx.is_main:
            save_training_state(
                self.path, self.model, self.optimizer, self.generator, epochs_done, history, self.settings
            )


def run_epochs(
    *,
    state: RunState,
    mixed: Any,
    epochs: range,
    steps_per_epoch: int,
    lr: float,
    warmup_steps: int,
    batches: Callable[[int], Iterable[Any]],
    step: Callable[[Any], tuple[torch.Tensor, dict[str, torch.Tensor]]],
    history: list[dict],
    out: Path,
    progress: Callable[[int, int], None],
    log: Callable[[str], None],
) -> list[dict]:
    """The epoch loop every trainer runs; returns ``history`` with one row of mean loss terms per epoch.

    Each step: the cosine learning rate (after ``warmup_steps`` linear steps), ``step(batch)`` (the forward
    pass under the caller's autocast; it returns the loss to back-propagate and the terms of the global
    batch to report, "total" among them if there are several), a stop on a non-finite loss, then the
    backward pass and optimiser step through ``mixed`` (a ``core.runtime.MixedPrecision``). After each
    epoch the weights are checked and ``state`` is saved to resume from.
    """
    model, optimizer = state.model, state.optimizer
    total_steps = epochs.stop * steps_per_epoch
    for epoch in epochs:
        model.train()
        sums: dict[str, float] = {}
        for index, batch in enumerate(batches(epoch)):
            global_step = epoch * steps_per_epoch + index
            set_lr(optimizer, cosine_lr(global_step, total_steps, lr, warmup_steps))
            loss, reported = step(batch)
            check_finite_loss(reported.get("total", loss), epoch, index, out)
            optimizer.zero_grad(set_to_none=True)
            mixed.backward_and_step(loss, optimizer)
            for name, value in reported.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            progress(global_step + 1, total_steps)
        history.append({name: value / max(1, steps_per_epoch) for name, value in sums.items()})
        log(f"epoch {epoch + 1}/{epochs.stop} " + " ".join(f"{k}={v:.4f}" for k, v in history[-1].items()))
        check_finite_weights(model, out)  # the checkpoint always holds a usable model
        state.save(epoch + 1, history)
    return history
