"""What every task does the same way: run directories, loaders, optimisers, resume, the closing summary."""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from distillers.config import RunConfig
from distillers.engine.checkpoint import load_checkpoint, remove_stale_temporaries
from distillers.engine.logging import RunLogger
from distillers.engine.sampler import EpochSampler
from distillers.engine.trainer import Interrupted, NonFiniteLoss, Progress, StepSchedule, Trainer, resolve_device
from distillers.errors import UserError
from distillers.rundir import CONFIG, LAST, SUMMARY, write_json_atomic


def prepare_run_dir(cfg: RunConfig, name: str) -> Path:
    """Create (or reopen, with --resume) the run directory; never clobber another run's files silently."""
    run_dir = Path(cfg.out) / name
    occupied = run_dir.exists() and any(run_dir.iterdir())
    if cfg.resume:
        if not (run_dir / LAST).exists():
            again = "start it again with --overwrite" if occupied else "drop --resume to start a new run"
            raise UserError(f"nothing to resume: {run_dir / LAST} does not exist (the run stopped before its first "
                            f"checkpoint); {again}")
        remove_stale_temporaries(run_dir)  # half-written checkpoints of a killed process
        return run_dir
    if occupied:
        if not cfg.overwrite:
            raise UserError(f"run directory {run_dir} already holds a run; pass --resume to continue it, "
                            f"--overwrite to replace it, or --trial/--name to start another")
        shutil.rmtree(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise UserError(f"cannot write the run directory {run_dir}: {error.strerror}; choose another --out") from error
    return run_dir


def make_loader(dataset: Dataset, batch_size: int, train: bool, workers: int, seed: int,
                device: torch.device, rank: int = 0, world_size: int = 1) -> DataLoader:
    """A DataLoader whose order depends only on (seed, epoch), so resume is exact and DDP shards it."""
    sampler = EpochSampler(len(dataset), shuffle=train, seed=seed, rank=rank, world_size=world_size)
    # Training workers start afresh every epoch: each is then seeded from the torch RNG the engine has just
    # reseeded from (seed, epoch), so augmentations too depend only on (seed, epoch) and a resumed run matches an
    # uninterrupted one. Persistent workers would keep the streams of the process's first epoch (the cost of a
    # restart is a fork per worker and epoch). Test-time transforms draw nothing, so those workers persist.
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=device.type == "cuda", persistent_workers=workers > 0 and not train, drop_last=False)


def sgd(parameters: Iterable[nn.Parameter], cfg: RunConfig, lr: float, device: torch.device) -> torch.optim.SGD:
    """The seed's SGD (momentum 0.9, weight decay 5e-4); foreach/fused kernels where they exist."""
    params = [p for p in parameters if p.requires_grad]
    kwargs: dict[str, Any] = {"lr": lr, "momentum": cfg.momentum, "weight_decay": cfg.weight_decay}
    if device.type == "cuda":
        kwargs["fused"] = True
    return torch.optim.SGD(params, **kwargs)


def read_resume(run_dir: Path) -> dict[str, Any]:
    return load_checkpoint(run_dir / LAST)


def load_optimizer(optimizer: torch.optim.Optimizer, checkpoint: dict[str, Any], run_dir: Path) -> None:
    """Restore the optimiser of a resumed run; a checkpoint written with other settings is a user error."""
    try:
        optimizer.load_state_dict(checkpoint["optimizer"])
    except (KeyError, ValueError) as error:
        raise UserError(f"{run_dir / LAST} holds no optimiser state for this run (written with other settings?); "
                        f"resume with the original command, or start over with --overwrite") from error


def progress_from(checkpoint: dict[str, Any] | None, stage: str) -> Progress | None:
    """The Progress to continue ``stage`` from, or None when the checkpoint belongs to another stage."""
    if checkpoint is None or checkpoint.get("stage", "main") != stage:
        return None
    step = int(checkpoint.get("step_in_epoch") or 0)
    return Progress(stage=stage, epoch=int(checkpoint.get("epoch") or 0), step=step,
                    best_acc=float(checkpoint.get("best_acc") or 0.0),
                    best_epoch=int(checkpoint.get("best_epoch") or 0), partial=checkpoint.get("partial"),
                    partial_terms=checkpoint.get("partial_terms"), rng=checkpoint.get("rng") if step else None)


