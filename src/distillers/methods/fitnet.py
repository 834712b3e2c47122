"""FitNet: Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015, arXiv 1412.6550."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from distillers.methods import METHODS
from distillers.methods.base import Method, Pair, Step, Weights, unsupported
from distillers.methods.common import ConvReg


@METHODS.register("fitnet", "hint")
class FitNet(Method):
    """FitNets (Romero et al., ICLR 2015, arXiv 1412.6550): regress the teacher's hint layer from the student's.

    Follows RepDistiller rather than the paper: the hint is trained jointly with CE (weight 100, no separate
    hint stage), the regressor is conv -> BatchNorm -> ReLU (``ConvReg``, the paper has a plain conv), and the
    loss is the MSE averaged over all elements (the paper uses a sum of squares).
    """

    name = "fitnet"
    display_name = "FitNet"
    table_rank = 20
    paper = "FitNets: Hints for Thin Deep Nets (Romero et al., ICLR 2015, arXiv 1412.6550)"
    weights = Weights(gamma=1.0, alpha=0.0, beta=100.0)

    def __init__(self, s_shape: tuple[int, ...], t_shape: tuple[int, ...], hint_layer: int = 2) -> None:
        super().__init__()
        self.hint_layer = hint_layer
        self.regress_s = ConvReg(s_shape, t_shape)

    @classmethod
    def build(cls, pair: Pair) -> FitNet:
        layer = pair.options.hint_layer
        s_shapes, t_shapes = pair.student_shapes, pair.teacher_shapes
        count = min(len(s_shapes), len(t_shapes))
        if not 0 <= layer < count:
            raise unsupported(cls.name, pair, f"hint_layer {layer} is out of range; choose 0..{count - 1}")
        s_shape, t_shape = s_shapes[layer], t_shapes[layer]
        if len(s_shape) != 3 or len(t_shape) != 3:
            raise unsupported(cls.name, pair, f"hint_layer {layer} is the pooled embedding, not a feature map; "
                                              f"choose 0..{count - 2}")
        problem = ConvReg.why_unsupported(s_shape, t_shape)
        if problem is not None:
            raise unsupported(cls.name, pair, f"{problem} at hint_layer {layer}")
        return cls(s_shape, t_shape, layer)

    def loss(self, feat_s: Tensor, feat_t: Tensor) -> Tensor:
        """MSE between the regressed student map and the teacher map."""
        return F.mse_loss(self.regress_s(feat_s), feat_t)

    def forward(self, step: Step) -> Tensor:
        return self.loss(step.feats_s[self.hint_layer], step.feats_t[self.hint_layer])
