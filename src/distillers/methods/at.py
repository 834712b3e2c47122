"""AT: Zagoruyko and Komodakis, "Paying More Attention to Attention", ICLR 2017, arXiv 1612.03928."""

from __future__ import annotations

from torch import Tensor

from distillers.methods import METHODS
from distillers.methods.base import Method, Step, Weights
from distillers.methods.common import attention_map, pool


def at_loss(g_s: list[Tensor], g_t: list[Tensor], p: float = 2) -> list[Tensor]:
    """One term per zipped (student, teacher) map pair: mean squared difference of their attention maps."""
    terms = []
    for f_s, f_t in zip(g_s, g_t):
        f_s, f_t = pool(f_s, f_t)
        terms.append((attention_map(f_s, p) - attention_map(f_t, p)).pow(2).mean())
    return terms


@METHODS.register("at", "attention")
class AT(Method):
    """Attention Transfer (Zagoruyko & Komodakis, ICLR 2017, arXiv 1612.03928) on every stage output.

    Follows RepDistiller rather than the paper: each term is the *mean* of the squared difference of the
    normalised maps (the paper takes the p-norm of the difference, times beta/2), maps of different size are
    average-pooled to the smaller one, and the stages are zipped (the shorter list wins).
    """

    name = "at"
    display_name = "AT"
    table_rank = 30
    paper = "Paying More Attention to Attention (Zagoruyko & Komodakis, ICLR 2017, arXiv 1612.03928)"
    weights = Weights(gamma=1.0, alpha=0.0, beta=1000.0)

    def __init__(self, p: float = 2) -> None:
        super().__init__()
        self.p = p

    def loss(self, g_s: list[Tensor], g_t: list[Tensor]) -> list[Tensor]:
        return at_loss(g_s, g_t, self.p)

    def forward(self, step: Step) -> Tensor:
        return sum(self.loss(step.feats_s[1:-1], step.feats_t[1:-1]))
