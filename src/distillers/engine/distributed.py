"""Multi-GPU / multi-node training on torch.distributed, launched by ``torchrun`` (no process management of ours).

``torchrun --nproc_per_node=N -m distillers <command> ...`` sets RANK, WORLD_SIZE and LOCAL_RANK; ``setup`` joins
the process group (NCCL on GPUs, gloo on CPU). Helpers here are no-ops in a single process, so methods can call
them unconditionally (CRD's memory bank and RRD's queue gather every rank's samples through them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str) -> tuple[DistInfo, str]:
    """Join the process group when launched by torchrun; returns the rank facts and the device to use."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    return DistInfo(rank, world_size, local_rank), device if use_cuda else "cpu"


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_gather(tensor: Tensor) -> Tensor:
    """Concatenate every rank's ``tensor`` along dim 0, in rank order (no gradient); itself in one process."""
    if world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def all_mean(tensor: Tensor) -> Tensor:
    """The mean of ``tensor`` over ranks (no gradient); itself in one process."""
    if world_size() == 1:
        return tensor
    total = tensor.detach().clone()
    dist.all_reduce(total)
    return total / world_size()


def all_sum(tensor: Tensor) -> Tensor:
    """Element-wise sum over ranks (a copy); itself in one process."""
    if world_size() == 1:
        return tensor
    total = tensor.detach().clone()
    dist.all_reduce(total)
    return total


def average_batchnorm_stats(model: nn.Module) -> None:
    """Average BatchNorm running statistics over ranks, so every rank evaluates and saves the same model."""
    if world_size() == 1:
        return
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            for buffer in (module.running_mean, module.running_var):
                if buffer is not None:
                    buffer.copy_(all_mean(buffer))
