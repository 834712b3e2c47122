"""ReviewKD: Chen, Liu, Zhao, Jia, "Distilling Knowledge via Knowledge Review", CVPR 2021, arXiv 2104.09044.

Each student stage is fused with the already fused deeper stages (attention-based fusion, ABF) and matched with the
teacher's pre-activation stage of the same depth by a hierarchical-context (multi-scale pooled) MSE. Follows
mdistiller's ``ReviewKD`` (identical numbers to dvlab-research/ReviewKD's official CIFAR code).

The student side is post-ReLU (``preact = False``) and the teacher side pre-activation (``teacher_preact = True``),
so ``Step.feats_t`` holds ``teacher(x, is_feat=True, preact=True)[0]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillers.methods import METHODS, Option
from distillers.methods.base import Method, Pair, Step, Weights, unsupported

# Official ReviewKD CIFAR-100 scripts (REVIEWKD_WEIGHT per (teacher, student)); unlisted pairs get mdistiller's 1.0.
REVIEWKD_WEIGHT: dict[tuple[str, str], float] = {
    ("wrn_40_2", "wrn_16_2"): 5.0,
    ("wrn_40_2", "wrn_40_1"): 5.0,
    ("wrn_40_2", "ShuffleV1"): 5.0,
    ("resnet32x4", "resnet8x4"): 5.0,
    ("resnet32x4", "ShuffleV1"): 5.0,
    ("resnet32x4", "ShuffleV2"): 8.0,
    ("resnet56", "resnet20"): 0.6,
    ("resnet110", "resnet32"): 1.0,
}


class ABF(nn.Module):
    """Attention-based fusion of one level: 1x1 conv + BN, optional fusion with the deeper residual, 3x3 conv + BN."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False), nn.BatchNorm2d(mid_channels))
        self.conv2 = nn.Sequential(nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(out_channels))
        self.att_conv = nn.Sequential(nn.Conv2d(2 * mid_channels, 2, 1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x: Tensor, residual: Tensor | None, out_size: Sequence[int]) -> tuple[Tensor, Tensor]:
        """``(output at out_size, residual for the next shallower level)``."""
        u = self.conv1(x)
        if self.att_conv is not None:
            residual = _resize(residual, u.shape[-2:])
            attention = self.att_conv(torch.cat([u, residual], dim=1))
            u = u * attention[:, 0:1] + residual * attention[:, 1:2]
        # Quirk kept: the residual handed on is taken after resizing to the teacher's size.
        u = _resize(u, out_size)
        return self.conv2(u), u


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    """PyTorch's legacy nearest resize (what the reference uses), skipped when the size already matches."""
    return x if tuple(x.shape[-2:]) == tuple(size) else F.interpolate(x, size=tuple(size), mode="nearest")


def hcl_loss(outputs: Sequence[Tensor], targets: Sequence[Tensor]) -> Tensor:
    """Hierarchical context loss: per level, MSE plus pooled MSEs at 4x4, 2x2, 1x1 (those smaller than the map)
    weighted 1/2, 1/4, 1/8, normalised by the weights' sum; summed over levels."""
    total = outputs[0].new_zeros(())
    for output, target in zip(outputs, targets, strict=True):
        loss, weight, weight_sum = F.mse_loss(output, target), 1.0, 1.0
        for size in (4, 2, 1):
            if size >= output.shape[2]:
                continue
            weight /= 2
            loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(output, size), F.adaptive_avg_pool2d(target, size))
            weight_sum += weight
        total = total + loss / weight_sum
    return total


