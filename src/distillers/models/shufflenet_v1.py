"""ShuffleNet: Zhang et al., "ShuffleNet: An Extremely Efficient Convolutional Neural Network for Mobile Devices",
CVPR 2018, arXiv 1707.01083.

RepDistiller's ``models/ShuffleNetv1.py`` ``ShuffleV1`` (groups 3, parameter names included): a 1x1 stem with no
downsampling, three stages that each halve the resolution, PyTorch's default initialisation (RepDistiller applies
no custom one to the ShuffleNets).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distillers.models import MODELS
from distillers.models.base import FeatureInfo


class ShuffleBlock(nn.Module):
    """Channel shuffle: view the channels as ``(groups, C / groups)``, transpose, flatten back."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        grouped = x.view(batch, self.groups, channels // self.groups, height, width)
        return grouped.transpose(1, 2).reshape(batch, channels, height, width)


class Bottleneck(nn.Module):
    """Grouped 1x1, shuffle, depthwise 3x3, grouped 1x1; added to the input, or concatenated with its 3x3 average
    pool when the block downsamples. The last block of a stage returns ``(out, preact)``, the pre-ReLU result.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int, groups: int, is_last: bool = False) -> None:
        super().__init__()
        self.is_last = is_last
        self.stride = stride
        mid_planes = out_planes // 4
        # The first block reads the 24-channel stem: its 1x1 conv is not grouped (the paper's Stage 2 rule).
        first_groups = 1 if in_planes == 24 else groups
        self.conv1 = nn.Conv2d(in_planes, mid_planes, kernel_size=1, groups=first_groups, bias=False)
        self.bn1 = nn.BatchNorm2d(mid_planes)
        self.shuffle1 = ShuffleBlock(groups=first_groups)
        self.conv2 = nn.Conv2d(
            mid_planes, mid_planes, kernel_size=3, stride=stride, padding=1, groups=mid_planes, bias=False
        )
        self.bn2 = nn.BatchNorm2d(mid_planes)
        self.conv3 = nn.Conv2d(mid_planes, out_planes, kernel_size=1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = nn.Sequential()
        if stride == 2:
            self.shortcut = nn.Sequential(nn.AvgPool2d(3, stride=2, padding=1))

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        out = self.shuffle1(F.relu(self.bn1(self.conv1(x))))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = self.shortcut(x)
        preact = torch.cat([out, shortcut], 1) if self.stride == 2 else out + shortcut
        out = F.relu(preact)
        return (out, preact) if self.is_last else out


class ShuffleNet(nn.Module):
    """ShuffleNet v1 for 32x32 inputs: 1x1 stem (24 channels), three stages, 4x4 average pool, linear classifier.

    Features: ``[stem, stage1, stage2, stage3, embedding]``; ``preact=True`` swaps the stage outputs for their
    pre-ReLU values.
    """

    def __init__(
        self, out_planes: tuple[int, int, int], num_blocks: tuple[int, int, int], groups: int, num_classes: int = 100
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        in_planes = 24
        stages = []
        for planes, blocks in zip(out_planes, num_blocks):
            stage = []
            for i in range(blocks):
                # The downsampling block concatenates its pooled input, so its branch makes the remainder.
                branch_planes = planes - in_planes if i == 0 else planes
                stride = 2 if i == 0 else 1
                stage.append(Bottleneck(in_planes, branch_planes, stride, groups, is_last=i == blocks - 1))
                in_planes = planes
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(out_planes[2], num_classes)
        self.feature_info = [
            FeatureInfo(24, 1),
            FeatureInfo(out_planes[0], 2),
            FeatureInfo(out_planes[1], 4),
            FeatureInfo(out_planes[2], 8),
            FeatureInfo(out_planes[2], None),
        ]

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.bn1, self.layer1, self.layer2, self.layer3])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        raise NotImplementedError('ShuffleNet currently is not supported for "Overhaul" teacher')

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> Tensor | tuple[list[Tensor], Tensor]:
        f0 = F.relu(self.bn1(self.conv1(x)))
        f1, f1_pre = self.layer1(f0)
        f2, f2_pre = self.layer2(f1)
        f3, f3_pre = self.layer3(f2)
        embedding = F.avg_pool2d(f3, 4).flatten(1)
        logits = self.linear(embedding)
        if not is_feat:
            return logits
        if preact:
            return [f0, f1_pre, f2_pre, f3_pre, embedding], logits
        return [f0, f1, f2, f3, embedding], logits


@MODELS.register("ShuffleV1")
def shuffle_v1(num_classes: int = 100) -> ShuffleNet:
    """ShuffleNet v1 with 3 groups, stages of 240/480/960 channels and 4/8/4 blocks."""
    return ShuffleNet((240, 480, 960), (4, 8, 4), groups=3, num_classes=num_classes)
