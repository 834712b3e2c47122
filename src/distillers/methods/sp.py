"""SP: Tung and Mori, "Similarity-Preserving Knowledge Distillation", ICCV 2019, arXiv 1907.09682."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from distillers.methods import METHODS
from distillers.methods.base import Method, Step, Weights


def similarity_loss(f_s: Tensor, f_t: Tensor) -> Tensor:
    """Squared Frobenius distance of the row-normalised batch Gram matrices, divided by ``B^2``."""
    batch = f_s.shape[0]
    f_s, f_t = f_s.reshape(batch, -1), f_t.reshape(batch, -1)
    gram_s = F.normalize(f_s @ f_s.t())
    gram_t = F.normalize(f_t @ f_t.t())
    return (gram_t - gram_s).pow(2).sum() / (batch * batch)


@METHODS.register("sp", "similarity")
class SP(Method):
    """Similarity-Preserving KD (Tung & Mori, ICCV 2019, arXiv 1907.09682) on the last stage's map.

    As in RepDistiller, only ``feats[-2]`` is used. The reference returns a tensor of shape ``[1]``; we
    return a 0-dim scalar with the same value.
    """

    name = "sp"
    display_name = "SP"
    table_rank = 40
    paper = "Similarity-Preserving Knowledge Distillation (Tung & Mori, ICCV 2019, arXiv 1907.09682)"
    weights = Weights(gamma=1.0, alpha=0.0, beta=3000.0)

    def loss(self, g_s: list[Tensor], g_t: list[Tensor]) -> list[Tensor]:
        """One term per zipped map pair (the seed passes a single pair)."""
        return [similarity_loss(f_s, f_t) for f_s, f_t in zip(g_s, g_t)]

    def forward(self, step: Step) -> Tensor:
        return sum(self.loss([step.feats_s[-2]], [step.feats_t[-2]]))
