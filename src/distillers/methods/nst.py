"""NST: Huang and Wang, "Like What You Like: Knowledge Distill via Neuron Selectivity Transfer", arXiv 1707.01219."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from distillers.methods import METHODS
from distillers.methods.base import Method, Step, Weights
from distillers.methods.common import pool


def _poly_kernel_mean(a: Tensor, b: Tensor) -> Tensor:
    """Mean over batch and channel pairs of ``<a_j, b_i>^2`` (degree-2 polynomial kernel, no offset)."""
    return (b @ a.transpose(1, 2)).pow(2).mean()


def nst_loss(g_s: list[Tensor], g_t: list[Tensor]) -> list[Tensor]:
    """One squared-MMD term per zipped map pair, between the channels' normalised spatial distributions."""
    terms = []
    for f_s, f_t in zip(g_s, g_t):
        f_s, f_t = pool(f_s, f_t)
        f_s = F.normalize(f_s.reshape(f_s.shape[0], f_s.shape[1], -1), dim=2)
        f_t = F.normalize(f_t.reshape(f_t.shape[0], f_t.shape[1], -1), dim=2)
        terms.append(_poly_kernel_mean(f_t, f_t).detach() + _poly_kernel_mean(f_s, f_s)
                     - 2 * _poly_kernel_mean(f_s, f_t))
    return terms


@METHODS.register("nst")
class NST(Method):
    """Neuron Selectivity Transfer (Huang & Wang, 2017, arXiv 1707.01219): MMD with a polynomial kernel per stage.

    As in RepDistiller: the full squared MMD (teacher-teacher term included, detached), each kernel term a
    *mean* over channel pairs, maps of different size average-pooled to the smaller one, stages zipped.
    """

    name = "nst"
    display_name = "NST"
    table_rank = 120
    paper = ("Like What You Like: Knowledge Distill via Neuron Selectivity Transfer "
             "(Huang & Wang, arXiv 2017, arXiv 1707.01219)")
    weights = Weights(gamma=1.0, alpha=0.0, beta=50.0)

    def loss(self, g_s: list[Tensor], g_t: list[Tensor]) -> list[Tensor]:
        return nst_loss(g_s, g_t)

    def forward(self, step: Step) -> Tensor:
        return sum(self.loss(step.feats_s[1:-1], step.feats_t[1:-1]))
