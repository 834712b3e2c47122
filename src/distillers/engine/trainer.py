"""The one training loop (teacher training, both distillation stages, transfer) and evaluation.

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
import random
import signal
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch import Tensor, nn

from distillers.engine import distributed
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
    seed = int(seed)
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


def epoch_seed(seed: int, epoch: int, stage: str = "main", rank: int = 0) -> int:
    """The seed of an epoch's randomness (augmentations, worker seeds): ``(seed, epoch, stage)``, and the rank, so
    that DDP ranks draw independent augmentations (rank 0 keeps the single-process seed)."""
    base = seed * 1_000_003 + epoch + (500_000 if stage == "init" else 0)
    if rank == 0:
        return base
    return int(np.random.SeedSequence([base % 2**63, rank]).generate_state(1, np.uint64)[0] % 2**63)


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device, autocast: Callable = contextlib.nullcontext
             ) -> dict[str, float]:
    """Top-1/top-5 accuracy (%) and mean cross-entropy of ``model`` over ``loader``.

    Under DDP every rank must call it with its own, unpadded share of the test set (``tasks.common.make_loader``):
    the sums are added over ranks, so each test image counts exactly once.
    """
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
                               torch.full((), float(len(logits)), device=device, dtype=torch.float64)])
    loss_sum, top1, top5, count = distributed.all_sum(totals).tolist()  # the one host sync of an evaluation
    if count == 0:
        raise UserError("the test set is empty")
    return {"test_acc": 100.0 * top1 / count, "test_acc_top5": 100.0 * top5 / count, "test_loss": loss_sum / count}


class StopSignals:
    """Turns SIGINT/SIGTERM into a flag the loop checks at step boundaries (a second signal aborts at once).

    ``echo_s``: a second signal this soon after the first is the same request delivered twice (Ctrl-C reaches
    every process of torchrun's group from the terminal, and torchrun forwards it again), not a second one.
    """

    def __init__(self, echo_s: float = 0.0) -> None:
        self.requested: str | None = None
        self.echo_s = echo_s
        self._at = 0.0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested is not None:
            if time.monotonic() - self._at < self.echo_s:
                return
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name
        self._at = time.monotonic()

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
    step: int = 0  # completed steps (per process) of epoch + 1 (mid-epoch interruption), else 0
    best_acc: float = 0.0
    best_epoch: int = 0
    partial: Tensor | None = None  # running train sums of the interrupted epoch (over all processes)
    partial_terms: dict[str, Tensor] | None = None  # running sums of each loss term of the interrupted epoch
    rng: dict[str, Any] | None = None  # RNG states at the interruption, restored to replay the rest of the epoch


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


class Trainer:
    """Runs ``epochs`` of one stage: optimise ``objective`` on ``train_loader``, evaluate ``eval_model``.

    Under torchrun (a process group is up) the objective is trained through DistributedDataParallel;
    ``find_unused_parameters`` is needed when some trainable parameters may get no gradient in a step.
    """

    def __init__(self, *, objective: nn.Module, eval_model: nn.Module, optimizer: torch.optim.Optimizer,
                 schedule: StepSchedule, train_loader: Any, test_loader: Any, device: torch.device,
                 logger: RunLogger, checkpoint_payload: Callable[[], dict[str, Any]], seed: int = 0,
                 stage: str = "main", save_freq: int = 0, max_steps: int | None = None, amp: bool = False,
                 log_every: int = 50, find_unused_parameters: bool = False,
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
        self.find_unused_parameters = find_unused_parameters
        self.show_progress = show_progress
        self.amp = amp and device.type == "cuda"
        self.dist = distributed.current()
        self.is_main = self.dist.is_main

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @property
    def batch_size(self) -> int:
        """Samples per step and process."""
        return getattr(self.train_loader, "batch_size", None) or 1

    # ---- checkpoints -------------------------------------------------------------------------------------
    def _save(self, progress: Progress, accuracy: float | None, names: list[str]) -> None:
        """Rank 0 writes ``names``; every rank must call this (each rank's RNG state is gathered for a resume)."""
        rng = rng_state()
        per_rank = distributed.gather_objects(rng) if self.dist.world_size > 1 else None
        if not self.is_main:
            return
        payload = self.checkpoint_payload()
        world = self.dist.world_size
        # ``step_in_epoch`` counts this world's per-process steps; ``samples_in_epoch`` (global) lets a resume with
        # another world size or batch size skip the same samples (``tasks.common.resume_step``).
        payload.update({"epoch": progress.epoch, "accuracy": accuracy, "best_acc": progress.best_acc,
                        "best_epoch": progress.best_epoch, "stage": progress.stage, "step_in_epoch": progress.step,
                        "samples_in_epoch": progress.step * self.batch_size * world, "world_size": world,
                        "batch_size": self.batch_size, "partial": progress.partial,
                        "partial_terms": progress.partial_terms, "optimizer": self.optimizer.state_dict(),
                        "rng": rng})
        if per_rank is not None:
            payload["rng_per_rank"] = per_rank
        for name in names:
            save_checkpoint(payload, self.logger.run_dir / name)

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
        # DDP only for the length of this stage (the init stage's wrapper must not outlive it).
        step_module = self.objective if self.dist.world_size == 1 else \
            distributed.wrap(_TrainingStep(self.objective), self.device, self.find_unused_parameters)
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
                # Arrived during evaluation or saving: last.pt already holds this epoch.
                if self._agree(torch.tensor(-1, device=self.device), stop)[1]:
                    raise Interrupted(stop.requested or "a signal to another process")
        return progress

    def _train_epoch(self, step_module: nn.Module, epoch: int, progress: Progress, stop: StopSignals
                     ) -> dict[str, float]:
        self.objective.train()
        if hasattr(self.objective, "set_epoch"):
            self.objective.set_epoch(epoch)
        # The epoch's randomness depends only on (seed, epoch) (and the rank): resuming at an epoch boundary is exact.
        seed_everything(epoch_seed(self.seed, epoch, self.stage, self.dist.rank))
        sampler = getattr(self.train_loader, "sampler", None)
        batch_size = self.batch_size
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
        # Running sums on the device (loss, top-1, count, first bad step), read once per log interval. A resumed
        # epoch's sums so far are over all ranks: rank 0 carries them, so the reduction below counts them once.
        zeros = torch.zeros(3, dtype=torch.float64, device=self.device)
        sums = progress.partial.to(self.device) if progress.partial is not None and self.is_main else zeros
        term_sums: dict[str, Tensor] = {name: (value if self.is_main else torch.zeros_like(value)).to(self.device)
                                        for name, value in (progress.partial_terms or {}).items()}
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
                logits, terms = step_module(batch)
            loss = sum(terms.values())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # under DDP: gradients averaged over ranks here
            self.optimizer.step()
            step += 1
            with torch.no_grad():
                detached = loss.detach().double()
                # Python numbers enter as kernel arguments (torch.full), never as host-to-device copies, which
                # would make the host wait for the GPU at every step.
                step_on_device = torch.full((), step, dtype=torch.long, device=self.device)
                first_bad = torch.where((first_bad < 0) & ~torch.isfinite(detached), step_on_device, first_bad)
                top1 = count_correct(logits.detach().float(), batch["target"], topk=(1,))[0]
                sums += torch.stack([detached * len(logits), top1.double(),
                                     torch.full((), float(len(logits)), dtype=torch.float64, device=self.device)])
                for name, value in terms.items():
                    term_sums[name] = term_sums.get(name, 0) + value.detach().double() * len(logits)
            if bar is not None:
                bar.update(1)
            # Under DDP a stop request is honoured at the next log interval, when all ranks agree on it.
            stopping = False
            if step % self.log_every == 0 or step == total or (stop.requested and self.dist.world_size == 1):
                bad, stopping = self._agree(first_bad, stop)  # host sync once per interval
                if bad >= 0:
                    self._stop_non_finite(epoch, bad, progress)
                if bar is not None:
                    bar.set_postfix(loss=f"{(sums[0] / sums[2]).item():.4f}", lr=self.optimizer.param_groups[0]["lr"])
            if stopping:
                if bar is not None:
                    bar.close()
                names = sorted(term_sums)
                terms_cpu = dict(zip(names, self._sum_terms(term_sums, names).cpu()))
                self._save(Progress(self.stage, epoch - 1, step, progress.best_acc, progress.best_epoch,
                                    distributed.all_sum(sums).cpu(), terms_cpu), None, [LAST])
                raise Interrupted(stop.requested or "a signal to another process")
        if bar is not None:
            bar.close()
        loss_sum, correct, count = distributed.all_sum(sums).tolist()
        if count == 0:
            raise UserError("the training set is empty (or --max-steps-per-epoch is 0)")
        record = {"train_loss": loss_sum / count, "train_acc": 100.0 * correct / count}
        names = sorted(term_sums)
        for name, value in zip(names, self._sum_terms(term_sums, names).tolist()):
            record[f"loss_{name}"] = value / count
        if not math.isfinite(record["train_loss"]):
            self._stop_non_finite(epoch, int(distributed.all_max(first_bad)), progress)
        return record

    @staticmethod
    def _sum_terms(term_sums: dict[str, Tensor], names: list[str]) -> Tensor:
        """The running sums of the named loss terms, added over ranks (one all-reduce), in ``names`` order."""
        if not names:
            return torch.zeros(0, dtype=torch.float64)
        return distributed.all_sum(torch.stack([term_sums[name].reshape(()) for name in names]))

    def _stop_non_finite(self, epoch: int, step: int, progress: Progress) -> None:
        reason = f"the loss became NaN or infinite at epoch {epoch}, step {step} ({self.stage} stage)"
        if self.is_main:
            self.logger.summary(status="failed", reason=reason)
        last = self.logger.run_dir / LAST
        kept = f"the last good checkpoint {last} is kept" if last.exists() else "no checkpoint was written"
        if progress.epoch:
            kept += f" ({self.stage} epoch {progress.epoch})"
        raise NonFiniteLoss(f"{reason}; {kept}; lower --lr or check the inputs")
