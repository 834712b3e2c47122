"""CIFAR ResNets: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, arXiv 1512.03385.

RepDistiller's ``models/resnet.py`` with its parameter names, so its checkpoints load with ``strict=True``: a 3x3
stem and three stages of BasicBlocks (``depth = 6n + 2``), widths 16/16/32/64 or 32/64/128/256 for the ``x4`` models.
This file also holds ``init_weights``, RepDistiller's initialisation shared by the other families.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from distillers.models import MODELS
from distillers.models.base import FeatureInfo


def init_weights(model: nn.Module, linear_std: float | None = None, zero_linear_bias: bool = False) -> None:
    """RepDistiller's initialisation: He-normal convs (fan_out, zero bias), BatchNorm weight 1 and bias 0.

    Linear layers keep PyTorch's default unless ``linear_std`` is given (normal weights, zero bias, as VGG and
    MobileNetV2 do) or ``zero_linear_bias`` (WRN). The conv draw equals the reference's
    ``normal_(0, sqrt(2 / (k * k * out_channels)))``.
    """
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            if linear_std is not None:
                nn.init.normal_(module.weight, 0.0, linear_std)
                nn.init.zeros_(module.bias)
            elif zero_linear_bias:
                nn.init.zeros_(module.bias)


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """A 3x3 convolution with padding 1 and no bias (BatchNorm follows)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut, then ReLU.

    The last block of a stage returns ``(out, preact)``, the sum before the final ReLU, as RepDistiller's does:
    that is how its ResNets expose pre-activation stage outputs.
    """

    expansion = 1

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None, is_last: bool = False
    ) -> None:
        super().__init__()
        self.is_last = is_last
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        preact = out + shortcut
        out = F.relu(preact)
        return (out, preact) if self.is_last else out


class ResNet(nn.Module):
    """CIFAR ResNet: 3x3 stem, three stages of ``(depth - 2) / 6`` BasicBlocks (strides 1, 2, 2), 8x8 average pool.

    Features: ``[stem, stage1, stage2, stage3, embedding]``; ``preact=True`` swaps the stage outputs for their
    pre-ReLU sums. The fixed ``AvgPool2d(8)`` assumes 32x32 inputs, as in RepDistiller.
    """

    def __init__(self, depth: int, num_filters: Sequence[int], num_classes: int = 100) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 (8, 14, 20, 32, ...), got {depth}")
        blocks_per_stage = (depth - 2) // 6
        stem, width1, width2, width3 = num_filters
        self.conv1 = nn.Conv2d(3, stem, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = _make_stage(stem, width1, blocks_per_stage, stride=1)
        self.layer2 = _make_stage(width1, width2, blocks_per_stage, stride=2)
        self.layer3 = _make_stage(width2, width3, blocks_per_stage, stride=2)
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(width3, num_classes)
        self.feature_info = [
            FeatureInfo(stem, 1),
            FeatureInfo(width1, 1),
            FeatureInfo(width2, 2),
            FeatureInfo(width3, 4),
            FeatureInfo(width3, None),
        ]
        init_weights(self)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.bn1, self.relu, self.layer1, self.layer2, self.layer3])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        return [self.layer1[-1].bn2, self.layer2[-1].bn2, self.layer3[-1].bn2]

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> Tensor | tuple[list[Tensor], Tensor]:
        f0 = self.relu(self.bn1(self.conv1(x)))
        f1, f1_pre = self.layer1(f0)
        f2, f2_pre = self.layer2(f1)
        f3, f3_pre = self.layer3(f2)
        embedding = self.avgpool(f3).flatten(1)
        logits = self.fc(embedding)
        if not is_feat:
            return logits
        if preact:
            return [f0, f1_pre, f2_pre, f3_pre, embedding], logits
        return [f0, f1, f2, f3, embedding], logits


def _make_stage(in_planes: int, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
    """One stage; its first block projects the shortcut (1x1 conv + BN) when the shape changes."""
    downsample = None
    if stride != 1 or in_planes != planes:
        downsample = nn.Sequential(
            nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(planes),
        )
    blocks = [BasicBlock(in_planes, planes, stride, downsample, is_last=num_blocks == 1)]
    blocks += [BasicBlock(planes, planes, is_last=i == num_blocks - 1) for i in range(1, num_blocks)]
    return nn.Sequential(*blocks)


_WIDTHS = (16, 16, 32, 64)
_WIDTHS_X4 = (32, 64, 128, 256)


@MODELS.register("resnet8")
def resnet8(num_classes: int = 100) -> ResNet:
    return ResNet(8, _WIDTHS, num_classes)


@MODELS.register("resnet14")
def resnet14(num_classes: int = 100) -> ResNet:
    return ResNet(14, _WIDTHS, num_classes)


@MODELS.register("resnet20")
def resnet20(num_classes: int = 100) -> ResNet:
    return ResNet(20, _WIDTHS, num_classes)


@MODELS.register("resnet32")
def resnet32(num_classes: int = 100) -> ResNet:
    return ResNet(32, _WIDTHS, num_classes)


@MODELS.register("resnet44")
def resnet44(num_classes: int = 100) -> ResNet:
    return ResNet(44, _WIDTHS, num_classes)


@MODELS.register("resnet56")
def resnet56(num_classes: int = 100) -> ResNet:
    return ResNet(56, _WIDTHS, num_classes)


@MODELS.register("resnet110")
def resnet110(num_classes: int = 100) -> ResNet:
    return ResNet(110, _WIDTHS, num_classes)


@MODELS.register("resnet8x4")
def resnet8x4(num_classes: int = 100) -> ResNet:
    """ResNet-8 with 4x wider stages (32/64/128/256): the CRD paper's student for resnet32x4."""
    return ResNet(8, _WIDTHS_X4, num_classes)


@MODELS.register("resnet32x4")
def resnet32x4(num_classes: int = 100) -> ResNet:
    """ResNet-32 with 4x wider stages (32/64/128/256): the CRD paper's strongest CIFAR teacher."""
    return ResNet(32, _WIDTHS_X4, num_classes)
