"""Multi-GPU / multi-node training on torch.distributed, launched by ``torchrun`` (no process management of ours).

``torchrun --nproc_per_node=N -m distillers <command> ...`` sets RANK, WORLD_SIZE and LOCAL_RANK; ``launched``
joins the process group (NCCL on GPUs, gloo on CPU) for the length of a task. Every helper here is a no-op in a
single process, so methods call them unconditionally (CRD's memory bank and RRD's queue gather every rank's
samples through them) and the engine reads the same with or without DDP. See ``docs/distributed.md``.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from distillers.errors import UserError

T = TypeVar("T")
# How long a collective may wait (torch's default is 10 minutes). Rank 0 downloads a dataset inside ``in_turn``
# while the others wait at a barrier: a 2.6 GB STL-10 on a slow link needs more. DISTILLERS_DIST_TIMEOUT (seconds).
DEFAULT_TIMEOUT_S = 3 * 3600
_owned = False  # whether ``setup`` created the process group (and ``teardown`` may destroy it)
_generation = 0  # process groups ``setup`` created so far in this process (each gets its own store keys)


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str) -> tuple[DistInfo, str]:
    """Join the process group when launched by torchrun; returns the rank facts and the device to use.

    On GPUs every process takes ``cuda:LOCAL_RANK`` whatever ``device`` says (one GPU per process).
    """
    global _owned
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local_rank} has no GPU (this node has {torch.cuda.device_count()}); start "
                            f"at most that many processes per node (torchrun --nproc_per_node)")
        torch.cuda.set_device(local_rank)  # before NCCL starts, so each process talks through its own GPU
    if not dist.is_initialized():
        # torchrun's rendezvous (env://), with the keys of each group under their own prefix: a process that runs
        # several tasks (a script calling train_teacher, then distill) joins a fresh group for each, and must not
        # read the addresses its peers published for the previous one.
        global _generation
        _generation += 1
        store, _, _ = next(dist.rendezvous("env://"))
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", rank=rank, world_size=world,
                                store=dist.PrefixStore(f"distillers/{_generation}", store), timeout=timeout())
        _owned = True
    return DistInfo(rank, world, local_rank), f"cuda:{local_rank}" if use_cuda else "cpu"


def timeout() -> datetime.timedelta:
    """The process group's collective timeout: ``DISTILLERS_DIST_TIMEOUT`` seconds, else ``DEFAULT_TIMEOUT_S``."""
    text = os.environ.get("DISTILLERS_DIST_TIMEOUT", "").strip()
    try:
        seconds = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise UserError(f"DISTILLERS_DIST_TIMEOUT must be a positive number of seconds, got {text!r}")
    return datetime.timedelta(seconds=seconds)


def teardown() -> None:
    """Leave the process group, if ``setup`` joined it (a group the caller created is the caller's to close)."""
    global _owned
    if _owned and dist.is_initialized():
        dist.destroy_process_group()
    _owned = False


@contextlib.contextmanager
def launched(device: str) -> Iterator[tuple[DistInfo, str]]:
    """``setup`` for the length of a task, ``teardown`` after it, also when it fails."""
    try:
        yield setup(device)
    finally:
        teardown()


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if world_size() > 1 else 0


def current() -> DistInfo:
    """This process's rank facts (the single-process defaults outside a process group)."""
    if world_size() == 1:
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


# ---- collectives (identity in one process) -------------------------------------------------------------------
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


def all_max(tensor: Tensor) -> Tensor:
    """Element-wise maximum over ranks (a copy); itself in one process."""
    if world_size() == 1:
        return tensor
    total = tensor.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.MAX)
    return total


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def broadcast_object(value: T) -> T:
    """Rank 0's ``value`` on every rank (pickled: for small things and one-off checkpoints, not per step)."""
    if world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    if world_size() == 1:
        return [value]
    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


