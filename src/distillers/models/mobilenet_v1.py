"""MobileNetV1: Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision Applications",
arXiv 1704.04861.

The ImageNet student of the pair ResNet-50 -> MobileNetV1 (CRD's and mdistiller's ImageNet table), width 1.0, laid
out as mdistiller's ``models/imagenet/mobilenetv1.py`` so its checkpoints load with ``strict=True``: ``model.0``
is the 3x3 stride-2 stem, ``model.1`` to ``model.13`` depthwise-separable blocks, then ``fc``. Deviations: an
adaptive average pool instead of ``AvgPool2d(7)`` (same value at 224x224, and other sizes work), and the features
add the stem. Initialisation is PyTorch's default, as in mdistiller.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from distillers.models import MODELS
from distillers.models.base import FeatureInfo

# (output channels, stride) of the depthwise-separable blocks model.1 ... model.13 (the paper's Table 1).
_BLOCKS: tuple[tuple[int, int], ...] = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1),
    (1024, 2), (1024, 1),
)
# Indices into ``model`` of the last block at each resolution (mdistiller's feat1..feat4): reductions 4 to 32.
_FEATURE_BLOCKS = (3, 5, 11, 13)
STEM_CHANNELS = 32


class ConvBlock(nn.Sequential):
    """Conv-BN-ReLU layers ending in a ReLU; ``forward_preact`` also returns the last BN's output before it."""

    def forward_preact(self, x: Tensor) -> tuple[Tensor, Tensor]:
        *body, _ = self
        for layer in body:
            x = layer(x)
        return F.relu(x), x


def _conv_bn(in_channels: int, out_channels: int, stride: int) -> ConvBlock:
    return ConvBlock(
        nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _conv_dw(in_channels: int, out_channels: int, stride: int) -> ConvBlock:
    """Depthwise 3x3 conv-BN-ReLU, then pointwise 1x1 conv-BN-ReLU."""
    return ConvBlock(
        nn.Conv2d(in_channels, in_channels, 3, stride, 1, groups=in_channels, bias=False),
        nn.BatchNorm2d(in_channels),
        nn.ReLU(inplace=True),
        nn.Conv2d(in_channels, out_channels, 1, 1, 0, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class MobileNetV1(nn.Module):
    """MobileNetV1 1.0 for 224x224 inputs with mdistiller's parameter names.

    Features: ``[stem, model.3, model.5, model.11, model.13, embedding]`` at reductions 2, 4, 8, 16, 32;
    ``preact=True`` gives the four stage outputs before their final ReLU (mdistiller's ``preact_feats``).
    """

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        blocks = [_conv_bn(3, STEM_CHANNELS, stride=2)]
        self.feature_info = [FeatureInfo(STEM_CHANNELS, 2)]
        in_channels, reduction = STEM_CHANNELS, 2
        for out_channels, stride in _BLOCKS:
            blocks.append(_conv_dw(in_channels, out_channels, stride))
            in_channels, reduction = out_channels, reduction * stride
            if len(blocks) - 1 in _FEATURE_BLOCKS:
                self.feature_info.append(FeatureInfo(out_channels, reduction))
        self.model = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)
        self.feature_info.append(FeatureInfo(in_channels, None))

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.model])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        return [self.model[index][-2] for index in _FEATURE_BLOCKS]

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> Tensor | tuple[list[Tensor], Tensor]:
        out = self.model[0](x)
        feats, feats_pre = [out], [out]
        for index in range(1, len(self.model)):
            if index in _FEATURE_BLOCKS:
                out, out_pre = self.model[index].forward_preact(out)
                feats.append(out)
                feats_pre.append(out_pre)
            else:
                out = self.model[index](out)
        embedding = self.avgpool(out).flatten(1)
        logits = self.fc(embedding)
        if not is_feat:
            return logits
        return (feats_pre if preact else feats) + [embedding], logits


@MODELS.register("mobilenet_v1_imagenet", "MobileNetV1")
def mobilenet_v1_imagenet(num_classes: int = 1000) -> MobileNetV1:
    """MobileNetV1 1.0 (4.2M parameters at 1000 classes); ``MobileNetV1`` is mdistiller's name for it."""
    return MobileNetV1(num_classes)
