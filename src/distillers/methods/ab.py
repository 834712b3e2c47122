"""AB: Heo, Lee, Yun, Choi, "Knowledge Transfer via Distillation of Activation Boundaries Formed by Hidden Neurons",
AAAI 2019, arXiv 1811.03233.

A two-stage method: the initialisation stage trains the student's feature modules (and a connector) so that the
student's pre-activation stage outputs fall on the same side of zero as the teacher's; the main stage is then plain
training (the method contributes 0, as RepDistiller's ``--distill abound``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from distillers.methods import METHODS
from distillers.methods.base import Method, Pair, Step, Weights, unsupported
from distillers.methods.common import ConvReg


class Connector(nn.Module):
    """One connector per stage: identity when shapes agree, else a ConvReg without the final ReLU."""

    def __init__(self, s_shapes: Sequence[Sequence[int]], t_shapes: Sequence[Sequence[int]]) -> None:
        super().__init__()
        # zip: the reference pairs stages up to the shorter list.
        self.connectors = nn.ModuleList(
            nn.Identity() if _same_map(s, t) else ConvReg(s, t, use_relu=False) for s, t in zip(s_shapes, t_shapes)
        )

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        return [connector(feat) for connector, feat in zip(self.connectors, feats)]


def _same_map(s_shape: Sequence[int], t_shape: Sequence[int]) -> bool:
    """Same channels and height: RepDistiller's test for an identity connector (shapes (C, H, W) or (B, C, H, W))."""
    return s_shape[-3] == t_shape[-3] and s_shape[-2] == t_shape[-2]


def ab_loss(g_s: Sequence[Tensor], g_t: Sequence[Tensor], margin: float = 1.0) -> tuple[Tensor, list[Tensor]]:
    """Alternative (margin) L2 loss on activation boundaries: ``(sum of terms, per-stage terms)``.

    ``g_s`` are the connector outputs, ``g_t`` the teacher's pre-activations; stage ``i`` of ``n`` is weighted
    ``2^(i-n+1)`` and scaled by ``3 / (1000 B)`` as in the reference.
    """
    n = len(g_s)
    batch = g_s[0].shape[0]
    terms = []
    for i, (s, t) in enumerate(zip(g_s, g_t)):
        # Student pushed above +m where the teacher neuron is active, below -m where it is not.
        off = (s + margin).pow(2) * ((s > -margin) & (t <= 0)).to(s.dtype)
        on = (s - margin).pow(2) * ((s <= margin) & (t > 0)).to(s.dtype)
        terms.append(2.0 ** (i - n + 1) * (off + on).sum() / batch / 1000 * 3)
    return torch.stack(terms).sum(), terms


@METHODS.register("ab", "abound")
class AB(Method):
    """Activation-boundary distillation (RepDistiller ``abound``).

    Kept reference quirks: the main-stage loss is the constant 0 (all transfer happens in the init stage); the
    connector is trained during init only and then put in eval mode and frozen; stages are paired with ``zip``
    (the student's stage count sets the weights ``2^(i-n+1)``); wrn students' preact features pass through the next
    block's BN, so in train mode those running stats update an extra time (a model property, kept).
    """

    name = "ab"
    display_name = "AB"
    table_rank = 90
    paper = ("Knowledge Transfer via Distillation of Activation Boundaries Formed by Hidden Neurons "
             "(Heo et al., AAAI 2019, arXiv 1811.03233)")
    weights = Weights(gamma=1.0, alpha=0.0, beta=1.0)
    weights_note = "seed run script: -a 0 -b 1; beta multiplies the main-stage loss, which is 0"
    preact = True
    init_stage = True

    def __init__(self, s_shapes: Sequence[Sequence[int]], t_shapes: Sequence[Sequence[int]], margin: float = 1.0):
        super().__init__()
        self.connector = Connector(s_shapes, t_shapes)
        self.margin = margin
        self._init_done = False

    @classmethod
    def build(cls, pair: Pair) -> AB:
        s_shapes, t_shapes = pair.student_shapes[1:-1], pair.teacher_shapes[1:-1]
        for i, (s, t) in enumerate(zip(s_shapes, t_shapes)):
            problem = None if _same_map(s, t) else ConvReg.why_unsupported(s, t)
            if problem is not None:
                raise unsupported(cls.name, pair, f"stage {i + 1}: {problem}")
        return cls(s_shapes, t_shapes)

    def loss(self, g_s: Sequence[Tensor], g_t: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """Init-stage loss on student/teacher pre-activation stage outputs: ``(total, per-stage terms)``."""
        return ab_loss(self.connector(g_s), g_t, self.margin)

    def init_loss(self, step: Step) -> Tensor:
        return self.loss(step.feats_s[1:-1], step.feats_t[1:-1])[0]

    def forward(self, step: Step) -> Tensor:
        # As the reference: nothing is distilled in the main stage.
        return torch.zeros((), device=step.logits_s.device, dtype=step.logits_s.dtype)

    def init_modules(self, student: nn.Module) -> list[nn.Module]:
        return [self.connector, student.get_feat_modules()]

    def end_init_stage(self) -> None:
        self._init_done = True
        self.connector.requires_grad_(False)
        self.connector.eval()

    def main_parameters(self) -> Iterable[nn.Parameter]:
        return []

    def train(self, mode: bool = True) -> AB:
        super().train(mode)
        if self._init_done:  # the connector stays in eval mode once initialised, whatever the engine asks
            self.connector.eval()
        return self