def on_main(action: Callable[[], T]) -> T:
    """Run ``action`` on rank 0 only and hand its result to every rank; a UserError it raises is raised on every
    rank with the same text, so no rank is left waiting for one that failed (e.g. preparing the run directory)."""
    if world_size() == 1:
        return action()
    outcome: tuple[str, Any] = ("ok", None)
    error: BaseException | None = None
    if rank() == 0:
        try:
            outcome = ("ok", action())
        except UserError as caught:
            outcome, error = ("user", str(caught)), caught
        except Exception as caught:  # say so on the other ranks too, then raise the real error on rank 0
            outcome, error = ("crash", f"{type(caught).__name__}: {caught}"), caught
    kind, value = broadcast_object(outcome)
    if error is not None:
        raise error
    if kind == "user":
        raise UserError(value)
    if kind == "crash":
        raise RuntimeError(f"rank 0 failed: {value}")
    return value


def in_turn(action: Callable[[], T]) -> T:
    """Run ``action`` on rank 0 first, then on the first process of every other node, then on the rest.

    For work that writes a shared folder (a dataset download): the first process does it, the others then find
    the files (or, on a node with its own disk, its first process downloads them once). Every rank takes part in
    every barrier even when its own turn failed, so a failure never leaves the others waiting; it is raised after.
    """
    if world_size() == 1:
        return action()
    info = current()
    turn = 0 if info.rank == 0 else 1 if info.local_rank == 0 else 2
    result: Any = None
    error: BaseException | None = None
    for phase in range(3):
        if phase == turn:
            try:
                result = action()
            except Exception as caught:
                error = caught
        barrier()
    if error is not None:
        raise error
    return result


# ---- models --------------------------------------------------------------------------------------------------
def wrap(module: nn.Module, device: torch.device, find_unused_parameters: bool = False) -> nn.Module:
    """``DistributedDataParallel`` for training: gradients averaged over ranks in the backward.

    Buffers are synchronised once, at construction (every rank starts from rank 0's), never in the forward:
    methods keep their own buffers identical across ranks (CRD's bank, RRD's queue: all-gathered updates) and
    BatchNorm statistics are averaged once per epoch (``average_batchnorm_stats``), instead of copying rank 0's
    buffers over every rank at every step (CRD's bank is 50000 x 128 x 2 floats).
    """
    device_ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    options: dict[str, Any] = {"device_ids": device_ids, "find_unused_parameters": find_unused_parameters}
    if "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel).parameters:
        options["forward_sync_buffers"] = False  # newer torch: still syncs at init, which is what we want
    else:
        options["broadcast_buffers"] = False
    return nn.parallel.DistributedDataParallel(module, **options)


def average_batchnorm_stats(model: nn.Module) -> None:
    """Average the running statistics of the BatchNorm layers that trained (train mode) over ranks, so every rank
    evaluates and saves the same model. Frozen ones (the teacher's, in eval mode) and SyncBatchNorm layers (global
    statistics) are identical already."""
    if world_size() == 1:
        return
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, nn.SyncBatchNorm) \
                and module.track_running_stats and module.training:
            for buffer in (module.running_mean, module.running_var):
                if buffer is not None:
                    buffer.copy_(all_mean(buffer))


def check_sync_batchnorm(device: torch.device) -> None:
    """Refuse ``--sync-bn`` where this torch cannot synchronise BatchNorm (it supports CUDA, and CPU in no version
    we know of): a tiny SyncBatchNorm forward on every rank either works or raises before communicating."""
    if world_size() == 1:
        return
    probe = nn.SyncBatchNorm(1).to(device).train()
    try:
        probe(torch.zeros(2, 1, device=device))
    except ValueError as error:
        raise UserError(f"--sync-bn is not supported on {device.type} by torch {torch.__version__} ({error}); "
                        f"drop --sync-bn (each process then normalises over its own batch) or train on GPUs") \
            from None


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """BatchNorm over the global batch: the layers become ``SyncBatchNorm`` in place (same parameters, buffers and
    state-dict keys, so checkpoints stay RepDistiller-compatible); the model itself is returned."""
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)
