"""ImageNet ResNets: He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, arXiv 1512.03385.

torchvision's ``resnet18/34/50`` with its parameter names and initialisation, so torchvision-format teacher weights
(``resnet34-b627a593.pth``, a bare state dict) load with ``strict=True``: a 7x7 stride-2 stem and a 3x3 max pool,
then four stages (strides 1, 2, 2, 2); ResNet-50 is "v1.5" (the stride sits on the bottleneck's 3x3 conv).
Features follow our zoo: ``[stem, layer1, layer2, layer3, layer4, embedding]``, the stem being the input of the
first stage (after the max pool, reduction 4). mdistiller taps the stem before its ReLU and max pool instead.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from distillers.models import MODELS
from distillers.models.base import FeatureInfo
from distillers.models.resnet import conv3x3, init_weights


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut; ``forward_preact`` also returns the sum before the final ReLU."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn2

    def forward_preact(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        preact = out + (x if self.downsample is None else self.downsample(x))
        return F.relu(preact), preact

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_preact(x)[0]


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride), 1x1 expand x4, plus a shortcut; as torchvision's (ResNet v1.5)."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def last_bn(self) -> nn.BatchNorm2d:
        return self.bn3

    def forward_preact(self, x: Tensor) -> tuple[Tensor, Tensor]:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        preact = out + (x if self.downsample is None else self.downsample(x))
        return F.relu(preact), preact

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_preact(x)[0]


Block = type[BasicBlock] | type[Bottleneck]


class ImageNetResNet(nn.Module):
    """ResNet for 224x224 inputs (any size works: the pool is adaptive), parameter names equal torchvision's.

    Features: ``[stem, layer1, layer2, layer3, layer4, embedding]`` at reductions 4, 4, 8, 16, 32; ``preact=True``
    swaps the stage outputs for their last block's sum before the ReLU (the stem is the same either way).
    """

    def __init__(self, block: Block, layers: Sequence[int], num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.feature_info = [FeatureInfo(64, 4)]
        in_planes, reduction = 64, 4
        for index, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            stride = 1 if index == 0 else 2
            setattr(self, f"layer{index + 1}", _make_stage(block, in_planes, planes, blocks, stride))
            in_planes, reduction = planes * block.expansion, reduction * stride
            self.feature_info.append(FeatureInfo(in_planes, reduction))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        self.feature_info.append(FeatureInfo(in_planes, None))
        init_weights(self)  # torchvision's: He-normal (fan_out) convs, BN 1/0, default Linear

    def stages(self) -> list[nn.Sequential]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.bn1, self.relu, self.maxpool, *self.stages()])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        return [stage[-1].last_bn() for stage in self.stages()]

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> Tensor | tuple[list[Tensor], Tensor]:
        out = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats, feats_pre = [out], [out]
        for stage in self.stages():
            *body, last = stage
            for block in body:
                out = block(out)
            out, out_pre = last.forward_preact(out)
            feats.append(out)
            feats_pre.append(out_pre)
        embedding = self.avgpool(out).flatten(1)
        logits = self.fc(embedding)
        if not is_feat:
            return logits
        return (feats_pre if preact else feats) + [embedding], logits


def _make_stage(block: Block, in_planes: int, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
    """One stage; its first block projects the shortcut (1x1 conv + BN) when the shape changes."""
    downsample = None
    if stride != 1 or in_planes != planes * block.expansion:
        downsample = nn.Sequential(
            nn.Conv2d(in_planes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
            nn.BatchNorm2d(planes * block.expansion),
        )
    blocks = [block(in_planes, planes, stride, downsample)]
    blocks += [block(planes * block.expansion, planes) for _ in range(1, num_blocks)]
    return nn.Sequential(*blocks)


@MODELS.register("resnet18_imagenet")
def resnet18_imagenet(num_classes: int = 1000) -> ImageNetResNet:
    """ResNet-18 (torchvision ``resnet18``): the student of the ImageNet pair ResNet-34 -> ResNet-18."""
    return ImageNetResNet(BasicBlock, (2, 2, 2, 2), num_classes)


@MODELS.register("resnet34_imagenet")
def resnet34_imagenet(num_classes: int = 1000) -> ImageNetResNet:
    """ResNet-34 (torchvision ``resnet34``): the teacher of the ImageNet pair ResNet-34 -> ResNet-18."""
    return ImageNetResNet(BasicBlock, (3, 4, 6, 3), num_classes)


@MODELS.register("resnet50_imagenet")
def resnet50_imagenet(num_classes: int = 1000) -> ImageNetResNet:
    """ResNet-50 (torchvision ``resnet50``): the teacher of the ImageNet pair ResNet-50 -> MobileNetV1."""
    return ImageNetResNet(Bottleneck, (3, 4, 6, 3), num_classes)
