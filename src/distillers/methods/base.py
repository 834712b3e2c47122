"""The Method contract: what a distillation method declares, owns and computes.

A method is one file with one ``Method`` subclass registered in ``METHODS``. The engine never names a
method: it asks the class what it consumes (pre-activation features, sample indices, contrastive indices),
which modules it trains (``main_parameters``), whether it has an initialisation stage, which ``--method-opt``
options it takes (``options``, typed by ``resolve_options``), and what state it checkpoints (ordinary module
buffers). Every attribute the engine reads is declared here with its default, and is a class constant: a
variant with other constants is another class (``CRDQueue``), never an instance override. The training
objective is assembled by ``distillers.objective``: ``gamma * CE + alpha * KL_T + beta * method(step)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from distillers.config import MethodOptions
from distillers.errors import UserError
from distillers.methods.options import Option, resolve
from distillers.models.base import feature_shapes


@dataclass(frozen=True)
class Weights:
    """The seed's ``-r -a -b``: weights of cross-entropy, KL(T) and the method's own loss."""

    gamma: float = 1.0
    alpha: float = 0.0
    beta: float = 0.0


@dataclass
class Pair:
    """The teacher/student pair (and data facts) a method is built for."""

    student: nn.Module
    teacher: nn.Module
    student_name: str
    teacher_name: str
    num_classes: int = 100
    num_data: int = 50000  # training-set size (CRD memory bank rows)
    input_size: int = 32
    options: MethodOptions = field(default_factory=MethodOptions)

    @property
    def student_shapes(self) -> list[tuple[int, ...]]:
        return feature_shapes(self.student, self.input_size)

    @property
    def teacher_shapes(self) -> list[tuple[int, ...]]:
        return feature_shapes(self.teacher, self.input_size)


@dataclass
class Step:
    """What one training step exposes to a method. Teacher tensors are detached."""

    feats_s: list[Tensor]
    feats_t: list[Tensor]
    logits_s: Tensor
    logits_t: Tensor
    target: Tensor
    index: Tensor | None = None  # sample indices (CRD memory)
    contrast_index: Tensor | None = None  # CRD positive + negatives, (B, K+1)
    epoch: int = 1  # 1-based training epoch (warm-ups)
    extra: dict[str, Tensor] = field(default_factory=dict)  # e.g. a second augmented view's logits


class Method(nn.Module):
    """Base class of a distillation method; subclasses override what they need."""

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    display_name: ClassVar[str] = ""  # row name in result tables ("": name upper-cased); read per class, not inherited
    table_rank: ClassVar[int] = 1000  # row order in result tables; read per class; the default sorts after known rows
    weights: ClassVar[Weights] = Weights()  # defaults from the seed's run script
    weights_note: ClassVar[str] = ""  # where the default weights come from, when not obvious
    preact: ClassVar[bool] = False  # consume pre-activation features (student and teacher)
    teacher_preact: ClassVar[bool | None] = None  # the teacher's side when it differs (ReviewKD); None: ``preact``
    needs_index: ClassVar[bool] = False  # needs the sample index of every image
    needs_contrast: ClassVar[bool] = False  # needs CRD contrastive indices
    init_stage: ClassVar[bool] = False  # has an initialisation stage (AB, FT, FSP)
    needs_strong_view: ClassVar[bool] = False  # trains on a second, strongly augmented view (MLKD)
    nonfinite_advice: ClassVar[str] = ""  # what the non-finite stop suggests besides a lower --lr (KDSVD: svd=guarded)
    teacher_features: ClassVar[bool] = True  # reads features (False: both models' logits only; several teachers)
    protocol: ClassVar[str] = "crd"  # training protocol of the published numbers (reports flag other ones)
    options: ClassVar[tuple[Option, ...]] = ()  # what --method-opt KEY=VALUE may set (``resolve_options``)

    @classmethod
    def resolve_options(cls, raw: dict[str, Any]) -> dict[str, Any]:
        """Every declared option with its typed value (``raw``'s, else the default); a key the method does not
        declare, or a value of the wrong type, is a one-line UserError. Idempotent: a resolved dict is accepted."""
        return resolve(cls.name, cls.options, raw)

    @classmethod
    def data_needs(cls, options: MethodOptions) -> tuple[bool, bool]:
        """``(needs_index, needs_contrast)`` for these options (CRD's queue mode needs neither)."""
        return cls.needs_index, cls.needs_contrast

    @classmethod
    def build(cls, pair: Pair) -> Method:
        """Construct the method for a pair; raise UserError before training when the pair is unsupported."""
        return cls()

    def forward(self, step: Step) -> Tensor | dict[str, Tensor]:
        """The method's loss (before ``beta``); a dict names several terms, which are summed."""
        raise NotImplementedError

    def main_parameters(self) -> Iterable[nn.Parameter]:
        """Parameters the main optimiser trains besides the student's."""
        return self.parameters()

    def check_batch_size(self, batch_size: int) -> None:
        """Raise UserError when the method cannot run with this batch size (e.g. RRD's queue length)."""

    # Two-stage methods (AB, FT, FSP) override the four below.
    def init_lr(self, student_name: str, lr: float) -> float:
        """Learning rate of the initialisation stage (the seed uses the main one, but for FT's quirk)."""
        return lr

    def init_loss(self, step: Step) -> Tensor:
        raise NotImplementedError(f"{self.name} has no initialisation stage")

    def init_modules(self, student: nn.Module) -> list[nn.Module]:
        """Modules trained (and put in train mode) during the initialisation stage."""
        raise NotImplementedError(f"{self.name} has no initialisation stage")

    def end_init_stage(self) -> None:
        """Called once after the initialisation stage (freeze or switch modes of init-only modules)."""

    def teacher_mode(self) -> bool:
        """Whether the teacher is in train mode during distillation (False for all but OFD's quirk)."""
        return False


def unsupported(method: str, pair: Pair, why: str) -> UserError:
    """The one-line error for a method that cannot apply to a pair (said before any training)."""
    return UserError(f"method {method!r} does not support {pair.teacher_name} -> {pair.student_name}: {why}")


def kd_loss(logits_s: Tensor, logits_t: Tensor, T: float) -> Tensor:
    """Hinton's KD: ``T^2 * KL(softmax(z_t/T) || softmax(z_s/T))`` summed over classes, averaged over the batch."""
    log_q = torch.log_softmax(logits_s / T, dim=1)
    p = torch.softmax(logits_t / T, dim=1)
    return torch.nn.functional.kl_div(log_q, p, reduction="sum") * T**2 / logits_s.shape[0]
