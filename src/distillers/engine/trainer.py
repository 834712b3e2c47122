"""The one training loop (teacher training, both distillation stages, transfer).

An *objective* is an ``nn.Module`` whose ``forward(batch)`` returns ``(logits, terms)``: the logits scored for
training accuracy and a dict of named, already-weighted loss terms whose sum is minimised
(``distillers.objective``). The loop reads top to bottom: set lr, train an epoch, evaluate, log, checkpoint.

Under torchrun the same loop runs in every process (``docs/distributed.md``): the objective is wrapped in
DistributedDataParallel, each rank trains on its shard and evaluates its share of the test set, sums are reduced
over ranks, and only rank 0 writes logs and checkpoints. In one process every collective is a no-op.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from distillers.engine import distributed
from distillers.engine.checkpoint import save_checkpoint
from distillers.engine.device import to_device
from distillers.engine.logging import RunLogger
from distillers.engine.metrics import count_correct, evaluate
from distillers.engine.optim import StepSchedule
from distillers.engine.rng import epoch_seed, rng_state, seed_everything, set_rng_state
from distillers.engine.signals import Interrupted, StopSignals
from distillers.errors import UserError
from distillers.rundir import BEST, LAST

# Errors a step raises when its numbers went non-finite before the loss did (an SVD of a NaN matrix, ...).
NUMERICAL_ERRORS: tuple[type[BaseException], ...] = (torch.linalg.LinAlgError,)


class NonFiniteLoss(UserError):
    """The loss became NaN/inf (or a step failed on non-finite numbers): the run stops, keeping the last good
    checkpoint."""


@dataclass
class Progress:
    """Where a stage stands: what resume restores and what checkpoints record."""

    stage: str = "main"
    epoch: int = 0  # last completed epoch
    step: int = 0  # completed steps (per process) of epoch + 1 (mid-epoch interruption), else 0
    best_acc: float = 0.0
    best_epoch: int = 0
    partial: Tensor | None = None  # running train sums of the interrupted epoch (over all processes)
    partial_terms: dict[str, Tensor] | None = None  # running sums of each loss term of the interrupted epoch
    rng: dict[str, Any] | None = None  # RNG states at the interruption, restored to replay the rest of the epoch


@dataclass
class Loop:
    """What every stage of a run shares: data, device, logging, what a checkpoint holds, and the run's settings."""

    eval_model: nn.Module
    train_loader: Any
    test_loader: Any
    device: torch.device
    logger: RunLogger
    checkpoint_payload: Callable[[], dict[str, Any]]
    seed: int = 0
    max_steps: int | None = None
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    find_unused_parameters: bool = False
    log_every: int = 50
    show_progress: bool | None = None
    nonfinite_advice: str = ""  # the method's own way out of a non-finite stop, said after "lower --lr"


class _TrainingStep(nn.Module):
    """What DDP wraps: the objective with its logits detached, so DDP's search for unused parameters starts from the
    loss terms alone (a parameter that only reaches the logits, e.g. the classifier under ``-r 0 -a 0``, or RRD's
    teacher head, is unused and must not be waited for)."""

    def __init__(self, objective: nn.Module) -> None:
        super().__init__()
        self.objective = objective

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        logits, terms = self.objective(batch)
        return logits.detach(), terms