@dataclass
class Launch:
    """Everything a task hands to ``run_stages``."""

    cfg: RunConfig
    run_dir: Path
    device: torch.device
    logger: RunLogger
    resume: dict[str, Any] | None


def start(cfg: RunConfig, name: str, config_extra: dict[str, Any],
          check_resume: Callable[[dict[str, Any], str], None] | None = None) -> Launch:
    """Validate, open the run directory, write config.json, and load the resume checkpoint if any.

    ``check_resume(checkpoint, path)`` vets a resume checkpoint (raising UserError) before anything is written.
    """
    cfg.validate()
    device = resolve_device(cfg.device)
    run_dir = prepare_run_dir(cfg, name)
    resume = read_resume(run_dir) if cfg.resume else None
    if resume is not None and check_resume is not None:
        check_resume(resume, str(run_dir / LAST))
    logger = RunLogger(run_dir)
    if resume is None:
        write_json_atomic(run_dir / CONFIG, {**cfg.to_dict(), **config_extra, "name": name,
                                             "torch": torch.__version__, "device_name": device_name(device)})
        logger.summary(status="running", epochs=cfg.epochs, started=time.time())
    else:
        stage, epoch = resume.get("stage", "main"), int(resume.get("epoch") or 0)
        # Records written after the checkpoint (an epoch whose save was cut short) are redone by this run.
        logger.truncate_after(stage, epoch)
        logger.summary(status="running", reason=None)
        step = int(resume.get("step_in_epoch") or 0)
        logger.info(f"resuming {run_dir} from {stage} epoch {epoch}" + (f", step {step} of epoch {epoch + 1}"
                                                                         if step else ""))
    return Launch(cfg, run_dir, device, logger, resume)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


def run_guarded(launch: Launch, body: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run a task body; record interruption/failure in summary.json and print the one-line summary."""
    started = time.perf_counter()
    logger = launch.logger
    try:
        result = body()
    except Interrupted as signal_name:
        _record_end(logger, status="interrupted", reason=f"stopped by {signal_name}")
        raise UserError(f"interrupted by {signal_name}; checkpoint saved in {launch.run_dir / LAST}; resume with "
                        f"the same command plus --resume") from None
    except BaseException as error:
        if isinstance(error, KeyboardInterrupt):  # a second signal: stopped at once, last.pt is the previous one
            _record_end(logger, status="interrupted", reason="stopped by a second signal")
        elif isinstance(error, NonFiniteLoss):  # the engine already recorded where the loss broke
            _record_end(logger)
        else:
            reason = str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
            _record_end(logger, status="failed", reason=reason)
        raise
    wall = time.perf_counter() - started
    summary = logger.summary(status="finished", wall_time_s=round(wall, 1), **result)
    logger.close()
    return summary


def _record_end(logger: RunLogger, **values: Any) -> None:
    """Record how a run ended in summary.json when the disk allows (a full disk must not hide the real error)."""
    try:
        if values:
            logger.summary(**values)
    except (OSError, UserError):
        pass
    logger.close()


def finish_line(task: str, run_dir: Path, summary: dict[str, Any]) -> str:
    last, best = summary.get("last_acc"), summary.get("best_acc")
    text = f"{task} finished: last top-1 {last:.2f}% best {best:.2f}% (epoch {summary.get('best_epoch')})" \
        if last is not None else f"{task} finished"
    return f"{text} in {summary.get('wall_time_s', 0):.0f}s -> {run_dir}"


def stage_result(progress: Progress, run_dir: Path) -> dict[str, Any]:
    """The numbers summary.json records for the main stage."""
    from distillers.rundir import read_metrics

    main = [r for r in read_metrics(run_dir) if r.get("stage", "main") == "main"]
    last = main[-1] if main else {}
    return {"epochs_done": progress.epoch, "last_acc": last.get("test_acc"), "last_acc_top5": last.get("test_acc_top5"),
            "best_acc": progress.best_acc, "best_epoch": progress.best_epoch}


def print_line(text: str) -> None:
    print(text, file=sys.stdout, flush=True)
