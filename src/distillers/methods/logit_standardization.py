"""Logit standardisation (LS): Sun et al., "Logit Standardization in Knowledge Distillation", CVPR 2024,
arXiv 2403.01427.

``standardize`` is the shared Z-score used by ``kd_ls`` (here), ``dkd_ls`` (dkd.py) and ``mlkd_ls`` (mlkd.py):
each method applies it to the logits entering its KL terms, never to the cross-entropy. Follows the authors'
mdistiller fork (sunshangquan/logit-standardization-KD, ``--logit-stand --base-temp 2 --kd-weight 9``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor

from distillers.methods import METHODS
from distillers.methods.base import Method, Pair, Step, Weights, kd_loss
from distillers.methods.options import Option

LS_PAPER = "Logit Standardization in Knowledge Distillation (Sun et al., CVPR 2024, arXiv 2403.01427)"
LS_SOURCE = "logit-standardization-KD fork: --logit-stand --base-temp 2 --kd-weight 9"


def standardize(logits: Tensor, eps: float = 1e-7) -> Tensor:
    """Per-row Z-score over the classes, ``(z - mean) / (eps + std)`` with the unbiased std, as the fork does.

    The ``eps`` is added to the std (not under a square root); gradients flow through the mean and the std.
    """
    mean = logits.mean(dim=-1, keepdim=True)
    std = logits.std(dim=-1, keepdim=True)
    return (logits - mean) / (eps + std)


def temperature_option(standardized: bool) -> Option:
    """The temperature of a logit method: ``T`` (``--kd_T`` when not given) or, standardised, ``base_temp`` 2."""
    if standardized:
        return Option("base_temp", float, 2.0, "temperature of the KL terms on standardised logits", LS_SOURCE)
    return Option("T", float, None, "temperature of the KL terms (default: --kd_T, 4)", "the seed's --kd_T")


def kd_weight_option(default: float, source: str) -> Option:
    """The weight a logit method puts on its own KD terms (the objective's beta stays 1)."""
    return Option("kd_weight", float, default, "weight of the method's KD terms (inside the method)", source)


LS_OPTIONS = (temperature_option(True), kd_weight_option(9.0, LS_SOURCE))


class LogitOptions:
    """How a logit method reads its temperature from ``--method-opt`` (mixin for DKD, MLKD, KD+LS)."""

    logit_stand: ClassVar[bool] = False  # standardise the logits entering the KL terms
    temperature_key: ClassVar[str] = "T"  # the option naming the temperature

    @classmethod
    def temperature(cls, values: dict[str, Any], pair: Pair) -> float:
        """The resolved temperature option, or ``--kd_T`` when it defers to it."""
        value = values[cls.temperature_key]
        return float(pair.options.kd_T) if value is None else value


class Standardized(LogitOptions):
    """The LS fork's flags ``--logit-stand --base-temp 2 --kd-weight 9`` (their options: ``LS_OPTIONS``)."""

    logit_stand = True
    temperature_key = "base_temp"


def kd_ls_loss(logits_s: Tensor, logits_t: Tensor, T: float) -> Tensor:
    """KD (batch-mean KL times ``T^2``) between the standardised logits at base temperature ``T``."""
    return kd_loss(standardize(logits_s), standardize(logits_t), T)


@METHODS.register("kd_ls")
class KDLS(Standardized, Method):
    """KD on standardised logits: ``kd_weight * T^2 * KL(softmax(Z(z_t)/T) || softmax(Z(z_s)/T))``.

    Options (``LS_OPTIONS``): ``base_temp`` (default 2), ``kd_weight`` (default 9). Kept quirks: ``Z`` uses
    the unbiased std with 1e-7 added to it; the fork's KD defaults (T 2, CE 0.1, KD 9) differ from mdistiller's
    (4 / 0.1 / 0.9); we use the fork's, as published.
    """

    name = "kd_ls"
    teacher_features = False  # logits only: works with several teachers
    display_name = "KD+LS"
    table_rank = 220
    paper = LS_PAPER
    weights = Weights(gamma=0.1, alpha=0.0, beta=1.0)
    weights_note = ("logit-standardization-KD fork: --logit-stand --base-temp 2 --kd-weight 9 with its cfg's CE weight "
                    "0.1; gamma = CE weight, the KD weight lives inside the method (beta = 1)")
    options = LS_OPTIONS

    def __init__(self, T: float = 2.0, kd_weight: float = 9.0) -> None:
        super().__init__()
        self.T = T
        self.kd_weight = kd_weight

    @classmethod
    def build(cls, pair: Pair) -> KDLS:
        values = cls.resolve_options(pair.options.extra)
        return cls(T=cls.temperature(values, pair), kd_weight=values["kd_weight"])

    def forward(self, step: Step) -> dict[str, Tensor]:
        return {"kd_ls": self.kd_weight * kd_ls_loss(step.logits_s, step.logits_t, self.T)}
