"""PKT: Passalis and Tefas, "Learning Deep Representations with Probabilistic Knowledge Transfer", ECCV 2018,
arXiv 1803.10837."""

from __future__ import annotations

import torch
from torch import Tensor

from distillers.methods import METHODS
from distillers.methods.base import Method, Step, Weights


def _conditional_probabilities(f: Tensor, eps: float) -> Tensor:
    """Row-normalised cosine-similarity kernel ``K = (cos + 1) / 2`` of a batch of embeddings."""
    f = f.reshape(f.shape[0], -1)
    f = f / (f.pow(2).sum(dim=1, keepdim=True).sqrt() + eps)
    f = torch.where(torch.isnan(f), torch.zeros_like(f), f)
    kernel = (f @ f.t() + 1.0) / 2.0
    return kernel / kernel.sum(dim=1, keepdim=True)


def pkt_loss(f_s: Tensor, f_t: Tensor, eps: float = 1e-7) -> Tensor:
    """Divergence of the student's conditional probabilities from the teacher's, averaged over all ``B x B``."""
    p_s = _conditional_probabilities(f_s, eps)
    p_t = _conditional_probabilities(f_t, eps)
    return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()


@METHODS.register("pkt")
class PKT(Method):
    """Probabilistic Knowledge Transfer (Passalis & Tefas, ECCV 2018, arXiv 1803.10837) on the pooled embeddings.

    As in RepDistiller: the cosine kernel, and the divergence is a plain mean over all ``B x B`` entries (the
    paper sums over pairs), hence the seed's large weight 30000.
    """

    name = "pkt"
    display_name = "PKT"
    table_rank = 80
    paper = ("Learning Deep Representations with Probabilistic Knowledge Transfer "
             "(Passalis & Tefas, ECCV 2018, arXiv 1803.10837)")
    weights = Weights(gamma=1.0, alpha=0.0, beta=30000.0)

    def __init__(self, eps: float = 1e-7) -> None:
        super().__init__()
        self.eps = eps

    def loss(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        return pkt_loss(f_s, f_t, self.eps)

    def forward(self, step: Step) -> Tensor:
        f_s, f_t = step.feats_s[-1], step.feats_t[-1]
        # Full precision under autocast: a bf16 cosine kernel moves the divergence by tens of percent.
        with torch.autocast(f_s.device.type, enabled=False):
            return self.loss(f_s.float(), f_t.float())
