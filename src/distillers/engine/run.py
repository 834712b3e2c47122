"""The one lifecycle of a run: a task describes a ``Job``; ``run`` does everything around the training loop.

In order: the process group, validation and the job's construction (every user error before anything is
written), the run directory and config.json, resume (every stateful part restored through one path), the device
and the fast path, the loaders, a reference evaluation (the teacher's accuracy), the stages (one optimiser and
Trainer each; finished stages are skipped on resume), and the summary with its closing line. Every task runs the
same code in every process torchrun starts (``docs/distributed.md``): rank 0 alone writes the run directory.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import torch
from torch import nn
from torch.utils.data import DataLoader

from distillers.config import RunConfig, decay_note
from distillers.data.loaders import make_loader
from distillers.engine import distributed, speed
from distillers.engine.checkpoint import load_checkpoint
from distillers.engine.device import device_name, resolve_device
from distillers.engine.distributed import DistInfo
from distillers.engine.logging import RunLogger
from distillers.engine.metrics import evaluate
from distillers.engine.optim import StepSchedule, load_optimizer, sgd
from distillers.engine.resume import progress_from, restore_modules
from distillers.engine.signals import SIGNAL_EXIT, EarlyStop, Interrupted, RunInterrupted, stop_at_once
from distillers.engine.trainer import Loop, NonFiniteLoss, Progress, Trainer
from distillers.errors import UserError
from distillers.rundir import CONFIG, LAST, prepare_run_dir, read_metrics, write_json_atomic


@dataclass
class Stage:
    """One phase of training: what is optimised, which parameters, at which lr, for how many epochs."""

    name: str  # "main", or "init" for the initialisation stage of AB/FT/FSP (checkpoints record it)
    objective: nn.Module
    parameters: Callable[[], Iterable[nn.Parameter]]  # asked when the stage starts (after earlier stages ended)
    lr: float
    epochs: int
    schedule: StepSchedule
    save_freq: int = 0
    on_end: Callable[[], None] | None = None  # after the stage, also when a resume skips it


@dataclass
class Baseline:
    """A model scored once before training (the teacher), recorded in summary.json under ``key``."""

    model: nn.Module
    key: str
    label: str


@dataclass
class Job:
    """Everything a task decides; ``run`` does the rest."""

    cfg: RunConfig
    name: str  # the run directory's name
    label: str  # what the closing line says finished
    arch: str  # the trained model's architecture (named in resume errors)
    data: tuple[Any, Any, Any]  # train set, test set, DataInfo
    eval_model: nn.Module
    stages: list[Stage]
    state: dict[str, nn.Module]  # checkpoint key -> module whose state_dict it holds (restored on resume)
    record: dict[str, Any]  # constant checkpoint entries (arch, num_classes, dataset, ...)
    facts: dict[str, Any]  # what config.json records besides the RunConfig
    fast_models: list[nn.Module]  # channels-last / compile candidates
    baseline: Baseline | None = None
    nonfinite_advice: str = ""  # the method's own way out of a NaN stop (Loop.nonfinite_advice)
    logs: list[str] = field(default_factory=list)  # lines for the run log once it exists


@contextlib.contextmanager
def process_group(device: str) -> Iterator[tuple[DistInfo, torch.device]]:
    """This process's place among the processes torchrun started (one process: rank 0 of 1) and its device, for
    the length of a task; the process group is left at the end, also on errors."""
    with distributed.launched(str(resolve_device(device))) as (node, name):
        yield node, torch.device(name)


def read_data(cfg: RunConfig, **options: Any) -> Any:
    """``load_datasets`` for the run; with ``--download`` one process fetches first and the others then find the
    files, instead of every process writing the same folder at once."""
    import distillers.data

    def read() -> Any:
        return distillers.data.load_datasets(cfg.dataset, cfg.data_dir, download=cfg.download, **options)

    return distributed.in_turn(read) if cfg.download else read()


def sync_batchnorm(model: nn.Module, cfg: RunConfig, device: torch.device) -> nn.Module:
    """``--sync-bn``: BatchNorm statistics over the global batch under DDP (refused where torch cannot do it); in
    one process the model is left as it is (the flag changes nothing there)."""
    if not cfg.sync_bn or distributed.world_size() == 1:
        return model
    distributed.check_sync_batchnorm(device)
    return distributed.convert_sync_batchnorm(model)


def run_facts(cfg: RunConfig, node: DistInfo, base_lr: float, lr: float) -> dict[str, Any]:
    """What config.json records about the processes: world size, global batch, the lr given and the lr used."""
    return {"lr": base_lr, "effective_lr": lr, "world_size": node.world_size,
            "global_batch_size": cfg.batch_size * node.world_size}


def run(cfg: RunConfig, build: Callable[[RunConfig, DistInfo, torch.device], Job]) -> dict[str, Any]:
    """Build the task's job and run it; a stop signal before training ends the run at once (exit 130/143)."""
    opened: list[tuple[Path, bool]] = []  # the run directory, and whether this run created it
    try:
        with stop_at_once(), process_group(cfg.device) as (node, device), speed.backends(cfg, device) as backend:
            cfg.validate()
            job = build(cfg, node, device)
            job.facts.update(backend)  # cudnn.benchmark / deterministic algorithms, as config.json records them
            return _run_job(job, node, device, opened)
    except EarlyStop as stop:
        where = _discard_unstarted(opened)
        raise RunInterrupted(f"interrupted by {stop} before training started; {where}", str(stop),
                             SIGNAL_EXIT.get(stop.signum, 2)) from None


