"""ICD: Giakoumoglou, Stathaki, "Invariant Causal Knowledge Distillation in Neural Networks", 2024, arXiv 2407.11802.

The student's and teacher's embeddings of a batch form a B x B similarity matrix with a learnable temperature and
bias; each student sample must pick its own teacher sample (cross-entropy), plus a KL term that aligns the row
distribution with the column distribution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillers.methods import METHODS
from distillers.methods.base import Method, Pair, Step, Weights
from distillers.methods.common import flat_dim


@METHODS.register("icd")
class ICD(Method):
    """Invariant causal distillation on the pooled embedding ``feats[-1]`` (seed ``distillers/ICD.py``).

    Kept reference quirks: ``tau = clamp(exp(params.tau), 0, max_tau)``, so tau's gradient is 0 while clamped; the
    KL target ``Q = softmax(L, dim 0)^T`` is *not* detached (gradients flow through both sides); the internal KL
    weight ``icd_alpha = 0.5`` is unrelated to the objective's ``alpha``. The teacher head ``embed_t`` is trained.
    Deviation: the loss is computed in the heads' dtype (float32) even under autocast.
    """

    name = "icd"
    display_name = "ICD"
    table_rank = 140
    paper = ("Invariant Causal Knowledge Distillation in Neural Networks "
             "(Giakoumoglou & Stathaki, 2024, arXiv 2407.11802)")
    weights = Weights(gamma=1.0, alpha=0.0, beta=1.0)
    weights_note = "seed README: -a 0 -b 1 (ICD+KD: -a 1)"

    def __init__(self, s_dim: int, t_dim: int, feat_dim: int = 128, max_tau: float = 10.0, icd_alpha: float = 0.5,
                 init_tau: float = 1.0, init_b: float = 0.0) -> None:
        super().__init__()
        self.embed_s = nn.Linear(s_dim, feat_dim)
        self.embed_t = nn.Linear(t_dim, feat_dim)
        # log-temperature and bias of the similarity logits (state_dict keys params.tau, params.b)
        self.params = nn.ParameterDict({"tau": nn.Parameter(torch.tensor(init_tau)),
                                        "b": nn.Parameter(torch.tensor(init_b))})
        self.max_tau = max_tau
        self.icd_alpha = icd_alpha

    @classmethod
    def build(cls, pair: Pair) -> ICD:
        return cls(flat_dim(pair.student_shapes[-1]), flat_dim(pair.teacher_shapes[-1]), pair.options.feat_dim)

    def loss(self, f_s: Tensor, f_t: Tensor) -> Tensor:
        """``CE(L, diag) + icd_alpha * KL(Q || softmax_rows(L))`` for the B x B similarity logits ``L``."""
        dtype = self.embed_s.weight.dtype
        # Full precision under autocast: tau sharpens logits whose low-precision rounding would show.
        with torch.autocast(f_s.device.type, enabled=False):
            e_s = F.normalize(self.embed_s(f_s.flatten(1).to(dtype)))
            e_t = F.normalize(self.embed_t(f_t.flatten(1).to(dtype)))
            tau = torch.clamp(self.params["tau"].exp(), 0, self.max_tau)
            logits = e_s @ e_t.t() * tau + self.params["b"]
            labels = torch.arange(logits.shape[0], device=logits.device)
            log_p = F.log_softmax(logits, dim=1)
            log_q = F.log_softmax(logits, dim=0).t()  # Q's log, computed stably; Q keeps its gradient
            kl = F.kl_div(log_p, log_q, reduction="batchmean", log_target=True)
            return F.cross_entropy(logits, labels) + self.icd_alpha * kl

    def forward(self, step: Step) -> Tensor:
        return self.loss(step.feats_s[-1], step.feats_t[-1])
