"""What every task does the same way: processes, run directories, loaders, optimisers, resume, the summary.

Every task runs the same code in every process torchrun starts (``docs/distributed.md``): all ranks validate the
same inputs (so a bad flag fails alike everywhere), rank 0 alone prepares and writes the run directory, and every
rank reads its shard of the data.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from distillers.config import RunConfig
from distillers.engine import distributed
from distillers.engine.checkpoint import load_checkpoint, remove_stale_temporaries
from distillers.engine.distributed import DistInfo
from distillers.engine.logging import RunLogger
from distillers.engine.sampler import EpochSampler
from distillers.engine.trainer import Interrupted, NonFiniteLoss, Progress, resolve_device
from distillers.errors import UserError
from distillers.rundir import CONFIG, LAST, write_json_atomic


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


@contextlib.contextmanager
def process_group(device: str) -> Iterator[tuple[DistInfo, torch.device]]:
    """This process's place among the processes torchrun started (one process: rank 0 of 1) and its device, for
    the length of a task; the process group is left at the end, also on errors."""
    with distributed.launched(str(resolve_device(device))) as (node, name):
        yield node, torch.device(name)


def read_data(cfg: RunConfig, **options: Any) -> Any:
    """``load_datasets`` for the run; with ``--download`` one process fetches first and the others then find the
    files, instead of every process writing the same folder at once."""
    from distillers.data import load_datasets

    def read() -> Any:
        return load_datasets(cfg.dataset, cfg.data_dir, download=cfg.download, **options)

    return distributed.in_turn(read) if cfg.download else read()


def scaled_lr(cfg: RunConfig, base_lr: float, world_size: int) -> float:
    """``--lr-scaling linear``: the lr grows with the number of processes, as the global batch does (the batch size
    is per process); ``none`` keeps the given lr."""
    return base_lr * world_size if cfg.lr_scaling == "linear" else base_lr


def run_facts(cfg: RunConfig, node: DistInfo, base_lr: float, lr: float) -> dict[str, Any]:
    """What config.json records about the processes: world size, global batch, the lr given and the lr used."""
    return {"lr": base_lr, "effective_lr": lr, "world_size": node.world_size,
            "global_batch_size": cfg.batch_size * node.world_size}


def sync_batchnorm(model: nn.Module, cfg: RunConfig, device: torch.device) -> nn.Module:
    """``--sync-bn``: BatchNorm statistics over the global batch under DDP (refused where torch cannot do it); in
    one process the model is left as it is (the flag changes nothing there)."""
    if not cfg.sync_bn or distributed.world_size() == 1:
        return model
    distributed.check_sync_batchnorm(device)
    return distributed.convert_sync_batchnorm(model)


def make_loader(dataset: Dataset, batch_size: int, train: bool, workers: int, seed: int,
                device: torch.device, rank: int = 0, world_size: int = 1) -> DataLoader:
    """A DataLoader whose order depends only on (seed, epoch), so resume is exact and DDP shards it.

    Training shards are padded to equal length (every rank must take the same number of steps); evaluation shards
    (``train=False``) are not: rank ``r`` takes images ``r, r + w, ...``, so each test image is scored once.
    """
    sampler: Iterable[int]
    if train:
        sampler = EpochSampler(len(dataset), shuffle=True, seed=seed, rank=rank, world_size=world_size)
    else:
        sampler = range(rank, len(dataset), world_size)
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
    is replayed exactly); otherwise the epoch continues from fresh per-epoch seeds.
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


@dataclass
class Launch:
    """Everything a task hands to ``run_stages``."""

    cfg: RunConfig
    run_dir: Path
    device: torch.device
    logger: RunLogger
    resume: dict[str, Any] | None
    node: DistInfo = DistInfo()


def start(cfg: RunConfig, name: str, config_extra: dict[str, Any],
          check_resume: Callable[[dict[str, Any], str], None] | None = None, node: DistInfo | None = None,
          device: torch.device | None = None) -> Launch:
    """Validate, open the run directory, write config.json, and load the resume checkpoint if any.

    ``check_resume(checkpoint, path)`` vets a resume checkpoint (raising UserError) before anything is written.
    Under DDP (``node``) rank 0 alone prepares the run directory and reads the checkpoint, then hands it (or its
    error) to every rank: the other ranks never touch the run directory, which need not even exist on their node.
    """
    cfg.validate()
    node = node or DistInfo()
    device = device or resolve_device(cfg.device)

    def open_run() -> tuple[Path, dict[str, Any] | None]:
        run_dir = prepare_run_dir(cfg, name)
        return run_dir, read_resume(run_dir) if cfg.resume else None

    run_dir, resume = distributed.on_main(open_run)
    if resume is not None and check_resume is not None:
        check_resume(resume, str(run_dir / LAST))
    logger = RunLogger(run_dir, enabled=node.is_main)
    if not node.is_main:
        return Launch(cfg, run_dir, device, logger, resume, node)
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
        saved = int(resume.get("world_size") or 1), int(resume.get("batch_size") or cfg.batch_size)
        if saved != (node.world_size, cfg.batch_size):
            logger.info(f"the checkpoint was written by {saved[0]} process(es) x batch {saved[1]}; continuing with "
                        f"{node.world_size} x {cfg.batch_size} (see docs/distributed.md: what carries over exactly)")
    return Launch(cfg, run_dir, device, logger, resume, node)


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
    summary = logger.summary(status="finished", wall_time_s=round(wall, 1), **result) if launch.node.is_main else {}
    logger.close()
    return distributed.broadcast_object(summary)  # every rank returns rank 0's summary


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

    # Only rank 0 reads the run directory (its summary is the one every rank returns, see ``run_guarded``).
    records = read_metrics(run_dir) if distributed.rank() == 0 else []
    main = [r for r in records if r.get("stage", "main") == "main"]
    last = main[-1] if main else {}
    return {"epochs_done": progress.epoch, "last_acc": last.get("test_acc"), "last_acc_top5": last.get("test_acc_top5"),
            "best_acc": progress.best_acc, "best_epoch": progress.best_epoch}


def task_loaders(cfg: RunConfig, train_set: Dataset, test_set: Dataset, info: Any, device: torch.device,
                 node: DistInfo) -> tuple[Any, DataLoader]:
    """The training batches (GPU-resident when ``--data-path`` allows, see ``tasks.speed``) and the ordered test
    loader, both sharded over the ranks."""
    from distillers.tasks import speed

    train = make_loader(train_set, cfg.batch_size, True, cfg.workers, cfg.seed, device, node.rank, node.world_size)
    test = make_loader(test_set, cfg.batch_size, False, cfg.workers, cfg.seed, device, node.rank, node.world_size)
    return speed.train_loader(cfg, train_set, info, device, train), test


def run_single_stage(launch: Launch, trainer: Any, node: DistInfo, label: str) -> dict[str, Any]:
    """Fit ``trainer`` for ``--epochs`` (from the resume point), record the summary and print the closing line."""

    def body() -> dict[str, Any]:
        progress = trainer.fit(launch.cfg.epochs, progress_from(launch.resume, "main", node, launch.cfg.batch_size))
        return stage_result(progress, launch.run_dir)

    summary = run_guarded(launch, body)
    print_line(finish_line(label, launch.run_dir, summary))
    return summary


def print_line(text: str) -> None:
    """Print the task's closing line (once: on rank 0 under DDP)."""
    if distributed.rank() == 0:
        print(text, file=sys.stdout, flush=True)
