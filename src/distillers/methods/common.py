"""Building blocks shared by several distillation methods (FitNet, AB, AT, FT, CC, CRD ...).

Shapes passed to the modules here are feature shapes ``(C, H, W)``; a leading batch dimension, as in the
reference fixtures' ``(B, C, H, W)``, is accepted and ignored.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn


def pool(s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Average-pool the spatially larger of two maps to the other's height (square output), as RepDistiller does."""
    s_h, t_h = s.shape[2], t.shape[2]
    if s_h > t_h:
        s = F.adaptive_avg_pool2d(s, (t_h, t_h))
    elif s_h < t_h:
        t = F.adaptive_avg_pool2d(t, (s_h, s_h))
    return s, t


def attention_map(feat: Tensor, p: float = 2) -> Tensor:
    """AT/FT's spatial attention: channel mean of ``feat ** p``, flattened to ``B x HW`` and L2-normalised."""
    return F.normalize(feat.pow(p).mean(1).view(feat.shape[0], -1))


def _chw(shape: Sequence[int]) -> tuple[int, int, int]:
    if len(shape) not in (3, 4):
        raise ValueError(f"expected a feature-map shape (C, H, W) or (B, C, H, W), got {tuple(shape)}")
    c, h, w = shape[-3:]
    return int(c), int(h), int(w)


class ConvReg(nn.Module):
    """FitNet's regressor from a student map to a teacher map: conv -> BatchNorm2d -> ReLU (optional).

    The conv follows RepDistiller's first matching rule on the heights: ``H_s == 2 H_t`` a 3x3 stride-2 conv,
    ``2 H_s == H_t`` a 4x4 stride-2 transposed conv, ``H_s >= H_t`` a ``(1+H_s-H_t, 1+W_s-W_t)`` conv; any
    other pair is rejected (the reference fails there too). AB's connector is the same without the ReLU.
    """

    def __init__(self, s_shape: Sequence[int], t_shape: Sequence[int], use_relu: bool = True) -> None:
        super().__init__()
        problem = self.why_unsupported(s_shape, t_shape)
        if problem is not None:
            raise ValueError(problem)
        s_c, s_h, s_w = _chw(s_shape)
        t_c, t_h, t_w = _chw(t_shape)
        if s_h == 2 * t_h:
            self.conv: nn.Module = nn.Conv2d(s_c, t_c, kernel_size=3, stride=2, padding=1)
        elif 2 * s_h == t_h:
            self.conv = nn.ConvTranspose2d(s_c, t_c, kernel_size=4, stride=2, padding=1)
        else:
            self.conv = nn.Conv2d(s_c, t_c, kernel_size=(1 + s_h - t_h, 1 + s_w - t_w))
        self.bn = nn.BatchNorm2d(t_c)
        self.use_relu = use_relu

    @staticmethod
    def why_unsupported(s_shape: Sequence[int], t_shape: Sequence[int]) -> str | None:
        """Why no regressor maps ``s_shape`` onto ``t_shape`` (None when one does)."""
        _, s_h, s_w = _chw(s_shape)
        _, t_h, t_w = _chw(t_shape)
        if s_h == 2 * t_h or 2 * s_h == t_h:
            return None
        if s_h >= t_h and s_w >= t_w:
            return None
        return (f"no FitNet regressor maps a {s_h}x{s_w} student map onto a {t_h}x{t_w} teacher map "
                f"(needs H_s == 2 H_t, 2 H_s == H_t or H_s >= H_t)")

    def forward(self, x: Tensor) -> Tensor:
        x = self.bn(self.conv(x))
        return F.relu(x) if self.use_relu else x


class LinearEmbed(nn.Module):
    """Flatten, then a linear projection to ``feat_dim`` (CC's embedding heads; no normalisation)."""

    def __init__(self, dim_in: int, feat_dim: int = 128) -> None:
        super().__init__()
        self.linear = nn.Linear(dim_in, feat_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x.view(x.shape[0], -1))


def flat_dim(shape: Sequence[int]) -> int:
    """Number of elements of one sample of a feature of ``shape`` (no batch dimension)."""
    size = 1
    for dim in shape:
        size *= int(dim)
    return size
