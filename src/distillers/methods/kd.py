"""KD: Hinton, Vinyals, Dean, "Distilling the Knowledge in a Neural Network", NIPS-W 2014, arXiv 1503.02531.

KD is the objective's ``alpha`` term (see ``distillers.objective``); the method itself adds nothing, exactly as
the seed's ``--distill kd`` (its ``loss_method`` is 0).
"""

from __future__ import annotations

import torch
from torch import Tensor

from distillers.methods import METHODS
from distillers.methods.base import Method, Step, Weights


@METHODS.register("kd")
class KD(Method):
    name = "kd"
    teacher_features = False  # logits only: works with several teachers
    display_name = "KD"
    table_rank = 10
    paper = "Distilling the Knowledge in a Neural Network (Hinton et al., 2015, arXiv 1503.02531)"
    weights = Weights(gamma=0.1, alpha=0.9, beta=0.0)

    def forward(self, step: Step) -> Tensor:
        return torch.zeros((), device=step.logits_s.device, dtype=step.logits_s.dtype)
