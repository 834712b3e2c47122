"""ShuffleNet V2: Ma et al., "ShuffleNet V2: Practical Guidelines for Efficient CNN Architecture Design", ECCV 2018,
arXiv 1807.11164.

RepDistiller's ``models/ShuffleNetv2.py`` ``ShuffleV2`` (net size 1, parameter names included): a 1x1 stem with no
downsampling, three stages that each start with a stride-2 DownBlock, a 1x1 conv to 1024 channels, PyTorch's
default initialisation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillers.models import MODELS
from distillers.models.base import FeatureInfo
from distillers.models.shufflenet_v1 import ShuffleBlock


class SplitBlock(nn.Module):
    """Split the channels in two: the first ``ratio`` of them, and the rest."""

    def __init__(self, ratio: float) -> None:
        super().__init__()
        self.ratio = ratio

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        split = int(x.size(1) * self.ratio)
        return x[:, :split], x[:, split:]


class BasicBlock(nn.Module):
    """Keep half the channels, run 1x1-dw3x3-1x1 on the other half, concatenate, shuffle.

    The last block of a stage returns ``(out, preact)``. RepDistiller quirk kept: ``preact`` is the concatenation
    *before* the channel shuffle, so its channel order differs from ``out``'s.
    """

    def __init__(self, in_channels: int, split_ratio: float = 0.5, is_last: bool = False) -> None:
        super().__init__()
        self.is_last = is_last
        self.split = SplitBlock(split_ratio)
        channels = int(in_channels * split_ratio)
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1, groups=channels, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = nn.Conv2d(channels, channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(channels)
        self.shuffle = ShuffleBlock(groups=2)

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        kept, branch = self.split(x)
        branch = F.relu(self.bn1(self.conv1(branch)))
        branch = self.bn2(self.conv2(branch))
        branch_pre = self.bn3(self.conv3(branch))
        out = self.shuffle(torch.cat([kept, F.relu(branch_pre)], 1))
        if self.is_last:
            return out, torch.cat([kept, branch_pre], 1)
        return out


class DownBlock(nn.Module):
    """Stride-2 block: two branches (dw3x3-1x1, and 1x1-dw3x3-1x1) of ``out_channels / 2`` each, concat, shuffle."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        mid_channels = out_channels // 2
        # left branch
        self.conv1 = nn.Conv2d(
            in_channels, in_channels, kernel_size=3, stride=2, padding=1, groups=in_channels, bias=False
        )
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False)
        self.bn2 = nn.BatchNorm2d(mid_channels)
        # right branch
        self.conv3 = nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(mid_channels)
        self.conv4 = nn.Conv2d(
            mid_channels, mid_channels, kernel_size=3, stride=2, padding=1, groups=mid_channels, bias=False
        )
        self.bn4 = nn.BatchNorm2d(mid_channels)
        self.conv5 = nn.Conv2d(mid_channels, mid_channels, kernel_size=1, bias=False)
        self.bn5 = nn.BatchNorm2d(mid_channels)
        self.shuffle = ShuffleBlock(groups=2)

    def forward(self, x: Tensor) -> Tensor:
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = F.relu(self.bn3(self.conv3(x)))
        right = F.relu(self.bn5(self.conv5(self.bn4(self.conv4(right)))))
        return self.shuffle(torch.cat([left, right], 1))


class ShuffleNetV2(nn.Module):
    """ShuffleNet V2 for 32x32 inputs: 1x1 stem (24 channels), three stages, 1x1 conv, 4x4 average pool, linear.

    Features: ``[stem, stage1, stage2, stage3, embedding]``; ``preact=True`` swaps the stage outputs for the last
    block's pre-ReLU, pre-shuffle concatenation.
    """

    def __init__(
        self, out_channels: tuple[int, int, int, int], num_blocks: tuple[int, int, int], num_classes: int = 100
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        in_channels = 24
        stages = []
        for channels, blocks in zip(out_channels[:3], num_blocks):
            stage = [DownBlock(in_channels, channels)]
            stage += [BasicBlock(channels, is_last=i == blocks - 1) for i in range(blocks)]
            stages.append(nn.Sequential(*stage))
            in_channels = channels
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = nn.Conv2d(out_channels[2], out_channels[3], kernel_size=1, stride=1, padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels[3])
        self.linear = nn.Linear(out_channels[3], num_classes)
        self.feature_info = [
            FeatureInfo(24, 1),
            FeatureInfo(out_channels[0], 2),
            FeatureInfo(out_channels[1], 4),
            FeatureInfo(out_channels[2], 8),
            FeatureInfo(out_channels[3], None),
        ]

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.bn1, self.layer1, self.layer2, self.layer3])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        raise NotImplementedError('ShuffleNetV2 currently is not supported for "Overhaul" teacher')

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> Tensor | tuple[list[Tensor], Tensor]:
        f0 = F.relu(self.bn1(self.conv1(x)))
        f1, f1_pre = self.layer1(f0)
        f2, f2_pre = self.layer2(f1)
        f3, f3_pre = self.layer3(f2)
        out = F.relu(self.bn2(self.conv2(f3)))
        embedding = F.avg_pool2d(out, 4).flatten(1)
        logits = self.linear(embedding)
        if not is_feat:
            return logits
        if preact:
            return [f0, f1_pre, f2_pre, f3_pre, embedding], logits
        return [f0, f1, f2, f3, embedding], logits


@MODELS.register("ShuffleV2")
def shuffle_v2(num_classes: int = 100) -> ShuffleNetV2:
    """ShuffleNet V2 1x: stages of 116/232/464 channels with 3/7/3 blocks after each DownBlock, 1024-d embedding."""
    return ShuffleNetV2((116, 232, 464, 1024), (3, 7, 3), num_classes)
