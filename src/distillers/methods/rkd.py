"""RKD: Park et al., "Relational Knowledge Distillation", CVPR 2019, arXiv 1904.05068."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distillers.methods import METHODS
from distillers.methods.base import Method, Step, Weights


def pairwise_distances(e: Tensor, eps: float = 1e-12) -> Tensor:
    """Euclidean distances between rows via the Gram matrix (clamped at ``eps`` before the root), zero diagonal."""
    squared = e.pow(2).sum(dim=1)
    dist = (squared.unsqueeze(1) + squared.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps).sqrt()
    # Zero the diagonal out of place: no gradient reaches the clamped self-distances.
    return dist.masked_fill(torch.eye(len(e), dtype=torch.bool, device=dist.device), 0.0)


def _normalised_distances(e: Tensor) -> Tensor:
    dist = pairwise_distances(e)
    return dist / dist[dist > 0].mean()


def _angles(e: Tensor) -> Tensor:
    """``A[i, j, k]`` = cosine of the angle at ``e_i`` between ``e_j`` and ``e_k``."""
    directions = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
    return torch.bmm(directions, directions.transpose(1, 2))


def rkd_loss(f_s: Tensor, f_t: Tensor) -> tuple[Tensor, Tensor]:
    """``(distance loss, angle loss)`` between flattened student and teacher embeddings (teacher side no grad)."""
    student = f_s.reshape(f_s.shape[0], -1)
    teacher = f_t.reshape(f_t.shape[0], -1)
    with torch.no_grad():
        dist_t = _normalised_distances(teacher)
        angle_t = _angles(teacher)
    loss_d = F.smooth_l1_loss(_normalised_distances(student), dist_t)
    loss_a = F.smooth_l1_loss(_angles(student), angle_t)
    return loss_d, loss_a


@METHODS.register("rkd")
class RKD(Method):
    """Relational KD (Park et al., CVPR 2019, arXiv 1904.05068): distance- and angle-wise relations of embeddings.

    As in RepDistiller: distances come from the Gram matrix clamped at 1e-12, the distance loss averages the
    smooth-L1 over all ``B x B`` pairs including the zero diagonal, and the angle loss over all ``B^3``
    triplets including degenerate ones (a zero direction stays zero), with weights 25 and 50.
    """

    name = "rkd"
    display_name = "RKD"
    table_rank = 70
    paper = "Relational Knowledge Distillation (Park et al., CVPR 2019, arXiv 1904.05068)"
    weights = Weights(gamma=1.0, alpha=0.0, beta=1.0)

    def __init__(self, w_d: float = 25.0, w_a: float = 50.0) -> None:
        super().__init__()
        self.w_d = w_d
        self.w_a = w_a

    def loss(self, f_s: Tensor, f_t: Tensor) -> tuple[Tensor, Tensor]:
        """The unweighted ``(distance, angle)`` losses."""
        return rkd_loss(f_s, f_t)

    def forward(self, step: Step) -> dict[str, Tensor]:
        f_s, f_t = step.feats_s[-1], step.feats_t[-1]
        # Full precision under autocast: bf16 Gram matrices and angles move the loss by tens of percent.
        with torch.autocast(f_s.device.type, enabled=False):
            loss_d, loss_a = self.loss(f_s.float(), f_t.float())
        return {"rkd_distance": self.w_d * loss_d, "rkd_angle": self.w_a * loss_a}