class _EpochSums:
    """Running sums of one epoch on the device (loss, top-1, count; each loss term; the first bad step), read once
    per log interval. A resumed epoch's sums so far are over all ranks: rank 0 carries them, so reductions count
    them once."""

    def __init__(self, progress: Progress, device: torch.device, is_main: bool) -> None:
        zeros = torch.zeros(3, dtype=torch.float64, device=device)
        self.device = device
        self.totals = progress.partial.to(device) if progress.partial is not None and is_main else zeros
        self.terms: dict[str, Tensor] = {name: (value if is_main else torch.zeros_like(value)).to(device)
                                         for name, value in (progress.partial_terms or {}).items()}
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)

    @torch.no_grad()
    def add(self, step: int, loss: Tensor, logits: Tensor, target: Tensor, terms: dict[str, Tensor]) -> None:
        detached = loss.detach().double()
        # Python numbers enter as kernel arguments (torch.full), never as host-to-device copies, which would make
        # the host wait for the GPU at every step.
        step_on_device = torch.full((), step, dtype=torch.long, device=self.device)
        self.first_bad = torch.where((self.first_bad < 0) & ~torch.isfinite(detached), step_on_device, self.first_bad)
        top1 = count_correct(logits.detach().float(), target, topk=(1,))[0]
        count = torch.full((), float(len(logits)), dtype=torch.float64, device=self.device)
        self.totals += torch.stack([detached * len(logits), top1.double(), count])
        for name, value in terms.items():
            self.terms[name] = self.terms.get(name, 0) + value.detach().double() * len(logits)

    def reduced_terms(self) -> dict[str, Tensor]:
        """Each loss term's sum, added over ranks (one all-reduce), on the CPU."""
        names = sorted(self.terms)
        if not names:
            return {}
        return dict(zip(names, distributed.all_sum(torch.stack([self.terms[n].reshape(()) for n in names])).cpu()))


