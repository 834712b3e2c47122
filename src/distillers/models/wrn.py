"""Wide ResNets: Zagoruyko and Komodakis, "Wide Residual Networks", BMVC 2016, arXiv 1605.07146.

RepDistiller's ``models/wrn.py`` (parameter names included, dropout omitted: every model there uses rate 0):
pre-activation blocks, ``depth = 6n + 4``, widths 16, 16k, 32k, 64k for widen factor k.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from distillers.models import MODELS
from distillers.models.base import FeatureInfo
from distillers.models.resnet import init_weights


class BasicBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3, BN-ReLU-conv3x3, plus a shortcut.

    When the width changes the shortcut is a 1x1 conv applied to the *activated* input; otherwise it is the raw
    input (``convShortcut`` is then None, so it has no state_dict entry).
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.convShortcut = None
        if in_planes != out_planes:
            self.convShortcut = nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        activated = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(activated))))
        shortcut = x if self.convShortcut is None else self.convShortcut(activated)
        return shortcut + out


class NetworkBlock(nn.Module):
    """One stage: ``num_layers`` BasicBlocks, the first one carrying the stride and the width change."""

    def __init__(self, num_layers: int, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        blocks = [BasicBlock(in_planes, out_planes, stride)]
        blocks += [BasicBlock(out_planes, out_planes, 1) for _ in range(1, num_layers)]
        self.layer = nn.Sequential(*blocks)

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-depth-k: 3x3 stem, three NetworkBlocks (strides 1, 2, 2), final BN-ReLU, 8x8 average pool.

    Features: ``[stem, stage1, stage2, stage3, embedding]``. The stages end without an activation, so
    RepDistiller's ``preact=True`` gives the *next* BatchNorm applied to each stage output
    (``block2.layer[0].bn1``, ``block3.layer[0].bn1``, ``bn1``): in train mode that call updates those running
    statistics once more, a quirk kept for parity.
    """

    def __init__(self, depth: int, widen_factor: int = 1, num_classes: int = 100) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n + 4 (16, 22, 28, 40, ...), got {depth}")
        blocks_per_stage = (depth - 4) // 6
        channels = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, channels[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(blocks_per_stage, channels[0], channels[1], 1)
        self.block2 = NetworkBlock(blocks_per_stage, channels[1], channels[2], 2)
        self.block3 = NetworkBlock(blocks_per_stage, channels[2], channels[3], 2)
        self.bn1 = nn.BatchNorm2d(channels[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(channels[3], num_classes)
        self.feature_info = [
            FeatureInfo(channels[0], 1),
            FeatureInfo(channels[1], 1),
            FeatureInfo(channels[2], 2),
            FeatureInfo(channels[3], 4),
            FeatureInfo(channels[3], None),
        ]
        init_weights(self, zero_linear_bias=True)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.block1, self.block2, self.block3])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        return [self.block2.layer[0].bn1, self.block3.layer[0].bn1, self.bn1]

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> Tensor | tuple[list[Tensor], Tensor]:
        f0 = self.conv1(x)
        f1 = self.block1(f0)
        f2 = self.block2(f1)
        f3 = self.block3(f2)
        out = self.relu(self.bn1(f3))
        embedding = F.avg_pool2d(out, 8).flatten(1)
        logits = self.fc(embedding)
        if not is_feat:
            return logits
        if preact:
            f1 = self.block2.layer[0].bn1(f1)
            f2 = self.block3.layer[0].bn1(f2)
            f3 = self.bn1(f3)
        return [f0, f1, f2, f3, embedding], logits


@MODELS.register("wrn_16_1")
def wrn_16_1(num_classes: int = 100) -> WideResNet:
    return WideResNet(16, 1, num_classes)


@MODELS.register("wrn_16_2")
def wrn_16_2(num_classes: int = 100) -> WideResNet:
    return WideResNet(16, 2, num_classes)


@MODELS.register("wrn_40_1")
def wrn_40_1(num_classes: int = 100) -> WideResNet:
    return WideResNet(40, 1, num_classes)


@MODELS.register("wrn_40_2")
def wrn_40_2(num_classes: int = 100) -> WideResNet:
    return WideResNet(40, 2, num_classes)
