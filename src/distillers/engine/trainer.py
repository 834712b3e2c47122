"""The one training loop (teacher training, both distillation stages, transfer) and evaluation.

An *objective* is an ``nn.Module`` whose ``forward(batch)`` returns ``(logits, terms)``: the logits scored for
training accuracy and a dict of named, already-weighted loss terms whose sum is minimised
(``distillers.objective``). The loop reads top to bottom: set lr, train an epoch, evaluate, log, checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import Tensor, nn

from distillers.engine.checkpoint import save_checkpoint
from distillers.engine.logging import RunLogger
from distillers.errors import UserError
from distillers.rundir import BEST, LAST


class NonFiniteLoss(UserError):
    """The loss became NaN/inf: the run stops, keeping the last good checkpoint."""


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint was saved at a step boundary."""


@dataclass(frozen=True)
class StepSchedule:
    """The seed's step decay: ``lr * rate ** (number of decay epochs already passed)`` (1-based epochs)."""

    base_lr: float
    decay_epochs: tuple[int, ...] = ()
    decay_rate: float = 0.1

    def lr(self, epoch: int) -> float:
        return self.base_lr * self.decay_rate ** sum(epoch > milestone for milestone in self.decay_epochs)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; an unavailable device is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise UserError(f"unknown --device {name!r}; use auto, cpu, cuda or cuda:N") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name} requested but CUDA is not available; use --device cpu")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG state, as weights-only-loadable tensors and lists."""
    np_state = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]) + [random.getstate()[2] if random.getstate()[2] is not None else -1],
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    python = [int(v) for v in state["python"]]
    random.setstate((3, tuple(python[:-1]), None if python[-1] < 0 else python[-1]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), int(state["numpy_pos"]), 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def to_device(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def count_correct(logits: Tensor, target: Tensor, topk: tuple[int, ...] = (1, 5)) -> list[Tensor]:
    """Number of samples whose label is among the top-k logits, per k (tensors: no host sync)."""
    k_max = min(max(topk), logits.shape[1])
    predicted = logits.topk(k_max, dim=1).indices
    hits = predicted.eq(target.view(-1, 1))
    return [hits[:, : min(k, k_max)].any(dim=1).sum() for k in topk]


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device, autocast: Callable = contextlib.nullcontext
             ) -> dict[str, float]:
    """Top-1/top-5 accuracy (%) and mean cross-entropy of ``model`` over ``loader``."""
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, top1, top5, count
    for batch in loader:
        batch = to_device(batch, device)
        with autocast():
            logits = model(batch["image"])
        logits = logits.float()
        loss = nn.functional.cross_entropy(logits, batch["target"], reduction="sum")
        top1, top5 = count_correct(logits, batch["target"])
        totals += torch.stack([loss.double(), top1.double(), top5.double(),
                               torch.tensor(float(len(logits)), device=device, dtype=torch.float64)])
    loss_sum, top1, top5, count = totals.tolist()  # the one host sync of an evaluation
    if count == 0:
        raise UserError("the test set is empty")
    return {"test_acc": 100.0 * top1 / count, "test_acc_top5": 100.0 * top5 / count, "test_loss": loss_sum / count}


class StopSignals:
    """Turns SIGINT/SIGTERM into a flag the loop checks at step boundaries (a second signal aborts at once)."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested is not None:
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def __enter__(self) -> "StopSignals":
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


@dataclass
class Progress:
    """Where a stage stands: what resume restores and what checkpoints record."""

    stage: str = "main"
    epoch: int = 0  # last completed epoch
    step: int = 0  # completed steps of epoch + 1 (mid-epoch interruption), else 0
    best_acc: float = 0.0
    best_epoch: int = 0
    partial: Tensor | None = None  # running train sums of the interrupted epoch
    partial_terms: dict[str, Tensor] | None = None  # running sums of each loss term of the interrupted epoch
    rng: dict[str, Any] | None = None  # RNG states at the interruption, restored to replay the rest of the epoch


class Trainer:
    """Runs ``epochs`` of one stage: optimise ``objective`` on ``train_loader``, evaluate ``eval_model``."""

    def __init__(self, *, objective: nn.Module, eval_model: nn.Module, optimizer: torch.optim.Optimizer,
                 schedule: StepSchedule, train_loader: Any, test_loader: Any, device: torch.device,
                 logger: RunLogger, checkpoint_payload: Callable[[], dict[str, Any]], seed: int = 0,
                 stage: str = "main", save_freq: int = 0, max_steps: int | None = None, amp: bool = False,
                 log_every: int = 50, is_main: bool = True, reduce: Callable[[Tensor], Tensor] | None = None,
                 show_progress: bool | None = None) -> None:
        self.objective = objective
        self.eval_model = eval_model
        self.optimizer = optimizer
        self.schedule = schedule
        self.train_loader = train_loader
        self.test_loader = test_loader
        self.device = device
        self.logger = logger
        self.checkpoint_payload = checkpoint_payload
        self.seed = seed
        self.stage = stage
        self.save_freq = save_freq
        self.max_steps = max_steps
        self.log_every = log_every
        self.is_main = is_main
        self.reduce = reduce or (lambda t: t)
        self.show_progress = show_progress
        self.amp = amp and device.type == "cuda"

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # ---- checkpoints -------------------------------------------------------------------------------------
    def _save(self, progress: Progress, accuracy: float | None, names: list[str]) -> None:
        if not self.is_main:
            return
        payload = self.checkpoint_payload()
        payload.update({"epoch": progress.epoch, "accuracy": accuracy, "best_acc": progress.best_acc,
                        "best_epoch": progress.best_epoch, "stage": progress.stage, "step_in_epoch": progress.step,
                        "partial": progress.partial, "partial_terms": progress.partial_terms,
                        "optimizer": self.optimizer.state_dict(), "rng": rng_state()})
        for name in names:
            save_checkpoint(payload, self.logger.run_dir / name)

    # ---- the loop ----------------------------------------------------------------------------------------
    def fit(self, epochs: int, progress: Progress | None = None) -> Progress:
        progress = progress or Progress(stage=self.stage)
        with StopSignals() as stop:
            for epoch in range(progress.epoch + 1, epochs + 1):
                started = time.perf_counter()
                lr = self.schedule.lr(epoch)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                train = self._train_epoch(epoch, progress, stop)
                progress.step, progress.partial, progress.partial_terms = 0, None, None
                test = evaluate(self.eval_model, self.test_loader, self.device, self.autocast)
                progress.epoch = epoch
                # The first epoch always sets the best (best.pt exists even while the accuracy is still 0).
                is_best = progress.best_epoch == 0 or test["test_acc"] > progress.best_acc
                if is_best:
                    progress.best_acc, progress.best_epoch = test["test_acc"], epoch
                record = {"stage": self.stage, "epoch": epoch, "lr": lr, **train, **test,
                          "epoch_time_s": round(time.perf_counter() - started, 3)}
                self.logger.epoch(record)
                self.logger.info(f"[{self.stage}] epoch {epoch}/{epochs} lr {lr:.4g} train loss "
                                 f"{train['train_loss']:.4f} acc {train['train_acc']:.2f} | test acc "
                                 f"{test['test_acc']:.2f} top5 {test['test_acc_top5']:.2f}")
                names = [LAST] + ([BEST] if is_best and self.stage == "main" else [])
                if self.save_freq and epoch % self.save_freq == 0 and self.stage == "main":
                    names.append(f"ckpt_epoch_{epoch}.pt")
                self._save(progress, test["test_acc"], names)
                if stop.requested:  # arrived during evaluation or saving: last.pt already holds this epoch
                    raise Interrupted(stop.requested)
        return progress

    def _train_epoch(self, epoch: int, progress: Progress, stop: StopSignals) -> dict[str, float]:
        self.objective.train()
        if hasattr(self.objective, "set_epoch"):
            self.objective.set_epoch(epoch)
        # The epoch's randomness depends only on (seed, epoch): resuming at an epoch boundary is exact.
        seed_everything(self.seed * 1_000_003 + epoch + (500_000 if self.stage == "init" else 0))
        sampler = getattr(self.train_loader, "sampler", None)
        batch_size = getattr(self.train_loader, "batch_size", None) or 1
        if hasattr(sampler, "set_epoch"):
            try:
                sampler.set_epoch(epoch, skip=progress.step * batch_size)
            except TypeError:  # e.g. torch's DistributedSampler has no skip
                sampler.set_epoch(epoch)
        dataset = getattr(self.train_loader, "dataset", None)
        if hasattr(dataset, "set_epoch"):  # per-epoch random draws inside the dataset (CRD's contrast rows)
            dataset.set_epoch(epoch)
        batches = iter(self.train_loader)  # creating the iterator draws from the torch RNG
        if progress.rng is not None:
            # Mid-epoch resume: continue the RNG streams where the interrupted run stopped, so the remaining
            # batches get the augmentations an uninterrupted run would have given them.
            set_rng_state(progress.rng)
            progress.rng = None
        # Running sums on the device (loss, top-1, count, first bad step), read once per log interval.
        sums = progress.partial.to(self.device) if progress.partial is not None else \
            torch.zeros(3, dtype=torch.float64, device=self.device)
        term_sums: dict[str, Tensor] = {name: value.to(self.device) for name, value in
                                        (progress.partial_terms or {}).items()}
        first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        total = len(self.train_loader) + progress.step
        if self.max_steps is not None:
            total = min(total, self.max_steps)
        bar = None
        if self.is_main:
            from tqdm import tqdm

            bar = tqdm(total=total, initial=progress.step, desc=f"{self.stage} {epoch}", leave=False,
                       disable=None if self.show_progress is None else not self.show_progress, unit="batch")
        step = progress.step
        for batch in batches:
            if step >= total:
                break
            batch = to_device(batch, self.device)
            with self.autocast():
                logits, terms = self.objective(batch)
            loss = sum(terms.values())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            step += 1
            with torch.no_grad():
                detached = loss.detach().double()
                first_bad = torch.where((first_bad < 0) & ~torch.isfinite(detached),
                                        torch.tensor(step, device=self.device), first_bad)
                top1 = count_correct(logits.detach().float(), batch["target"], topk=(1,))[0]
                sums += torch.stack([detached * len(logits), top1.double(),
                                     torch.tensor(float(len(logits)), dtype=torch.float64, device=self.device)])
                for name, value in terms.items():
                    term_sums[name] = term_sums.get(name, 0) + value.detach().double() * len(logits)
            if bar is not None:
                bar.update(1)
            if step % self.log_every == 0 or step == total or stop.requested:
                bad = int(first_bad)  # host sync once per interval
                if bad >= 0:
                    self._stop_non_finite(epoch, bad, progress)
                if bar is not None:
                    bar.set_postfix(loss=f"{(sums[0] / sums[2]).item():.4f}", lr=self.optimizer.param_groups[0]["lr"])
            if stop.requested:
                if bar is not None:
                    bar.close()
                terms_cpu = {name: value.cpu() for name, value in term_sums.items()}
                self._save(Progress(self.stage, epoch - 1, step, progress.best_acc, progress.best_epoch,
                                    sums.cpu(), terms_cpu), None, [LAST])
                raise Interrupted(stop.requested)
        if bar is not None:
            bar.close()
        sums = self.reduce(sums)
        loss_sum, correct, count = sums.tolist()
        if count == 0:
            raise UserError("the training set is empty (or --max-steps-per-epoch is 0)")
        record = {"train_loss": loss_sum / count, "train_acc": 100.0 * correct / count}
        for name, value in term_sums.items():
            record[f"loss_{name}"] = float(self.reduce(value.reshape(1))[0]) / count
        if not math.isfinite(record["train_loss"]):
            self._stop_non_finite(epoch, int(first_bad), progress)
        return record

    def _stop_non_finite(self, epoch: int, step: int, progress: Progress) -> None:
        reason = f"the loss became NaN or infinite at epoch {epoch}, step {step} ({self.stage} stage)"
        self.logger.summary(status="failed", reason=reason)
        last = self.logger.run_dir / LAST
        kept = f"the last good checkpoint {last} is kept" if last.exists() else "no checkpoint was written"
        if progress.epoch:
            kept += f" ({self.stage} epoch {progress.epoch})"
        raise NonFiniteLoss(f"{reason}; {kept}; lower --lr or check the inputs")
