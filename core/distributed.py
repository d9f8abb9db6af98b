"""Several processes, one run: ``torchrun`` and ``torch.distributed``, nothing home-made.

``python -m core train ...`` runs one process (world size 1) and never touches ``torch.distributed``:
its results are bit-for-bit those of a build without this module. ``torchrun --nproc_per_node N -m core
train ...`` starts N processes; :func:`distributed_run` sees torchrun's ``WORLD_SIZE``/``RANK``/
``LOCAL_RANK`` variables, joins the process group (NCCL on CUDA, gloo on the CPU) and gives each process
its device (``cuda:LOCAL_RANK`` on CUDA).

Training keeps the one-process meaning of a batch: every rank draws the same shuffled *global* batch
(the same seeded order) and takes its contiguous slice of ``batch_size / N`` items, so the N slices
together are exactly the batch one process would have used. Gradients are averaged by
:class:`~torch.nn.parallel.DistributedDataParallel`; losses that compare items across the batch (CLIP's
contrastive loss, BatchNorm's batch statistics) gather the slices first with :func:`gather_with_grad`,
so the loss and its gradient are those of the global batch. Only rank 0 writes files and draws progress.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.utils.data

from core.progress import Progress, no_progress
from core.runtime import resolve_device


@dataclass(frozen=True)
class DistContext:
    """This process's place in the run: rank among ``world_size`` processes and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes checkpoints, bundles and manifests, and draws progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_world_size() -> int:
    """Processes torchrun started for this run (1 under plain ``python``)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def is_main_process() -> bool:
    """Rank 0 of a torchrun run, or the one process of a plain run."""
    return os.environ.get("RANK", "0") == "0"


@contextmanager
def distributed_run(device: str | None = "auto", timeout: timedelta | None = None) -> Iterator[DistContext]:
    """The :class:`DistContext` of this process, with the process group joined for the ``with`` block.

    World size 1 resolves the device as a one-process run always has and starts no process group. Under
    torchrun the group is joined (or reused, when the caller already joined one) and left again on exit;
    ``timeout`` bounds how long a collective (a barrier) waits for the slowest rank (torch's default: 30 min).
    """
    world = launched_world_size()
    if world == 1:
        yield DistContext(device=resolve_device(device))
        return
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    chosen = resolve_device(device)
    if chosen.type == "cuda":
        chosen = torch.device("cuda", local_rank)
        torch.cuda.set_device(chosen)
    elif chosen.type == "mps":
        raise ValueError("torchrun with several processes needs CUDA or the CPU; MPS has no process group.")
    joined_here = not dist.is_initialized()
    if joined_here:
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo", timeout=timeout)
    try:
        yield DistContext(rank=rank, world_size=world, local_rank=local_rank, device=chosen)
    finally:
        if joined_here and dist.is_initialized():
            dist.destroy_process_group()


def main_rank_only(ctx: DistContext, progress: Progress, log: Callable[[str], None]):
    """``(progress, log)`` as given on rank 0 and silent on the others: one bar and one log per run."""
    return (progress, log) if ctx.is_main else (no_progress, _silent)


def _silent(*_args) -> None:
    pass


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def check_global_batch(ctx: DistContext, batch_size: int, n_items: int) -> None:
    """Every global batch must split into equal slices, one per process."""
    smallest = min(batch_size, n_items)
    if ctx.distributed and (batch_size % ctx.world_size or smallest % ctx.world_size):
        raise ValueError(
            f"The batch of {smallest} images does not split evenly over {ctx.world_size} processes; "
            "choose a --batch-size (and data size) divisible by the number of processes."
        )


def rank_slice(ctx: DistContext, n: int) -> slice:
    """This rank's contiguous share of a global batch of ``n`` items (all of it in one process)."""
    share = n // ctx.world_size
    return slice(ctx.rank * share, (ctx.rank + 1) * share)


class RankSliceSampler(torch.utils.data.Sampler):
    """This rank's contiguous slice of every batch of ``batches`` (a batch sampler of global batches)."""

    def __init__(self, batches: torch.utils.data.BatchSampler, ctx: DistContext) -> None:
        self.batches, self.ctx = batches, ctx

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            yield batch[rank_slice(self.ctx, len(batch))]


class _GatherWithGrad(torch.autograd.Function):
    """All ranks' tensors concatenated in rank order; the gradient of each rank's part is summed over
    ranks (every rank computes the global loss), which gloo can do with an all-reduce."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        world, rank = dist.get_world_size(), dist.get_rank()
        parts = [torch.empty_like(tensor) for _ in range(world)]
        dist.all_gather(parts, tensor.contiguous())
        ctx.rows = (rank * tensor.shape[0], (rank + 1) * tensor.shape[0])
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rows[0] : ctx.rows[1]]


def gather_with_grad(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """The global batch of ``tensor`` (rows of every rank, in rank order); identity in one process."""
    return _GatherWithGrad.apply(tensor) if ctx.distributed else tensor


def gather_objects(items: list[Any], ctx: DistContext) -> list[Any]:
    """Every rank's list, concatenated in rank order (small Python objects); identity in one process."""
    if not ctx.distributed:
        return items
    parts: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in part]


def mean_over_ranks(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """The mean of a tensor over ranks (per-rank batch means -> global batch mean); identity in one."""
    if not ctx.distributed:
        return values
    values = values.detach().clone()
    dist.all_reduce(values)
    return values / ctx.world_size


class GlobalBatchNorm1d(torch.nn.BatchNorm1d):
    """BatchNorm1d whose training statistics are those of the global batch (gathered with gradient).

    ``SyncBatchNorm`` does this on GPUs only; this one works with gloo on the CPU too. Same parameters and
    buffers as BatchNorm1d, so state dicts and bundles are unchanged.
    """

    ctx: DistContext = DistContext()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.ctx.distributed):
            return super().forward(x)
        everything = gather_with_grad(x, self.ctx)
        mean = everything.mean(dim=0)
        var = everything.var(dim=0, unbiased=False)
        with torch.no_grad():
            n = everything.shape[0]
            momentum = self.momentum if self.momentum is not None else 0.1
            self.running_mean.mul_(1 - momentum).add_(momentum * mean)
            self.running_var.mul_(1 - momentum).add_(momentum * var * n / max(1, n - 1))
            self.num_batches_tracked.add_(1)
        normalised = (x - mean) / torch.sqrt(var + self.eps)
        return normalised * self.weight + self.bias if self.affine else normalised


def global_batchnorm(model: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """Make every BatchNorm1d of ``model`` use global-batch statistics (in place; nothing in one process)."""
    if ctx.distributed:
        for module in model.modules():
            if type(module) is torch.nn.BatchNorm1d:
                module.__class__ = GlobalBatchNorm1d
                module.ctx = ctx
    return model


class WithLoss(torch.nn.Module):
    """``model`` whose forward is the training loss ``loss(model, *inputs)``.

    DistributedDataParallel must see every parameter the loss uses come out of one forward (class
    centres, the logit scale); in one process this computes exactly what ``loss(model, ...)`` does.
    """

    def __init__(self, model: torch.nn.Module, loss: Callable[..., Any]) -> None:
        super().__init__()
        self.model, self.loss = model, loss

    def forward(self, *inputs: Any) -> Any:
        return self.loss(self.model, *inputs)


def wrap_model(model: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` under torchrun; ``model`` itself in one process."""
    if not ctx.distributed:
        return model
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=False)
