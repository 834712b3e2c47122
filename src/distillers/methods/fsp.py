"""FSP: Yim, Joo, Bae, Kim, "A Gift from Knowledge Distillation: Fast Optimization, Network Minimization and Transfer
Learning", CVPR 2017 (no arXiv version; doi 10.1109/CVPR.2017.754).

A two-stage method: the init stage trains the student's feature modules so that its "flow of solution procedure"
(Gram matrices between consecutive feature maps) matches the teacher's; the main stage is plain training.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor, nn

from distillers.methods import METHODS
from distillers.methods.base import Method, Pair, Step, Weights, unsupported
from distillers.methods.common import pool


def fsp_matrices(feats: Sequence[Tensor]) -> list[Tensor]:
    """``G[b, c_top, c_bot] = mean_hw(top * bot)`` for each consecutive pair, the larger map pooled to the smaller."""
    matrices = []
    for bot, top in zip(feats[:-1], feats[1:]):
        bot, top = pool(bot, top)
        # A batched matmul instead of the reference's broadcast product: same value, no B x C x C x HW temporary.
        matrices.append(top.flatten(2) @ bot.flatten(2).transpose(1, 2) / bot[0, 0].numel())
    return matrices


def fsp_loss(g_s: Sequence[Tensor], g_t: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
    """Sum over consecutive pairs of the mean squared difference of FSP matrices: ``(total, per-pair terms)``."""
    terms = [(s - t).pow(2).mean() for s, t in zip(fsp_matrices(g_s), fsp_matrices(g_t))]
    return torch.stack(terms).sum(), terms


@METHODS.register("fsp")
class FSP(Method):
    """Flow-of-solution-procedure distillation on ``feats[:-1]`` (stem and every stage).

    Kept reference quirks: the main-stage loss is the constant 0 (transfer happens only in the init stage, which
    trains ``student.get_feat_modules()``); student and teacher must have identical channel lists (the seed table's
    N/A for wrn_40_2 -> wrn_40_1), checked before training.
    """

    name = "fsp"
    display_name = "FSP"
    table_rank = 110
    paper = ("A Gift from Knowledge Distillation: Fast Optimization, Network Minimization and Transfer Learning "
             "(Yim et al., CVPR 2017, no arXiv id)")
    weights = Weights(gamma=1.0, alpha=0.0, beta=50.0)
    weights_note = "seed run script: -a 0 -b 50; beta multiplies the main-stage loss, which is 0"
    init_stage = True

    @classmethod
    def build(cls, pair: Pair) -> FSP:
        s_channels = [shape[0] for shape in pair.student_shapes[:-1]]
        t_channels = [shape[0] for shape in pair.teacher_shapes[:-1]]
        if s_channels != t_channels:
            raise unsupported(cls.name, pair, f"FSP needs equal channel lists, got student {s_channels} "
                                              f"and teacher {t_channels}; pick a pair with matching widths")
        return cls()

    def loss(self, g_s: Sequence[Tensor], g_t: Sequence[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """Init-stage loss on student/teacher ``feats[:-1]``: ``(total, per-pair terms)``."""
        return fsp_loss(g_s, g_t)

    def init_loss(self, step: Step) -> Tensor:
        return self.loss(step.feats_s[:-1], step.feats_t[:-1])[0]

    def forward(self, step: Step) -> Tensor:
        # As the reference: nothing is distilled in the main stage.
        return torch.zeros((), device=step.logits_s.device, dtype=step.logits_s.dtype)

    def init_modules(self, student: nn.Module) -> list[nn.Module]:
        return [student.get_feat_modules()]

    def main_parameters(self) -> Iterable[nn.Parameter]:
        return []
