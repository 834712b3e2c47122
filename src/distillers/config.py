"""Typed run configuration with the seed's defaults; saved as ``config.json`` in every run directory."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from distillers.errors import UserError

LR_SCALINGS = ("linear", "none")


@dataclass
class MethodOptions:
    """Hyper-parameters shared by several methods, with the seed's defaults and flag names.

    Method-specific options (``--method-opt KEY=VALUE``) live in ``extra``; each method declares the keys it takes
    (``Method.options``) and ``Method.resolve_options`` checks and types them. Kept here, not in the methods
    package, so that reading a config does not import every method.
    """

    kd_T: float = 4.0  # KD temperature (--kd_T)
    feat_dim: int = 128  # embedding size of CRD/CC/ICD/RRD heads (--feat_dim)
    nce_k: int = 16384  # CRD negatives / RRD queue length (--nce_k)
    nce_t: float = 0.07  # CRD temperature (--nce_t)
    nce_m: float = 0.5  # CRD memory momentum (--nce_m)
    mode: str = "exact"  # CRD sampling mode: exact | relax (--mode)
    nce_t_s: float = 0.04  # RRD student temperature
    nce_t_t: float = 0.1  # RRD teacher temperature
    hint_layer: int = 2  # FitNet feature index (--hint_layer)
    init_epochs: int = 30  # initialisation stage of AB/FT/FSP (--init_epochs)
    extra: dict[str, Any] = field(default_factory=dict)  # method-specific options (--method-opt KEY=VALUE)


@dataclass
class RunConfig:
    """Everything needed to rerun a task. ``None`` means "the seed's default for this model/method"."""

    task: str = "teacher"  # teacher | distill | transfer
    dataset: str = "cifar100"
    data_dir: str = "./data"
    download: bool = False
    out: str = "./runs"
    name: str | None = None  # run-directory name; derived from the settings when None
    trial: int | str = 1
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    workers: int = 2
    augment: str = "standard"  # standard (crop + flip) | strong (adds a RandAugment + Cutout view, for MLKD)
    data_path: str = "auto"  # auto | device (alias gpu) | cpu: CIFAR batches resident on the device (engine.speed)
    # Optimisation (RepDistiller train_teacher.py / train_student.py defaults).
    epochs: int = 240
    batch_size: int = 64
    lr: float | None = None  # 0.05, or 0.01 for MobileNetV2/ShuffleV1/ShuffleV2
    lr_decay_epochs: tuple[int, ...] = (150, 180, 210)
    lr_decay_rate: float = 0.1
    weight_decay: float = 5e-4
    momentum: float = 0.9
    # Models.
    model: str | None = None  # teacher task: the architecture to train; transfer: the student's
    student: str | None = None
    teacher_path: str | None = None
    teacher: str | None = None  # teacher architecture (read from the checkpoint when None)
    student_path: str | None = None  # transfer: the distilled student checkpoint
    # External models (timm:<name>, torchvision:<name>; models/sources.py) and folder datasets.
    teacher_weights: str | None = None  # the teacher's weights file (state dict, safetensors or our checkpoint)
    student_weights: str | None = None  # initial weights of the student
    pretrained: str | None = None  # teacher | student | both: the library's published weights from its hub
    reset_head: bool = False  # a student whose weights have another class count gets a new head
    input_size: int | None = None  # side of the images the models see (imagefolder); None: the dataset's
    extra_teachers: tuple[str, ...] = ()  # more teachers (--teacher repeated; logit methods only)
    teacher_weighting: str = "mean"  # mean | comma-separated weights of the teachers' logits
    # Distillation objective gamma * CE + alpha * KL(T) + beta * method.
    method: str | None = None
    gamma: float | None = None
    alpha: float | None = None
    beta: float | None = None
    method_options: MethodOptions = field(default_factory=MethodOptions)
    # Run control.
    resume: bool = False
    overwrite: bool = False
    save_freq: int = 40  # periodic ckpt_epoch_N.pt, as the seed
    amp: str = "auto"  # auto | on | off: bf16 autocast (on: CPU too; auto: GPUs with native bf16)
    channels_last: str = "auto"  # auto | on | off: NHWC activations (auto: on CUDA)
    compile: bool = False  # torch.compile the models (falls back to eager when compilation fails)
    deterministic: bool = False  # deterministic cuDNN and torch algorithms, no cudnn.benchmark (engine.speed)
    max_steps_per_epoch: int | None = None  # for smoke tests and benchmarks
    # Several processes (torchrun, docs/distributed.md): the batch size is per process.
    lr_scaling: str = "linear"  # linear: lr x number of processes (the global batch grows with it) | none
    sync_bn: bool = False  # BatchNorm statistics over the global batch (SyncBatchNorm; GPUs only)
    # Experiment trackers (distillers.tracking), mirrors of metrics.jsonl and summary.json, which are always written.
    log: tuple[str, ...] = ("tensorboard",)  # --log: any of tensorboard, mlflow, wandb; () for none
    log_project: str | None = None  # MLflow experiment / W&B project (default: distillers)
    mlflow_uri: str | None = None  # MLflow tracking URI (default: sqlite:///<out>/mlflow.db, works offline)
    sweep: str | None = None  # the sweep this run belongs to: a tag on its tracker runs, so trackers group them

    def validate(self) -> None:
        """Refuse values that cannot work before any expensive step."""
        for label, value in (("--epochs", self.epochs), ("--batch-size", self.batch_size)):
            if not isinstance(value, int) or value <= 0:
                raise UserError(f"{label} must be a positive integer, got {value}")
        _check_finite(self)
        if self.lr is not None and not self.lr > 0:
            raise UserError(f"--lr must be positive, got {self.lr}")
        if not 0 <= self.method_options.nce_m <= 1:
            raise UserError(f"--nce-m (CRD memory momentum) must be between 0 and 1, got {self.method_options.nce_m}")
        if self.save_freq < 0:
            raise UserError(f"--save-freq must be >= 0 (0: no periodic checkpoints), got {self.save_freq}")
        for label, value in (("--name", self.name), ("--trial", self.trial)):
            text = str(value) if value is not None else None
            if text is not None and (not text or text in (".", "..") or "/" in text or "\\" in text or "\0" in text):
                raise UserError(f"{label} {text!r} cannot be part of a run-directory name (no slashes, not . or ..); "
                                f"--out chooses the parent folder")
        if self.weight_decay < 0 or self.momentum < 0:
            raise UserError("--weight-decay and --momentum must be >= 0")
        if self.workers < 0:
            raise UserError(f"--workers must be >= 0, got {self.workers}")
        decay = list(self.lr_decay_epochs)
        if any(not isinstance(e, int) or e <= 0 for e in decay):
            raise UserError(f"--lr-decay-epochs must be positive epochs, got {decay}")
        if decay != sorted(set(decay)):
            raise UserError(f"--lr-decay-epochs must be increasing with no repeats, got {','.join(map(str, decay))}; "
                            f"did you mean {','.join(map(str, sorted(set(decay))))}?")
        if self.lr_scaling not in LR_SCALINGS:
            raise UserError(f"unknown --lr-scaling {self.lr_scaling!r}; choose {' or '.join(LR_SCALINGS)}")
        from distillers.tracking import parse_names

        parse_names(self.log)  # an unknown tracker fails here, before the run directory exists
        if self.method_options.init_epochs < 0:
            raise UserError(f"--init-epochs must be >= 0, got {self.method_options.init_epochs}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if isinstance(values.get("method_options"), dict):
            values["method_options"] = MethodOptions(**values["method_options"])
        if "lr_decay_epochs" in values:
            values["lr_decay_epochs"] = tuple(values["lr_decay_epochs"])
        if isinstance(values.get("log"), list):
            values["log"] = tuple(values["log"])
        if isinstance(values.get("channels_last"), bool):  # written before it took auto | on | off
            values["channels_last"] = "auto" if values["channels_last"] else "off"
        return cls(**values)


def _check_finite(cfg: RunConfig) -> None:
    """NaN or infinity in a number the loss or optimiser uses only shows up as a NaN stop after the run has started."""
    numbers = {"--lr": cfg.lr, "--lr-decay-rate": cfg.lr_decay_rate, "--weight-decay": cfg.weight_decay,
               "--momentum": cfg.momentum, "-r/--gamma": cfg.gamma, "-a/--alpha": cfg.alpha, "-b/--beta": cfg.beta,
               "--kd-T": cfg.method_options.kd_T, "--nce-t": cfg.method_options.nce_t,
               "--nce-m": cfg.method_options.nce_m, "--nce-t-s": cfg.method_options.nce_t_s,
               "--nce-t-t": cfg.method_options.nce_t_t}
    for label, value in numbers.items():
        if value is not None and not math.isfinite(value):
            raise UserError(f"{label} must be a finite number, got {value}")


def decay_note(cfg: RunConfig) -> str | None:
    """The log line for --lr-decay-epochs beyond --epochs (allowed: short smoke runs keep the seed's schedule)."""
    beyond = [e for e in cfg.lr_decay_epochs if e >= cfg.epochs]
    if not beyond:
        return None
    kept = [e for e in cfg.lr_decay_epochs if e < cfg.epochs]
    effect = f"the lr decays only after epoch(s) {','.join(map(str, kept))}" if kept else "the lr never decays"
    return (f"note: --lr-decay-epochs {','.join(map(str, beyond))} not before the end of this {cfg.epochs}-epoch run: "
            f"{effect}")
