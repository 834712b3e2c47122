"""VID: Ahn et al., "Variational Information Distillation for Knowledge Transfer", CVPR 2019, arXiv 1904.05835."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillers.methods import METHODS
from distillers.methods.base import Method, Pair, Step, Weights
from distillers.methods.common import pool


def _conv1x1(channels_in: int, channels_out: int) -> nn.Conv2d:
    return nn.Conv2d(channels_in, channels_out, kernel_size=1, bias=False)


class VIDStage(nn.Module):
    """Gaussian likelihood of a teacher map given a student map: 1x1-conv mean, learned per-channel variance."""

    def __init__(self, c_in: int, c_mid: int, c_out: int, init_pred_var: float = 5.0, eps: float = 1e-5) -> None:
        super().__init__()
        self.regressor = nn.Sequential(
            _conv1x1(c_in, c_mid), nn.ReLU(), _conv1x1(c_mid, c_mid), nn.ReLU(), _conv1x1(c_mid, c_out)
        )
        # Inverse of the softplus below, so that the initial variance is init_pred_var.
        self.log_scale = nn.Parameter(math.log(math.exp(init_pred_var - eps) - 1.0) * torch.ones(c_out))
        self.eps = eps

    def forward(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        f_s, f_t = pool(f_s, f_t)
        mean = self.regressor(f_s)
        # log(1 + exp(x)) as in the reference; softplus is the same function without overflow for large x.
        var = (F.softplus(self.log_scale) + self.eps).view(1, -1, 1, 1)
        return (0.5 * ((mean - f_t).pow(2) / var + var.log())).mean()


@METHODS.register("vid")
class VID(Method):
    """Variational Information Distillation (Ahn et al., CVPR 2019, arXiv 1904.05835) on every stage output.

    As in RepDistiller: one stage module per zipped (student, teacher) stage with a three-layer 1x1-conv mean
    ``(C_s -> C_t -> C_t -> C_t)``, maps of different size average-pooled to the smaller one, and each term
    is the Gaussian negative log-likelihood *averaged* over all elements without the ``log 2 pi`` constant.
    """

    name = "vid"
    display_name = "VID"
    table_rank = 60
    paper = "Variational Information Distillation for Knowledge Transfer (Ahn et al., CVPR 2019, arXiv 1904.05835)"
    weights = Weights(gamma=1.0, alpha=0.0, beta=1.0)

    def __init__(self, s_channels: list[int], t_channels: list[int], init_pred_var: float = 5.0,
                 eps: float = 1e-5) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            VIDStage(c_s, c_t, c_t, init_pred_var, eps) for c_s, c_t in zip(s_channels, t_channels)
        )

    @classmethod
    def build(cls, pair: Pair) -> VID:
        return cls([s[0] for s in pair.student_shapes[1:-1]], [t[0] for t in pair.teacher_shapes[1:-1]])

    def loss(self, g_s: list[Tensor], g_t: list[Tensor]) -> list[Tensor]:
        """One negative log-likelihood per stage."""
        return [stage(f_s, f_t) for stage, f_s, f_t in zip(self.stages, g_s, g_t)]

    def forward(self, step: Step) -> Tensor:
        return sum(self.loss(step.feats_s[1:-1], step.feats_t[1:-1]))
