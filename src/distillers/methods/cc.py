"""CC: Peng et al., "Correlation Congruence for Knowledge Distillation", ICCV 2019, arXiv 1904.01802."""

from __future__ import annotations

from torch import Tensor

from distillers.methods import METHODS
from distillers.methods.base import Method, Pair, Step, Weights
from distillers.methods.common import LinearEmbed, flat_dim


def correlation_loss(e_s: Tensor, e_t: Tensor) -> Tensor:
    """RepDistiller's CC: mean over consecutive samples i of ``sum_j |e_s - e_t|[i, j] * |e_s - e_t|[i+1, j]``."""
    delta = (e_s - e_t).abs()
    return (delta[:-1] * delta[1:]).sum(1).mean()


@METHODS.register("cc", "correlation")
class CC(Method):
    """Correlation Congruence (Peng et al., ICCV 2019, arXiv 1904.01802) on the pooled embeddings.

    Follows RepDistiller, which differs from the paper: both embeddings go through trainable linear heads
    (the teacher's head is trained too), and instead of matching the two batch correlation matrices it
    multiplies the absolute embedding difference of *consecutive* samples (i, i+1) and averages their sums.
    """

    name = "cc"
    display_name = "CC"
    table_rank = 50
    paper = "Correlation Congruence for Knowledge Distillation (Peng et al., ICCV 2019, arXiv 1904.01802)"
    weights = Weights(gamma=1.0, alpha=0.0, beta=0.02)

    def __init__(self, s_dim: int, t_dim: int, feat_dim: int = 128) -> None:
        super().__init__()
        self.embed_s = LinearEmbed(s_dim, feat_dim)
        self.embed_t = LinearEmbed(t_dim, feat_dim)

    @classmethod
    def build(cls, pair: Pair) -> CC:
        return cls(flat_dim(pair.student_shapes[-1]), flat_dim(pair.teacher_shapes[-1]), pair.options.feat_dim)

    def loss(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        return correlation_loss(self.embed_s(f_s), self.embed_t(f_t))

    def forward(self, step: Step) -> Tensor:
        return self.loss(step.feats_s[-1], step.feats_t[-1])