def _discard_unstarted(opened: list[tuple[Path, bool]]) -> str:
    """A run directory this run created and never checkpointed is removed: nothing in it could be resumed."""
    if not opened:
        return "nothing was written"
    run_dir, created = opened[0]
    if created and run_dir.exists() and not (run_dir / LAST).exists():
        shutil.rmtree(run_dir, ignore_errors=True)
        return f"its run directory {run_dir} was removed (nothing to resume)"
    return f"{run_dir} holds the last checkpoint; resume with the same command plus --resume"


def _run_job(job: Job, node: DistInfo, device: torch.device, opened: list[tuple[Path, bool]]) -> dict[str, Any]:
    cfg = job.cfg
    run_dir, resume = distributed.on_main(lambda: open_run(cfg, job.name))
    opened.append((run_dir, not cfg.resume))
    if resume is not None:  # a checkpoint that does not fit is refused before anything is written
        restore_modules(resume, job.state, str(run_dir / LAST), job.arch)
    logger = write_start(cfg, job.name, run_dir, resume, node, device, job.facts)
    for line in [decay_note(cfg), *job.logs]:
        if line:
            logger.info(line)
    started = time.perf_counter()
    try:  # from here on, whatever ends the run is recorded in summary.json (and closes the trackers)
        loop = _prepare_loop(job, logger, device, node)
        result = {**_baseline(job, loop, resume, node), **_train_stages(job, loop, resume, node)}
    except BaseException as error:
        _record_failure(logger, run_dir, error)
    wall = time.perf_counter() - started
    summary = logger.summary(status="finished", wall_time_s=round(wall, 1), **result) if node.is_main else {}
    logger.close()
    summary = distributed.broadcast_object(summary)  # every rank returns rank 0's summary
    if node.is_main:
        print(finish_line(job.label, run_dir, summary), file=sys.stdout, flush=True)
    return summary


def _prepare_loop(job: Job, logger: RunLogger, device: torch.device, node: DistInfo) -> Loop:
    """Models on the device with the fast path's choices (channels-last, compile, autocast), and the loaders."""
    cfg = job.cfg
    for stage in job.stages:
        stage.objective.to(device)
    job.eval_model.to(device)
    speed.prepare(job.fast_models, cfg, device)
    train, test = _loaders(cfg, job, device, node)
    _record_fast_path(cfg, device, train, logger)
    return Loop(eval_model=job.eval_model, train_loader=train, test_loader=test, device=device, logger=logger,
                checkpoint_payload=functools.partial(_payload, job), seed=cfg.seed,
                max_steps=cfg.max_steps_per_epoch, autocast=speed.autocast_factory(cfg, device),
                find_unused_parameters=True, nonfinite_advice=job.nonfinite_advice)


def _record_fast_path(cfg: RunConfig, device: torch.device, train_loader: Any, logger: RunLogger) -> None:
    """What the ``auto`` flags turned into for this run, in the log and in summary.json (``fast_path``)."""
    dtype = speed.amp_dtype(cfg, device)
    choices = {"data_path": "dataloader" if isinstance(train_loader, DataLoader) else "device",
               "amp": str(dtype).removeprefix("torch.") if dtype is not None else "off",
               "channels_last": speed.use_channels_last(cfg, device), "compile": cfg.compile}
    logger.info("fast path: " + ", ".join(f"{key} {value}" for key, value in choices.items()))
    logger.summary(fast_path=choices)


def _payload(job: Job) -> dict[str, Any]:
    """What a checkpoint holds besides the loop's progress: the job's modules' state and its constant record."""
    return {**job.record, **{key: module.state_dict() for key, module in job.state.items()},
            "config": job.cfg.to_dict()}


def _loaders(cfg: RunConfig, job: Job, device: torch.device, node: DistInfo) -> tuple[Any, Any]:
    """The training batches (device-resident when ``--data-path`` allows) and the ordered test loader, sharded."""
    train_set, test_set, info = job.data
    train = make_loader(train_set, cfg.batch_size, True, cfg.workers, cfg.seed, device, node.rank, node.world_size)
    test = make_loader(test_set, cfg.batch_size, False, cfg.workers, cfg.seed, device, node.rank, node.world_size)
    return speed.train_loader(cfg, train_set, info, device, train), test


def _baseline(job: Job, loop: Loop, resume: dict[str, Any] | None, node: DistInfo) -> dict[str, Any]:
    """Score the baseline model once (every rank its share); a resumed run reads it back from summary.json."""
    if job.baseline is None:
        return {}
    key = job.baseline.key
    if resume is not None:
        return {key: loop.logger.summary().get(key) if node.is_main else None}
    accuracy = evaluate(job.baseline.model, loop.test_loader, loop.device)["test_acc"]
    if node.is_main:
        loop.logger.summary(**{key: accuracy})
    loop.logger.info(f"{job.baseline.label}: test top-1 {accuracy:.2f}%")
    return {key: accuracy}