@METHODS.register("reviewkd")
class ReviewKD(Method):
    """Knowledge review: ``reviewkd_weight * min(epoch / warmup, 1) * HCL(ABF outputs, teacher preact features)``.

    Channels come from the pair's feature metadata (student stages + pooled in, teacher stages + pooled out), which
    reproduces the official per-student lists; spatial sizes are read from the tensors. Options
    (``ReviewKD.options``): ``reviewkd_weight`` (per pair, see ``REVIEWKD_WEIGHT``), ``warmup`` (20).
    Kept quirks: ``abfs`` is stored deepest level first (``abfs.0`` is the pooled level), as mdistiller's state
    dict; mid channels are ``min(512, pooled student channels)`` (mdistiller ignores MAX_MID_CHANNEL); the residual
    passed to the next level is taken after resizing to the teacher's size; the student's stem feature is unused;
    1-based epochs in the warm-up (the official code's 0-based epochs start the factor at 0).
    """

    name = "reviewkd"
    display_name = "ReviewKD"
    table_rank = 180
    paper = "Distilling Knowledge via Knowledge Review (Chen et al., CVPR 2021, arXiv 2104.09044)"
    weights = Weights(gamma=1.0, alpha=0.0, beta=1.0)
    weights_note = ("official ReviewKD CIFAR-100 scripts: weight 5 / 8 / 0.6 / 1 per pair, warm-up 20 (mdistiller cfg "
                    "default weight 1 for unlisted pairs), CE weight 1; gamma = CE weight, the review weight and "
                    "warm-up live inside the method")
    preact = False  # student side: post-ReLU stage outputs
    teacher_preact = True  # teacher side: pre-activation stage outputs
    options = (
        Option("reviewkd_weight", float, None, "weight of the HCL loss (default: per pair, REVIEWKD_WEIGHT; else 1)",
               "official ReviewKD CIFAR-100 scripts per pair (reviewkd.REVIEWKD_WEIGHT); mdistiller cfg default 1"),
        Option("warmup", int, 20, "epochs of the linear warm-up of the loss", "official ReviewKD scripts / mdistiller"),
    )

    def __init__(self, in_channels: Sequence[int], out_channels: Sequence[int], reviewkd_weight: float = 1.0,
                 warmup: int = 20) -> None:
        super().__init__()
        if len(in_channels) != len(out_channels):
            raise ValueError(f"in_channels {list(in_channels)} and out_channels {list(out_channels)} differ in length")
        mid = min(512, in_channels[-1])
        # Deepest first: level 0 is the pooled embedding, which has no deeper residual to fuse.
        self.abfs = nn.ModuleList(ABF(c_in, mid, c_out, fuse=k > 0) for k, (c_in, c_out) in
                                  enumerate(zip(reversed(in_channels), reversed(out_channels))))
        self.reviewkd_weight, self.warmup = reviewkd_weight, warmup

    @classmethod
    def build(cls, pair: Pair) -> ReviewKD:
        s_shapes, t_shapes = pair.student_shapes, pair.teacher_shapes
        if len(s_shapes) != len(t_shapes):
            raise unsupported(cls.name, pair, f"ReviewKD pairs stages one to one, but the teacher has "
                                              f"{len(t_shapes) - 2} and the student {len(s_shapes) - 2}")
        values = cls.resolve_options(pair.options.extra)
        weight = values["reviewkd_weight"]
        if weight is None:
            weight = REVIEWKD_WEIGHT.get((pair.teacher_name, pair.student_name), 1.0)
        return cls([shape[0] for shape in s_shapes[1:]], [shape[0] for shape in t_shapes[1:]],
                   reviewkd_weight=weight, warmup=values["warmup"])

    def review(self, feats_s: Sequence[Tensor], pooled_s: Tensor, sizes: Sequence[Sequence[int]]) -> list[Tensor]:
        """ABF outputs, shallowest stage first and the pooled level last, resized to ``sizes`` (same order)."""
        inputs = [pooled_s[:, :, None, None], *reversed(feats_s)]
        outputs, residual = [], None
        for abf, x, size in zip(self.abfs, inputs, reversed(sizes), strict=True):
            output, residual = abf(x, residual, size)
            outputs.insert(0, output)
        return outputs

    def loss(self, feats_s: Sequence[Tensor], pooled_s: Tensor, feats_t: Sequence[Tensor], pooled_t: Tensor) -> Tensor:
        """HCL between the reviewed student stages (+ pooled) and the teacher's pre-activation stages (+ pooled)."""
        targets = [*feats_t, pooled_t[:, :, None, None]]
        return hcl_loss(self.review(feats_s, pooled_s, [t.shape[-2:] for t in targets]), targets)

    def forward(self, step: Step) -> dict[str, Tensor]:
        feats_t = step.feats_t
        ramp = min(step.epoch / self.warmup, 1.0)
        hcl = self.loss(step.feats_s[1:-1], step.feats_s[-1], feats_t[1:-1], feats_t[-1])
        return {"reviewkd": self.reviewkd_weight * ramp * hcl}
