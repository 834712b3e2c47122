"""VGG with BatchNorm for CIFAR: Simonyan and Zisserman, "Very Deep Convolutional Networks", ICLR 2015, arXiv 1409.1556.

RepDistiller's ``models/vgg.py`` ``vgg*_bn`` models (parameter names included): five conv blocks, no FC stack,
a single linear classifier on the globally pooled 512 channels. ``vgg8`` is RepDistiller's one-conv-per-block
configuration "S".
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from distillers.models import MODELS
from distillers.models.base import FeatureInfo
from distillers.models.resnet import init_weights

# Conv widths of the five blocks per model (RepDistiller's configurations S, A, B, D, E).
_CONFIGS: dict[str, tuple[tuple[int, ...], ...]] = {
    "vgg8": ((64,), (128,), (256,), (512,), (512,)),
    "vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    "vgg13": ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
    "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)),
    "vgg19": ((64, 64), (128, 128), (256, 256, 256, 256), (512, 512, 512, 512), (512, 512, 512, 512)),
}


def _make_block(widths: tuple[int, ...], in_channels: int) -> nn.Sequential:
    """Conv3x3(bias)-BN-ReLU per width, without the last ReLU: the model applies it so it can expose the preact."""
    layers: list[nn.Module] = []
    for width in widths:
        conv = nn.Conv2d(in_channels, width, kernel_size=3, padding=1)
        layers += [conv, nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        in_channels = width
    return nn.Sequential(*layers[:-1])


class VGG(nn.Module):
    """Five conv blocks with 2x2 max pools between the first four, global average pool, linear classifier.

    Features: ``[block0, block1, ..., block4, embedding]`` after ReLU (``preact=True``: before ReLU for blocks
    1-4). RepDistiller quirk kept: ``pool3`` only runs for 64x64 inputs, so at 32x32 block4 stays at 4x4 and
    ``feature_info`` (declared for 32x32 inputs) under-states block4's reduction for 64x64 inputs.
    """

    def __init__(self, config: tuple[tuple[int, ...], ...], num_classes: int = 100) -> None:
        super().__init__()
        in_channels = 3
        for index, widths in enumerate(config):
            self.add_module(f"block{index}", _make_block(widths, in_channels))
            in_channels = widths[-1]
        self.pool0 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool1 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool2 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool3 = nn.MaxPool2d(kernel_size=2, stride=2)
        self.pool4 = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Linear(512, num_classes)
        widths = [block[-1] for block in config]
        self.feature_info = [
            FeatureInfo(widths[0], 1),
            FeatureInfo(widths[1], 2),
            FeatureInfo(widths[2], 4),
            FeatureInfo(widths[3], 8),
            FeatureInfo(widths[4], 8),
            FeatureInfo(widths[4], None),
        ]
        init_weights(self, linear_std=0.01)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([
            self.block0, self.pool0, self.block1, self.pool1, self.block2,
            self.pool2, self.block3, self.pool3, self.block4, self.pool4,
        ])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        return [self.block1[-1], self.block2[-1], self.block3[-1], self.block4[-1]]

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> Tensor | tuple[list[Tensor], Tensor]:
        input_height = x.shape[2]
        f0 = F.relu(self.block0(x))
        f1_pre = self.block1(self.pool0(f0))
        f1 = F.relu(f1_pre)
        f2_pre = self.block2(self.pool1(f1))
        f2 = F.relu(f2_pre)
        f3_pre = self.block3(self.pool2(f2))
        f3 = F.relu(f3_pre)
        out = self.pool3(f3) if input_height == 64 else f3
        f4_pre = self.block4(out)
        f4 = F.relu(f4_pre)
        embedding = self.pool4(f4).flatten(1)
        logits = self.classifier(embedding)
        if not is_feat:
            return logits
        if preact:
            return [f0, f1_pre, f2_pre, f3_pre, f4_pre, embedding], logits
        return [f0, f1, f2, f3, f4, embedding], logits


def _vgg(name: str, num_classes: int) -> VGG:
    return VGG(_CONFIGS[name], num_classes)


@MODELS.register("vgg8")
def vgg8(num_classes: int = 100) -> VGG:
    return _vgg("vgg8", num_classes)


@MODELS.register("vgg11")
def vgg11(num_classes: int = 100) -> VGG:
    return _vgg("vgg11", num_classes)


@MODELS.register("vgg13")
def vgg13(num_classes: int = 100) -> VGG:
    return _vgg("vgg13", num_classes)


@MODELS.register("vgg16")
def vgg16(num_classes: int = 100) -> VGG:
    return _vgg("vgg16", num_classes)


@MODELS.register("vgg19")
def vgg19(num_classes: int = 100) -> VGG:
    return _vgg("vgg19", num_classes)
