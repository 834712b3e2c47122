"""OFD: Heo, Kim, Yun, Park, Kwak, Choi, "A Comprehensive Overhaul of Feature Distillation", ICCV 2019,
arXiv 1904.01866.

Distils pre-ReLU stage outputs through a 1x1 conv + BN connector with a partial L2 loss that ignores student values
below the teacher's margin (the expected negative response of each teacher channel, from its BN-before-ReLU).
Follows mdistiller's ``OFD``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillers.methods import METHODS, Option
from distillers.methods.base import Method, Pair, Step, Weights, unsupported


def ofd_margins(bn_weight: Tensor, bn_bias: Tensor) -> Tensor:
    """Per-channel margin: the mean of ``N(bias, |weight|^2)`` below zero, or ``-3 |weight|`` when that tail is tiny.

    Computed in float64 and rounded to float32, as the reference stores it.
    """
    s = bn_weight.detach().double().abs()
    m = bn_bias.detach().double()
    tail = torch.special.ndtr(-m / s)  # Phi(-m/s): the probability of a negative response
    pdf = torch.exp(-0.5 * (m / s) ** 2) / math.sqrt(2 * math.pi)
    margin = torch.where(tail > 0.001, m - s * pdf / tail, -3 * s)
    return margin.float()


def ofd_stage_loss(source: Tensor, target: Tensor, margin: Tensor) -> Tensor:
    """Partial L2 between a connector output and the (pooled) teacher map, summed and divided by the batch size.

    The target is raised to the margin; a position counts when the student exceeds the target or the target is
    positive. Margins are negative, so this is the paper's three-case rule in one expression.
    """
    target = torch.max(target, margin)
    mask = (source > target) | (target > 0)
    return ((source - target).pow(2) * mask.to(source.dtype)).sum() / source.shape[0]


def _connector(s_channels: int, t_channels: int) -> nn.Sequential:
    conv = nn.Conv2d(s_channels, t_channels, kernel_size=1, bias=False)
    nn.init.normal_(conv.weight, 0.0, math.sqrt(2.0 / t_channels))  # N(0, sqrt(2 / (k * k * C_t))), k = 1
    return nn.Sequential(conv, nn.BatchNorm2d(t_channels))


@METHODS.register("ofd")
class OFD(Method):
    """Overhaul feature distillation: ``feat_weight * sum_i stage_loss_i / 2^(n-1-i)`` on pre-activation stages.

    Options (``OFD.options``): ``feat_weight`` (0.001). Kept quirks: the teacher runs in train mode during
    distillation (``teacher_mode``: its BNs use batch statistics and update their running stats); margins are
    rounded to float32. Deviation: the reference pairs margins from the first teacher stage with features aligned
    from the last, so pairs with different stage counts are rejected here instead of being silently misaligned.
    """

    name = "ofd"
    display_name = "OFD"
    table_rank = 190
    paper = "A Comprehensive Overhaul of Feature Distillation (Heo et al., ICCV 2019, arXiv 1904.01866)"
    weights = Weights(gamma=1.0, alpha=0.0, beta=1.0)
    weights_note = ("mdistiller cfg defaults OFD.LOSS.CE_WEIGHT 1, FEAT_WEIGHT 0.001 (its CIFAR-100 resnet32x4 -> "
                    "resnet8x4 config keeps them); gamma = CE weight, the feature weight lives inside the method")
    preact = True
    options = (Option("feat_weight", float, 1e-3, "weight of the feature loss (inside the method)",
                      "mdistiller cfg default OFD.LOSS.FEAT_WEIGHT"),)

    def __init__(self, s_channels: Sequence[int], t_channels: Sequence[int], bn_weights: Sequence[Tensor],
                 bn_biases: Sequence[Tensor], feat_weight: float = 1e-3) -> None:
        super().__init__()
        self.feat_weight = feat_weight
        self.connectors = nn.ModuleList(_connector(s, t) for s, t in zip(s_channels, t_channels, strict=True))
        for i, (weight, bias) in enumerate(zip(bn_weights, bn_biases, strict=True)):
            # Derived from the teacher at build time: follows the module's device, not saved in checkpoints.
            margin = ofd_margins(weight, bias).to(torch.get_default_dtype()).view(1, -1, 1, 1)
            self.register_buffer(f"margin{i}", margin, persistent=False)

    @classmethod
    def build(cls, pair: Pair) -> OFD:
        s_stages, t_stages = pair.student_shapes[1:-1], pair.teacher_shapes[1:-1]
        if len(s_stages) != len(t_stages):
            raise unsupported(cls.name, pair, f"OFD pairs stages one to one, but the teacher has {len(t_stages)} "
                                              f"and the student {len(s_stages)}")
        try:
            bns = list(pair.teacher.get_bn_before_relu())
        except NotImplementedError:
            raise unsupported(cls.name, pair, f"the teacher {pair.teacher_name} has no BN-before-ReLU layers "
                                              f"to derive the margins from") from None
        return cls([shape[0] for shape in s_stages], [shape[0] for shape in t_stages], [bn.weight for bn in bns],
                   [bn.bias for bn in bns], feat_weight=cls.resolve_options(pair.options.extra)["feat_weight"])

    @property
    def margins(self) -> list[Tensor]:
        return [getattr(self, f"margin{i}") for i in range(len(self.connectors))]

    def teacher_mode(self) -> bool:
        return True  # mdistiller's OFD overrides train() to put the teacher in train mode too

    def loss(self, feats_s: Sequence[Tensor], feats_t: Sequence[Tensor]) -> Tensor:
        """OFD over the pre-activation stage maps (one connector forward per stage), without ``feat_weight``."""
        n = len(self.connectors)
        total = feats_s[0].new_zeros(())
        for i, (connector, feat_s, feat_t, margin) in enumerate(
                zip(self.connectors, feats_s, feats_t, self.margins, strict=True)):
            source = connector(feat_s)
            target = F.adaptive_avg_pool2d(feat_t, source.shape[-2:]).detach()
            total = total + ofd_stage_loss(source, target, margin) / 2 ** (n - 1 - i)
        return total

    def forward(self, step: Step) -> dict[str, Tensor]:
        return {"ofd": self.feat_weight * self.loss(step.feats_s[1:-1], step.feats_t[1:-1])}
