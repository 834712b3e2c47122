"""ResNet-50 for CIFAR: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, arXiv 1512.03385.

RepDistiller's ``models/resnetv2.py`` (parameter names included): the ImageNet Bottleneck ResNet with a 3x3
stride-1 stem and no max pool, so a 32x32 input reaches 4x4 in the last stage.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from distillers.models import MODELS
from distillers.models.base import FeatureInfo
from distillers.models.resnet import init_weights


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand by 4, plus a shortcut, then ReLU.

    The last block of a stage returns ``(out, preact)``, the sum before the final ReLU, as RepDistiller's does.
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, is_last: bool = False) -> None:
        super().__init__()
        self.is_last = is_last
        out_planes = self.expansion * planes
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        # An empty Sequential is the identity and adds no state_dict entries.
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_planes),
            )

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        preact = out + self.shortcut(x)
        out = F.relu(preact)
        return (out, preact) if self.is_last else out


class ResNet(nn.Module):
    """Bottleneck ResNet with four stages (64/128/256/512 x 4 channels, strides 1, 2, 2, 2) and global pooling.

    Features: ``[stem, stage1, ..., stage4, embedding]``. RepDistiller quirk kept: with ``preact=True`` the
    result is a list ``[feats, logits]`` instead of a tuple (it unpacks the same way).
    """

    def __init__(self, num_blocks: tuple[int, int, int, int], num_classes: int = 100) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes = 64
        stages = []
        for planes, blocks, stride in zip((64, 128, 256, 512), num_blocks, (1, 2, 2, 2)):
            strides = [stride] + [1] * (blocks - 1)
            stage = []
            for i, block_stride in enumerate(strides):
                stage.append(Bottleneck(in_planes, planes, block_stride, is_last=i == blocks - 1))
                in_planes = planes * Bottleneck.expansion
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.linear = nn.Linear(in_planes, num_classes)
        self.feature_info = [
            FeatureInfo(64, 1),
            FeatureInfo(256, 1),
            FeatureInfo(512, 2),
            FeatureInfo(1024, 4),
            FeatureInfo(2048, 8),
            FeatureInfo(2048, None),
        ]
        init_weights(self)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.bn1, self.layer1, self.layer2, self.layer3, self.layer4])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        return [self.layer1[-1].bn3, self.layer2[-1].bn3, self.layer3[-1].bn3, self.layer4[-1].bn3]

    def forward(
        self, x: Tensor, is_feat: bool = False, preact: bool = False
    ) -> Tensor | tuple[list[Tensor], Tensor] | list:
        f0 = F.relu(self.bn1(self.conv1(x)))
        f1, f1_pre = self.layer1(f0)
        f2, f2_pre = self.layer2(f1)
        f3, f3_pre = self.layer3(f2)
        f4, f4_pre = self.layer4(f3)
        embedding = self.avgpool(f4).flatten(1)
        logits = self.linear(embedding)
        if not is_feat:
            return logits
        if preact:
            return [[f0, f1_pre, f2_pre, f3_pre, f4_pre, embedding], logits]
        return [f0, f1, f2, f3, f4, embedding], logits


@MODELS.register("ResNet50")
def resnet50(num_classes: int = 100) -> ResNet:
    """ResNet-50 (3, 4, 6, 3 Bottleneck blocks): the CRD paper's teacher for the ShuffleNet/MobileNet students."""
    return ResNet((3, 4, 6, 3), num_classes)
