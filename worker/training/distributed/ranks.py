"""What a run asks of its process group: who it is, how much of a batch is its own, agreeing
on a stop, summing across ranks, and wrapping the model in DistributedDataParallel.

`SingleProcess` answers for a run without a group (one device): no collective, no wrapper, so
that path is exactly what it was before data parallel existed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from worker.training.distributed.sharding import share_sizes

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class SingleProcess:
    """The whole batch is this process's; nothing to agree on."""

    rank = 0
    world = 1
    # The rows each rank holds of the batch being trained (set by the loop per batch).
    sizes: list[int]

    def __init__(self) -> None:
        self.sizes = []

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def begin_batch(self, global_size: int) -> None:
        self.sizes = share_sizes(global_size, self.world)

    def loss_weight(self) -> float:
        """What this rank's mean loss is multiplied by before backward, so that DDP's average
        of the ranks' gradients is the gradient of the global batch's mean loss."""
        return 1.0

    def agree(self, flag: bool, device: torch.device) -> bool:
        """True if any rank says True."""
        return flag

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def gather_rows(self, local: torch.Tensor) -> torch.Tensor:
        """Every rank's rows of this batch, in rank order; only the local ones carry grad."""
        return local

    def wrap(
        self, loss: LossFunction, modules: list[torch.nn.Module]
    ) -> tuple[LossFunction, Callable[[], AbstractContextManager[None]]]:
        """The loss to call in the loop, and the context that holds back the gradient sync for
        accumulated batches."""
        return loss, contextlib.nullcontext

    def barrier(self) -> None:
        pass


class ProcessGroup(SingleProcess):
    """One rank of an initialised torch.distributed group."""

    def __init__(self) -> None:
        super().__init__()
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()

    def loss_weight(self) -> float:
        return self.world * self.sizes[self.rank] / sum(self.sizes)

    def agree(self, flag: bool, device: torch.device) -> bool:
        vote = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(vote, op=dist.ReduceOp.MAX)
        return bool(vote.item())

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(tensor)
        return tensor

    def gather_rows(self, local: torch.Tensor) -> torch.Tensor:
        # all_gather wants equal shapes: pad every share to the largest, trim after.
        longest = max(self.sizes)
        padded = local.new_zeros((longest, *local.shape[1:]))
        padded[: len(local)] = local.detach()
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded)
        pieces = [part[:size] for part, size in zip(parts, self.sizes, strict=True)]
        pieces[self.rank] = local  # the local rows keep their graph
        return torch.cat(pieces)

    def wrap(
        self, loss: LossFunction, modules: list[torch.nn.Module]
    ) -> tuple[LossFunction, Callable[[], AbstractContextManager[None]]]:
        model = DistributedDataParallel(
            LossModule(loss, modules),
            # A phase trains a subset (a head, adapters): what it leaves unused is not awaited.
            find_unused_parameters=True,
            forward_sync_buffers=False,
        )
        return model, model.no_sync

    def barrier(self) -> None:
        dist.barrier()


class LossModule(torch.nn.Module):
    """The method's loss as a module over the parameters it trains, for DDP to hook."""

    def __init__(self, loss: LossFunction, modules: list[torch.nn.Module]) -> None:
        super().__init__()
        self.parts = torch.nn.ModuleList(modules)
        self._loss = loss

    def forward(self, pixels: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return self._loss(pixels, rows)


def current_ranks() -> SingleProcess:
    """The group this process belongs to: one of several ranks, or a run of its own."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return ProcessGroup()
    return SingleProcess()
