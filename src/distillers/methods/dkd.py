"""DKD: Zhao, Cui, Song, Qiu, Liang, "Decoupled Knowledge Distillation", CVPR 2022, arXiv 2203.08679.

KD split into a target-class term (TCKD: binary target / non-target distributions) and a non-target term (NCKD:
the distribution over the other classes), weighted separately and warmed up linearly. Follows mdistiller's ``DKD``;
``dkd_ls`` is the same loss on standardised logits (Sun et al., CVPR 2024, arXiv 2403.01427).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distillers.methods import METHODS
from distillers.methods.base import Method, Pair, Step, Weights
from distillers.methods.logit_standardization import (
    LS_OPTIONS,
    LS_PAPER,
    LogitOptions,
    Standardized,
    kd_weight_option,
    standardize,
    temperature_option,
)
from distillers.methods.options import Option

# mdistiller configs/cifar100/dkd/*.yaml: DKD.BETA per (teacher, student); unlisted pairs get the cfg default 8.
DKD_BETA: dict[tuple[str, str], float] = {
    ("resnet32x4", "resnet8x4"): 8.0,
    ("resnet32x4", "ShuffleV1"): 8.0,
    ("resnet32x4", "ShuffleV2"): 8.0,
    ("ResNet50", "MobileNetV2"): 8.0,
    ("wrn_40_2", "ShuffleV1"): 8.0,
    ("vgg13", "vgg8"): 6.0,
    ("vgg13", "MobileNetV2"): 6.0,
    ("wrn_40_2", "wrn_16_2"): 6.0,
    ("wrn_40_2", "wrn_40_1"): 6.0,
    ("resnet56", "resnet20"): 2.0,
    ("resnet110", "resnet32"): 2.0,
}
DEFAULT_BETA = 8.0
DKD_SOURCE = "mdistiller configs/cifar100/dkd"
# DKD's own options; the temperature and kd_weight come from the logit options (plain or standardised).
DKD_OPTIONS = (
    Option("alpha", float, 1.0, "weight of the target-class term TCKD", DKD_SOURCE),
    Option("beta", float, None, "weight of the non-target term NCKD (default: per pair, DKD_BETA; else 8)",
           f"{DKD_SOURCE}/*.yaml DKD.BETA per pair (dkd.DKD_BETA)"),
    Option("warmup", int, 20, "epochs of the linear warm-up of both terms", DKD_SOURCE),
)


def dkd_loss(logits_s: Tensor, logits_t: Tensor, target: Tensor, alpha: float, beta: float,
             T: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(alpha * TCKD + beta * NCKD, TCKD, NCKD)``, each KL summed over classes, batch-averaged, times ``T^2``."""
    batch = logits_s.shape[0]
    gt = F.one_hot(target, logits_s.shape[1]).to(torch.bool)
    p_s = torch.softmax(logits_s / T, dim=1)
    p_t = torch.softmax(logits_t / T, dim=1)
    # Binary distributions [p(y), sum of the other classes] (mdistiller sums the others rather than using 1 - p(y)).
    b_s = torch.stack([p_s[gt], p_s.masked_fill(gt, 0).sum(1)], dim=1)
    b_t = torch.stack([p_t[gt], p_t.masked_fill(gt, 0).sum(1)], dim=1)
    tckd = F.kl_div(torch.log(b_s), b_t, reduction="sum") * T**2 / batch
    # Non-target distributions: shifting the target logit by -1000 makes its probability exactly 0, as the reference.
    shift = 1000.0 * gt.to(logits_s.dtype)
    log_q_s = torch.log_softmax(logits_s / T - shift, dim=1)
    q_t = torch.softmax(logits_t / T - shift, dim=1)
    nckd = F.kl_div(log_q_s, q_t, reduction="sum") * T**2 / batch
    return alpha * tckd + beta * nckd, tckd, nckd


@METHODS.register("dkd")
class DKD(LogitOptions, Method):
    """Decoupled KD, ``min(epoch / warmup, 1) * (alpha * TCKD + beta * NCKD)`` on top of ``gamma * CE``.

    Options (``DKD.options``): ``alpha`` (1), ``beta`` (per pair, see ``DKD_BETA``), ``T`` (``--kd_T``, 4),
    ``warmup`` (20 epochs), ``kd_weight`` (1; multiplies alpha and beta, as the LS fork's ``--kd-weight``).
    Kept quirks: the binary non-target probability is the sum of the other classes, not ``1 - p(y)``; the
    non-target distribution comes from shifting the target logit by -1000 (its probability underflows to 0); the
    warm-up uses 1-based epochs (factor 1/20 in the first epoch, mdistiller's convention).
    """

    name = "dkd"
    teacher_features = False  # logits only: works with several teachers
    display_name = "DKD"
    table_rank = 170
    paper = "Decoupled Knowledge Distillation (Zhao et al., CVPR 2022, arXiv 2203.08679)"
    weights = Weights(gamma=1.0, alpha=0.0, beta=1.0)
    weights_note = ("mdistiller configs/cifar100/dkd: CE_WEIGHT 1, ALPHA 1, BETA 8/6/2 per pair, T 4, WARMUP 20; "
                    "gamma = CE weight, alpha/beta/warm-up live inside the method (beta = 1)")
    options = (*DKD_OPTIONS, temperature_option(False),
               kd_weight_option(1.0, "the LS fork's --kd-weight (1: plain DKD)"))

    def __init__(self, alpha: float = 1.0, beta: float = DEFAULT_BETA, T: float = 4.0, warmup: int = 20) -> None:
        super().__init__()
        self.alpha, self.beta, self.T, self.warmup = alpha, beta, T, warmup

    @classmethod
    def build(cls, pair: Pair) -> DKD:
        values = cls.resolve_options(pair.options.extra)
        kd_weight, beta = values["kd_weight"], values["beta"]
        if beta is None:
            beta = DKD_BETA.get((pair.teacher_name, pair.student_name), DEFAULT_BETA)
        return cls(alpha=kd_weight * values["alpha"], beta=kd_weight * beta, T=cls.temperature(values, pair),
                   warmup=values["warmup"])

    def loss(self, logits_s: Tensor, logits_t: Tensor, target: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(DKD, TCKD, NCKD)`` without the warm-up factor (on standardised logits for ``dkd_ls``)."""
        if self.logit_stand:
            logits_s, logits_t = standardize(logits_s), standardize(logits_t)
        return dkd_loss(logits_s, logits_t, target, self.alpha, self.beta, self.T)

    def forward(self, step: Step) -> dict[str, Tensor]:
        _, tckd, nckd = self.loss(step.logits_s, step.logits_t, step.target)
        ramp = min(step.epoch / self.warmup, 1.0)
        return {"tckd": ramp * self.alpha * tckd, "nckd": ramp * self.beta * nckd}


@METHODS.register("dkd_ls")
class DKDLS(Standardized, DKD):
    """DKD on standardised logits (the LS fork's ``--logit-stand --base-temp 2 --kd-weight 9``).

    Options as ``dkd`` but the temperature is ``base_temp`` (default 2) and ``kd_weight`` defaults to 9, so
    resnet32x4 -> resnet8x4 gets alpha 9, beta 72. CE stays on the raw logits with weight 1.
    """

    name = "dkd_ls"
    display_name = "DKD+LS"
    table_rank = 230
    paper = LS_PAPER
    weights_note = ("logit-standardization-KD fork over mdistiller's DKD configs: alpha and beta times --kd-weight 9, "
                    "T = --base-temp 2, CE weight 1, warm-up 20")
    options = (*DKD_OPTIONS, *LS_OPTIONS)
