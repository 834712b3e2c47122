"""MLKD: Jin, Wang, Lin, "Multi-level Logit Distillation", CVPR 2023 (open-access paper, no arXiv version).

Instance-level KL at several temperatures plus class-level (``P^T P``) and batch-level (``P P^T``) relation
matching, on a weak and a strong augmented view. Follows Jin-Ying/Multi-Level-Logit-Distillation's ``KD_ours``;
``mlkd_ls`` standardises the logits of the KL terms (Sun et al., CVPR 2024, arXiv 2403.01427).

The strong view reaches the method through ``Step.extra``: ``logits_s_strong`` (student, with grad) and
``logits_t_strong`` (teacher, detached); ``Step.logits_s`` / ``logits_t`` are the weak view.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distillers.errors import UserError
from distillers.methods import METHODS
from distillers.methods.base import Method, Pair, Step, Weights, kd_loss
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

# KD_ours's extra temperatures after the cfg's T: the first two also serve the strong view, the last two do not.
EXTRA_TEMPERATURES = (3.0, 5.0, 2.0, 6.0)
STRONG_KEYS = ("logits_s_strong", "logits_t_strong")
MLKD_SOURCE = "Multi-Level-Logit-Distillation configs/cifar100/ours"
CE_WEIGHT = Option("ce_weight", float, 0.1, "weight of the strong view's CE (keep it equal to the objective's -r)",
                   f"{MLKD_SOURCE}: CE_WEIGHT")


def class_relation_loss(logits_s: Tensor, logits_t: Tensor, tau: float) -> Tensor:
    """``sum((Q_t - Q_s)^2) / K`` with the K x K class-correlation ``Q = P^T P``, ``P = softmax(z / tau)``."""
    p_s, p_t = torch.softmax(logits_s / tau, dim=1), torch.softmax(logits_t / tau, dim=1)
    return (p_t.t() @ p_t - p_s.t() @ p_s).pow(2).sum() / logits_s.shape[1]


def batch_relation_loss(logits_s: Tensor, logits_t: Tensor, tau: float) -> Tensor:
    """``sum((G_t - G_s)^2) / B`` with the B x B sample-correlation ``G = P P^T``, ``P = softmax(z / tau)``."""
    p_s, p_t = torch.softmax(logits_s / tau, dim=1), torch.softmax(logits_t / tau, dim=1)
    return (p_t @ p_t.t() - p_s @ p_s.t()).pow(2).sum() / logits_s.shape[0]


def confidence_fractions(logits_t_weak: Tensor) -> tuple[Tensor, Tensor]:
    """Fractions of samples / classes at or below the median confidence of the weak-view teacher.

    KD_ours multiplies each already batch-averaged term by these masks and averages, so the masks only rescale the
    terms by the fraction they keep (1/2 for an even batch, ``(B + 1) / (2B)`` for an odd one).
    """
    probs = torch.softmax(logits_t_weak.detach(), dim=1)
    confidence = probs.max(dim=1).values
    class_confidence = probs.sum(dim=0)
    # torch.quantile's linear interpolation is numpy.percentile's default, which the reference uses.
    keep = (confidence <= torch.quantile(confidence, 0.5)).to(probs.dtype).mean()
    keep_class = (class_confidence <= torch.quantile(class_confidence, 0.5)).to(probs.dtype).mean()
    return keep, keep_class


def mlkd_loss(logits_s_weak: Tensor, logits_s_strong: Tensor, logits_t_weak: Tensor, logits_t_strong: Tensor,
              T: float, kd_weight: float, logit_stand: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """``(loss_kd, loss_cc, loss_bc)`` of KD_ours, with the KD weight inside every term; CE excluded.

    ``logit_stand`` standardises the logits of the KL terms only (the LS fork's MLKD).
    """
    temperatures = (T, *EXTRA_TEMPERATURES)
    keep, keep_class = confidence_fractions(logits_t_weak)
    kl_sw, kl_ss, kl_tw, kl_ts = logits_s_weak, logits_s_strong, logits_t_weak, logits_t_strong
    if logit_stand:
        kl_sw, kl_ss, kl_tw, kl_ts = (standardize(z) for z in (kl_sw, kl_ss, kl_tw, kl_ts))
    weak = sum(kd_loss(kl_sw, kl_tw, tau) for tau in temperatures)
    # Quirk kept: the reference's "strong" sum uses the strong view at T, 3, 5 but the weak view at 2 and 6.
    strong = (sum(kd_loss(kl_ss, kl_ts, tau) for tau in temperatures[:3])
              + sum(kd_loss(kl_sw, kl_tw, tau) for tau in temperatures[3:]))
    loss_kd = kd_weight * keep * weak + kd_weight * strong
    # Class and batch relations: weak view only, raw logits (the reference computes strong-view ones but drops them).
    loss_cc = kd_weight * keep_class * sum(class_relation_loss(logits_s_weak, logits_t_weak, t) for t in temperatures)
    loss_bc = kd_weight * keep * sum(batch_relation_loss(logits_s_weak, logits_t_weak, t) for t in temperatures)
    return loss_kd, loss_cc, loss_bc


@METHODS.register("mlkd")
class MLKD(LogitOptions, Method):
    """Multi-level logit distillation on two views; the objective's ``gamma * CE`` covers the weak view and the method
    adds ``ce_weight * CE`` of the strong view, so ``gamma = ce_weight`` reproduces the reference's ``loss_ce``.

    Options (``MLKD.options``): ``T`` (``--kd_T``, 4), ``kd_weight`` (0.9), ``ce_weight`` (0.1; keep it equal to
    the objective's gamma). Needs ``Step.extra`` keys ``logits_s_strong`` and ``logits_t_strong``.
    Kept quirks: the confidence masks only rescale the terms (see ``confidence_fractions``); the strong-view KL
    sum uses the weak logits at temperatures 2 and 6; class and batch relations use the weak view only.
    """

    name = "mlkd"
    teacher_features = False  # logits only: works with several teachers
    display_name = "MLKD"
    table_rank = 210
    paper = "Multi-level Logit Distillation (Jin, Wang, Lin, CVPR 2023; no arXiv version)"
    weights = Weights(gamma=0.1, alpha=0.0, beta=1.0)
    weights_note = ("Multi-Level-Logit-Distillation configs/cifar100/ours (KD_ours): T 4, CE_WEIGHT 0.1, KD_WEIGHT "
                    "0.9; gamma = CE weight of the weak view, the strong view's CE and the KD weight live inside the "
                    "method. Published numbers use two views (strong = RandAugment + Cutout), lr 0.025, 240-960 epochs")
    protocol = "mlkd-strong"  # published numbers: MLKD's two-view recipe, not the CRD protocol
    needs_strong_view = True  # the engine must put the strong view's logits in Step.extra
    options = (temperature_option(False), kd_weight_option(0.9, f"{MLKD_SOURCE}: KD_WEIGHT"), CE_WEIGHT)

    def __init__(self, T: float = 4.0, kd_weight: float = 0.9, ce_weight: float = 0.1) -> None:
        super().__init__()
        self.T, self.kd_weight, self.ce_weight = T, kd_weight, ce_weight

    @classmethod
    def build(cls, pair: Pair) -> MLKD:
        values = cls.resolve_options(pair.options.extra)
        return cls(T=cls.temperature(values, pair), kd_weight=values["kd_weight"], ce_weight=values["ce_weight"])

    def loss(self, logits_s_weak: Tensor, logits_s_strong: Tensor, logits_t_weak: Tensor,
             logits_t_strong: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(loss_kd, loss_cc, loss_bc)``, without any cross-entropy."""
        return mlkd_loss(logits_s_weak, logits_s_strong, logits_t_weak, logits_t_strong, self.T, self.kd_weight,
                         self.logit_stand)

    def forward(self, step: Step) -> dict[str, Tensor]:
        missing = [key for key in STRONG_KEYS if key not in step.extra]
        if missing:
            raise UserError(f"method {self.name!r} needs a strong augmented view (Step.extra lacks {missing}); "
                            f"train it with --augment strong")
        logits_s_strong, logits_t_strong = (step.extra[key] for key in STRONG_KEYS)
        loss_kd, loss_cc, loss_bc = self.loss(step.logits_s, logits_s_strong, step.logits_t, logits_t_strong)
        ce_strong = self.ce_weight * F.cross_entropy(logits_s_strong, step.target)
        return {"ce_strong": ce_strong, "kd": loss_kd, "cc": loss_cc, "bc": loss_bc}


@METHODS.register("mlkd_ls")
class MLKDLS(Standardized, MLKD):
    """MLKD with standardised logits in every KL term (the LS fork's ``--logit-stand --base-temp 2 --kd-weight 9``).

    Options as ``mlkd`` but the temperature is ``base_temp`` (default 2, so temperature 2 is used twice) and
    ``kd_weight`` defaults to 9; relations, masks and CE stay on the raw logits.
    """

    name = "mlkd_ls"
    display_name = "MLKD+LS"
    table_rank = 240
    paper = LS_PAPER
    weights_note = ("logit-standardization-KD fork's MLKD: --logit-stand --base-temp 2 --kd-weight 9, CE weight 0.1; "
                    "the fork trains resnet32x4 -> resnet8x4 for 480 epochs on two views")
    options = (*LS_OPTIONS, CE_WEIGHT)