def _train_stages(job: Job, loop: Loop, resume: dict[str, Any] | None, node: DistInfo) -> dict[str, Any]:
    """Each stage in order; a resume skips the stages before the checkpoint's and continues that one."""
    names = [stage.name for stage in job.stages]
    resumed_at = names.index(resume.get("stage", "main")) if resume is not None else 0
    progress = Progress()
    for index, stage in enumerate(job.stages):
        if index >= resumed_at and stage.epochs > 0:
            progress = _fit_stage(job, stage, loop, resume if index == resumed_at else None, node)
        if stage.on_end is not None:
            stage.on_end()
    return stage_result(progress, loop.logger.run_dir)


def _fit_stage(job: Job, stage: Stage, loop: Loop, resume: dict[str, Any] | None, node: DistInfo) -> Progress:
    cfg = job.cfg
    optimizer = sgd(stage.parameters(), stage.lr, cfg.momentum, cfg.weight_decay, loop.device)
    progress = progress_from(resume, stage.name, node, cfg.batch_size)
    if progress is not None:
        load_optimizer(optimizer, resume.get("optimizer"), loop.logger.run_dir / LAST)
    trainer = Trainer(loop, stage.objective, optimizer, stage.schedule, stage=stage.name, save_freq=stage.save_freq)
    return trainer.fit(stage.epochs, progress)


def _record_failure(logger: RunLogger, run_dir: Path, error: BaseException) -> NoReturn:
    """Record how a run ended in summary.json, then raise what the user should see."""
    if isinstance(error, Interrupted):
        record_end(logger, status="interrupted", reason=f"stopped by {error}")
        raise RunInterrupted(f"interrupted by {error}; checkpoint saved in {run_dir / LAST}; resume with the same "
                             f"command plus --resume", str(error)) from None
    if isinstance(error, EarlyStop):  # before the loop: ``run`` removes a directory with nothing to resume
        record_end(logger, status="interrupted", reason=f"stopped by {error} before training started")
    elif isinstance(error, KeyboardInterrupt):  # a second signal: stopped at once, last.pt is the previous one
        record_end(logger, status="interrupted", reason="stopped by a second signal")
    elif isinstance(error, NonFiniteLoss):  # the trainer already recorded where the loss broke
        record_end(logger)
    else:
        reason = str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
        record_end(logger, status="failed", reason=reason)
    raise error


def open_run(cfg: RunConfig, name: str) -> tuple[Path, dict[str, Any] | None]:
    """The run directory (created, or reopened with --resume) and the checkpoint to resume from (rank 0 only)."""
    run_dir = prepare_run_dir(cfg.out, name, cfg.resume, cfg.overwrite)
    return run_dir, load_checkpoint(run_dir / LAST) if cfg.resume else None


def write_start(cfg: RunConfig, name: str, run_dir: Path, resume: dict[str, Any] | None, node: DistInfo,
                device: torch.device, facts: dict[str, Any]) -> RunLogger:
    """The run's logger; a new run writes config.json and a "running" summary, a resumed one says where it goes on."""
    facts = {**facts, "device_name": device_name(device)}
    logger = RunLogger.for_run(cfg, run_dir, name, facts, resumed=resume is not None, enabled=node.is_main)
    if not node.is_main:
        return logger
    if resume is None:
        write_json_atomic(run_dir / CONFIG, {**cfg.to_dict(), **facts, "name": name, "torch": torch.__version__})
        logger.summary(status="running", epochs=cfg.epochs, started=time.time())
        return logger
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
    return logger


def record_end(logger: RunLogger, **values: Any) -> None:
    """Record how a run ended in summary.json when the disk allows (a full disk must not hide the real error)."""
    try:
        if values:
            logger.summary(**values)
    except (OSError, UserError):
        pass
    logger.close()


def stage_result(progress: Progress, run_dir: Path) -> dict[str, Any]:
    """The numbers summary.json records for the last stage trained (the main stage)."""
    # Only rank 0 reads the run directory (its summary is the one every rank returns).
    records = read_metrics(run_dir) if distributed.rank() == 0 else []
    main = [r for r in records if r.get("stage", "main") == "main"]
    last = main[-1] if main else {}
    return {"epochs_done": progress.epoch, "last_acc": last.get("test_acc"), "last_acc_top5": last.get("test_acc_top5"),
            "best_acc": progress.best_acc, "best_epoch": progress.best_epoch}


def finish_line(task: str, run_dir: Path, summary: dict[str, Any]) -> str:
    last, best = summary.get("last_acc"), summary.get("best_acc")
    text = f"{task} finished: last top-1 {last:.2f}% best {best:.2f}% (epoch {summary.get('best_epoch')})" \
        if last is not None else f"{task} finished"
    return f"{text} in {summary.get('wall_time_s', 0):.0f}s -> {run_dir}"
