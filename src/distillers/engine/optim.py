"""The seed's optimiser and learning-rate schedule, and restoring an optimiser on resume."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distillers.errors import UserError

# Per-group settings that describe the kernels of the process that built the optimiser, not the run: a checkpoint
# written on a GPU (fused SGD) must not bring its kernel choice to a CPU resume.
KERNEL_FLAGS = ("fused", "foreach", "differentiable", "capturable")


@dataclass(frozen=True)
class StepSchedule:
    """The seed's step decay: ``lr * rate ** (number of decay epochs already passed)`` (1-based epochs)."""

    base_lr: float
    decay_epochs: tuple[int, ...] = ()
    decay_rate: float = 0.1

    def lr(self, epoch: int) -> float:
        return self.base_lr * self.decay_rate ** sum(epoch > milestone for milestone in self.decay_epochs)


def scaled_lr(base_lr: float, scaling: str, world_size: int) -> float:
    """``--lr-scaling linear``: the lr grows with the number of processes, as the global batch does (the batch size
    is per process); ``none`` keeps the given lr."""
    return base_lr * world_size if scaling == "linear" else base_lr


def sgd(parameters: Iterable[nn.Parameter], lr: float, momentum: float, weight_decay: float,
        device: torch.device) -> torch.optim.SGD:
    """The seed's SGD (momentum 0.9, weight decay 5e-4); the fused kernel on CUDA, torch's default elsewhere."""
    params = [p for p in parameters if p.requires_grad]
    kwargs: dict[str, Any] = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay}
    if device.type == "cuda":
        kwargs["fused"] = True
    return torch.optim.SGD(params, **kwargs)


def load_optimizer(optimizer: torch.optim.Optimizer, state: dict[str, Any] | None, source: Path | str) -> None:
    """Restore a resumed run's optimiser; a checkpoint written with other settings is a user error.

    Kernel flags stay those of this process, and momentum buffers take their parameter's memory layout (a
    channels-last checkpoint resumed without channels-last, or the reverse), so any device resumes any checkpoint.
    """
    own = [{key: group[key] for key in KERNEL_FLAGS if key in group} for group in optimizer.param_groups]
    refusal = UserError(f"{source} holds no optimiser state for this run (written with other settings?); resume with "
                        f"the original command, or start over with --overwrite")
    if state is None:
        raise refusal
    try:
        optimizer.load_state_dict(state)
    except (KeyError, ValueError) as error:
        raise refusal from error
    for group, flags in zip(optimizer.param_groups, own):
        for key in KERNEL_FLAGS:
            group.pop(key, None)
        group.update(flags)
        for param in group["params"]:
            buffer = optimizer.state.get(param, {}).get("momentum_buffer")
            if buffer is not None and buffer.stride() != param.stride():
                optimizer.state[param]["momentum_buffer"] = torch.empty_like(param).copy_(buffer)