class Trainer:
    """Runs the epochs of one stage: optimise ``objective`` on the loop's data, evaluate ``loop.eval_model``.

    Under torchrun (a process group is up) the objective is trained through DistributedDataParallel.
    """

    def __init__(self, loop: Loop, objective: nn.Module, optimizer: torch.optim.Optimizer, schedule: StepSchedule,
                 stage: str = "main", save_freq: int = 0) -> None:
        self.loop = loop
        self.objective = objective
        self.optimizer = optimizer
        self.schedule = schedule
        self.stage = stage
        self.save_freq = save_freq
        self.log_every = loop.log_every
        self.dist = distributed.current()
        self.is_main = self.dist.is_main

    @property
    def batch_size(self) -> int:
        """Samples per step and process."""
        return getattr(self.loop.train_loader, "batch_size", None) or 1

    # ---- checkpoints -------------------------------------------------------------------------------------
    def _save(self, progress: Progress, accuracy: float | None, names: list[str]) -> None:
        """Rank 0 writes ``names``; every rank must call this (each rank's RNG state is gathered for a resume)."""
        rng = rng_state(self.loop.device)
        per_rank = distributed.gather_objects(rng) if self.dist.world_size > 1 else None
        if not self.is_main:
            return
        payload = self.loop.checkpoint_payload()
        world = self.dist.world_size
        # ``step_in_epoch`` counts this world's per-process steps; ``samples_in_epoch`` (global) lets a resume with
        # another world size or batch size skip the same samples (``engine.resume.resume_step``).
        payload.update({"epoch": progress.epoch, "accuracy": accuracy, "best_acc": progress.best_acc,
                        "best_epoch": progress.best_epoch, "stage": progress.stage, "step_in_epoch": progress.step,
                        "samples_in_epoch": progress.step * self.batch_size * world, "world_size": world,
                        "batch_size": self.batch_size, "partial": progress.partial,
                        "partial_terms": progress.partial_terms, "optimizer": self.optimizer.state_dict(),
                        "rng": rng})
        if per_rank is not None:
            payload["rng_per_rank"] = per_rank
        for name in names:
            save_checkpoint(payload, self.loop.logger.run_dir / name)

    def _agree(self, first_bad: Tensor, stop: StopSignals) -> tuple[int, bool]:
        """``(first bad step or -1, stop requested)``, agreed by all ranks (one small all-reduce, a host sync), so
        every rank stops, or fails, at the same step and none is left waiting in a collective."""
        requested = torch.tensor(int(stop.requested is not None), device=first_bad.device)
        flags = distributed.all_max(torch.stack([first_bad, requested]))
        bad, stopping = flags.tolist()
        return int(bad), bool(stopping)

    # ---- the loop ----------------------------------------------------------------------------------------
    def fit(self, epochs: int, progress: Progress | None = None) -> Progress:
        progress = progress or Progress(stage=self.stage)
        loop = self.loop
        # DDP only for the length of this stage (the init stage's wrapper must not outlive it).
        step_module = self.objective if self.dist.world_size == 1 else \
            distributed.wrap(_TrainingStep(self.objective), loop.device, loop.find_unused_parameters)
        with StopSignals(echo_s=2.0 if self.dist.world_size > 1 else 0.0) as stop:
            for epoch in range(progress.epoch + 1, epochs + 1):
                started = time.perf_counter()
                lr = self.schedule.lr(epoch)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                train = self._train_epoch(step_module, epoch, progress, stop)
                progress.step, progress.partial, progress.partial_terms = 0, None, None
                # Each rank's BatchNorm statistics saw only its own batches: evaluate and save their average.
                distributed.average_batchnorm_stats(self.objective)
                test = evaluate(loop.eval_model, loop.test_loader, loop.device, loop.autocast)
                progress.epoch = epoch
                # The first epoch always sets the best (best.pt exists even while the accuracy is still 0).
                is_best = progress.best_epoch == 0 or test["test_acc"] > progress.best_acc
                if is_best:
                    progress.best_acc, progress.best_epoch = test["test_acc"], epoch
                record = {"stage": self.stage, "epoch": epoch, "lr": lr, **train, **test,
                          "epoch_time_s": round(time.perf_counter() - started, 3)}
                loop.logger.epoch(record)
                loop.logger.info(f"[{self.stage}] epoch {epoch}/{epochs} lr {lr:.4g} train loss "
                                 f"{train['train_loss']:.4f} acc {train['train_acc']:.2f} | test acc "
                                 f"{test['test_acc']:.2f} top5 {test['test_acc_top5']:.2f}")
                names = [LAST] + ([BEST] if is_best and self.stage == "main" else [])
                if self.save_freq and epoch % self.save_freq == 0 and self.stage == "main":
                    names.append(f"ckpt_epoch_{epoch}.pt")
                self._save(progress, test["test_acc"], names)
                # Arrived during evaluation or saving: last.pt already holds this epoch.
                if self._agree(torch.tensor(-1, device=loop.device), stop)[1]:
                    raise Interrupted(stop.requested or "a signal to another process")
        return progress

    def _start_epoch(self, epoch: int, progress: Progress) -> Any:
        """Set the epoch's randomness and data order; returns the batch iterator (skipping a resumed prefix)."""
        self.objective.train()
        if hasattr(self.objective, "set_epoch"):
            self.objective.set_epoch(epoch)
        # The epoch's randomness depends only on (seed, epoch) (and the rank): resuming at an epoch boundary is exact.
        seed_everything(epoch_seed(self.loop.seed, epoch, self.stage, self.dist.rank))
        sampler = getattr(self.loop.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            try:
                sampler.set_epoch(epoch, skip=progress.step * self.batch_size)
            except TypeError:  # e.g. torch's DistributedSampler has no skip
                sampler.set_epoch(epoch)
        dataset = getattr(self.loop.train_loader, "dataset", None)
        if hasattr(dataset, "set_epoch"):  # per-epoch random draws inside the dataset (CRD's contrast rows)
            dataset.set_epoch(epoch)
        batches = iter(self.loop.train_loader)  # creating the iterator draws from the torch RNG
        if progress.rng is not None:
            # Mid-epoch resume: continue the RNG streams where the interrupted run stopped, so the remaining
            # batches get the augmentations an uninterrupted run would have given them.
            set_rng_state(progress.rng, self.loop.device)
            progress.rng = None
        return batches

    def _step(self, step_module: nn.Module, batch: dict[str, Tensor], epoch: int, step: int, progress: Progress
              ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """One optimisation step; a numerical failure inside it stops the run like a NaN loss."""
        try:
            with self.loop.autocast():
                logits, terms = step_module(batch)
            loss = sum(terms.values())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # under DDP: gradients averaged over ranks here
        except NUMERICAL_ERRORS as error:
            detail = str(error).split(":", 1)[-1].strip().splitlines()[0][:120]
            self._stop_non_finite(epoch, step + 1, progress, f"{type(error).__name__.lstrip('_')}: {detail}")
        self.optimizer.step()
        return loss, logits, terms

    def _train_epoch(self, step_module: nn.Module, epoch: int, progress: Progress, stop: StopSignals
                     ) -> dict[str, float]:
        batches = self._start_epoch(epoch, progress)
        sums = _EpochSums(progress, self.loop.device, self.is_main)
        total = len(self.loop.train_loader) + progress.step
        if self.loop.max_steps is not None:
            total = min(total, self.loop.max_steps)
        bar = self._bar(epoch, total, progress.step)
        step = progress.step
        for batch in batches:
            if step >= total:
                break
            batch = to_device(batch, self.loop.device)
            loss, logits, terms = self._step(step_module, batch, epoch, step, progress)
            step += 1
            sums.add(step, loss, logits, batch["target"], terms)
            if bar is not None:
                bar.update(1)
            # Under DDP a stop request is honoured at the next log interval, when all ranks agree on it.
            if step % self.log_every == 0 or step == total or (stop.requested and self.dist.world_size == 1):
                bad, stopping = self._agree(sums.first_bad, stop)  # host sync once per interval
                if bad >= 0:
                    self._stop_non_finite(epoch, bad, progress)
                if bar is not None:
                    bar.set_postfix(loss=f"{(sums.totals[0] / sums.totals[2]).item():.4f}",
                                    lr=self.optimizer.param_groups[0]["lr"])
                if stopping:
                    if bar is not None:
                        bar.close()
                    self._save(Progress(self.stage, epoch - 1, step, progress.best_acc, progress.best_epoch,
                                        distributed.all_sum(sums.totals).cpu(), sums.reduced_terms()), None, [LAST])
                    raise Interrupted(stop.requested or "a signal to another process")
        if bar is not None:
            bar.close()
        return self._epoch_record(sums, epoch, progress)

    def _bar(self, epoch: int, total: int, initial: int) -> Any:
        if not self.is_main:
            return None
        from tqdm import tqdm

        show = self.loop.show_progress
        return tqdm(total=total, initial=initial, desc=f"{self.stage} {epoch}", leave=False,
                    disable=None if show is None else not show, unit="batch")

    def _epoch_record(self, sums: _EpochSums, epoch: int, progress: Progress) -> dict[str, float]:
        loss_sum, correct, count = distributed.all_sum(sums.totals).tolist()
        if count == 0:
            raise UserError("the training set is empty (or --max-steps-per-epoch is 0)")
        record = {"train_loss": loss_sum / count, "train_acc": 100.0 * correct / count}
        for name, value in sums.reduced_terms().items():
            record[f"loss_{name}"] = float(value) / count
        if not math.isfinite(record["train_loss"]):
            self._stop_non_finite(epoch, int(distributed.all_max(sums.first_bad)), progress)
        return record

    def _stop_non_finite(self, epoch: int, step: int, progress: Progress, cause: str | None = None) -> None:
        what = f"a step failed on non-finite numbers ({cause})" if cause else "the loss became NaN or infinite"
        reason = f"{what} at epoch {epoch}, step {step} ({self.stage} stage)"
        if self.is_main:
            self.loop.logger.summary(status="failed", reason=reason)
        last = self.loop.logger.run_dir / LAST
        kept = f"the last good checkpoint {last} is kept" if last.exists() else "no checkpoint was written"
        if progress.epoch:
            kept += f" ({self.stage} epoch {progress.epoch})"
        advice = f"lower --lr {self.loop.nonfinite_advice}" if self.loop.nonfinite_advice else \
            "lower --lr or check the inputs"
        raise NonFiniteLoss(f"{reason}; {kept}; {advice}")
