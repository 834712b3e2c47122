"""Resume: where a checkpoint says a run stood, and putting its state back (one path for every stateful part)."""

from __future__ import annotations

from typing import Any

from torch import nn

from distillers.engine.checkpoint import load_weights
from distillers.engine.distributed import DistInfo
from distillers.engine.trainer import Progress
from distillers.errors import UserError


def resume_step(checkpoint: dict[str, Any], world_size: int, batch_size: int) -> int:
    """The per-process steps of the interrupted epoch to skip when resuming with ``world_size`` x ``batch_size``.

    A checkpoint counts its own world's steps. The epoch's order is global and strided over ranks, so the first
    ``s`` steps of every rank are the first ``s * batch * world`` samples of that order: converted through that
    number, a 2-process checkpoint resumes in 1 process (or with another batch size). When it is not a multiple of
    the new global batch, the samples of the incomplete last global batch are trained again (at most one batch).
    """
    step = int(checkpoint.get("step_in_epoch") or 0)
    saved_world = int(checkpoint.get("world_size") or 1)
    saved_batch = int(checkpoint.get("batch_size") or batch_size)
    if not step or (saved_world, saved_batch) == (world_size, batch_size):
        return step
    consumed = int(checkpoint.get("samples_in_epoch") or step * saved_batch * saved_world)
    return consumed // (batch_size * world_size)


def progress_from(checkpoint: dict[str, Any] | None, stage: str, node: DistInfo | None = None,
                  batch_size: int | None = None) -> Progress | None:
    """The Progress to continue ``stage`` from, or None when the checkpoint belongs to another stage.

    ``node`` and ``batch_size`` describe this run's processes (default: one process, the checkpoint's batch). The
    RNG states of a mid-epoch stop are restored only for the same world and batch size (then the rest of the epoch
    is replayed exactly); otherwise the epoch continues from fresh per-epoch seeds. At an epoch boundary nothing
    else is restored: every epoch reseeds from ``(seed, epoch)``.
    """
    if checkpoint is None or checkpoint.get("stage", "main") != stage:
        return None
    node = node or DistInfo()
    batch_size = batch_size or int(checkpoint.get("batch_size") or 1)
    saved = int(checkpoint.get("world_size") or 1), int(checkpoint.get("batch_size") or batch_size)
    step = resume_step(checkpoint, node.world_size, batch_size)
    rng = None
    if step and saved == (node.world_size, batch_size):
        per_rank = checkpoint.get("rng_per_rank")
        rng = per_rank[node.rank] if per_rank is not None else checkpoint.get("rng")
    return Progress(stage=stage, epoch=int(checkpoint.get("epoch") or 0), step=step,
                    best_acc=float(checkpoint.get("best_acc") or 0.0),
                    best_epoch=int(checkpoint.get("best_epoch") or 0), partial=checkpoint.get("partial"),
                    partial_terms=checkpoint.get("partial_terms"), rng=rng)


def restore_modules(checkpoint: dict[str, Any], modules: dict[str, nn.Module], source: str, arch: str) -> None:
    """Load each checkpoint key into its module. ``model`` is the run's model (a mismatch names the keys that
    differ); every other key is a part of the run's state (method, teacher statistics, probe head)."""
    for key, module in modules.items():
        if key == "model":
            load_weights(module, checkpoint.get("model", {}), source, arch)
            continue
        try:
            module.load_state_dict(checkpoint[key])
        except (KeyError, RuntimeError) as error:
            raise UserError(f"{source} does not hold the {key} of this run ({type(module).__name__}); resume with "
                            f"the settings it was started with, or start again with --overwrite") from error
