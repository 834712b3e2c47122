"""Random-number state: seeding, and saving/restoring every stream a checkpoint needs for an exact resume."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, stage: str = "main", rank: int = 0) -> int:
    """The seed of an epoch's randomness (augmentations, worker seeds): ``(seed, epoch, stage)``, and the rank, so
    that DDP ranks draw independent augmentations (rank 0 keeps the single-process seed)."""
    base = seed * 1_000_003 + epoch + (500_000 if stage == "init" else 0)
    if rank == 0:
        return base
    return int(np.random.SeedSequence([base % 2**63, rank]).generate_state(1, np.uint64)[0] % 2**63)


def rng_state(device: torch.device | None = None) -> dict[str, Any]:
    """Every RNG state, as weights-only-loadable tensors and lists.

    Only the training device's CUDA stream is kept (not one per visible GPU), so a checkpoint resumes with any
    number of visible GPUs; a CPU run never touches CUDA (which would create a context on GPU 0 of a GPU node).
    """
    np_state = np.random.get_state()
    python = random.getstate()
    state = {
        "python": list(python[1]) + [python[2] if python[2] is not None else -1],
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "torch": torch.get_rng_state(),
    }
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict[str, Any], device: torch.device | None = None) -> None:
    python = [int(v) for v in state["python"]]
    random.setstate((3, tuple(python[:-1]), None if python[-1] < 0 else python[-1]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), int(state["numpy_pos"]), 0, 0.0))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is None or device is None or device.type != "cuda":
        return  # a GPU checkpoint resumed on CPU: the CPU streams above are all this run draws from
    if isinstance(cuda, (list, tuple)):  # checkpoints written before: one state per visible GPU
        index = device.index if device.index is not None else torch.cuda.current_device()
        if not cuda:
            return
        cuda = cuda[index] if index < len(cuda) else cuda[0]
    torch.cuda.set_rng_state(cuda, device)
