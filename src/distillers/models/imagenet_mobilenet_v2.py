"""ImageNet MobileNetV2: Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018,
arXiv 1801.04381.

torchvision's ``mobilenet_v2`` with its parameter names (``features.N...``, ``classifier.1``), ReLU6, channel
rounding and initialisation, so torchvision-format weights load with ``strict=True``. The CIFAR student of the seed
(RepDistiller's ``mobile_half``) is a different network: ``models/mobilenet_v2.py``.
"""

from __future__ import annotations

from torch import Tensor, nn

from distillers.models import MODELS
from distillers.models.base import FeatureInfo
from distillers.models.resnet import init_weights

# (expansion, channels at width 1, blocks, first stride) per stage, from the paper's Table 2.
_STAGES: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
# The stages whose last block is a feature, as in the CIFAR MobileNetV2: reductions 4, 8, 16 and 32.
_FEATURE_STAGES = (1, 2, 4, 6)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor``, never more than 10% below ``value`` (torchvision's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def _conv_bn_relu6(in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1,
                   groups: int = 1) -> nn.Sequential:
    """torchvision's ``Conv2dNormActivation`` layout: submodules 0 (conv), 1 (BN), 2 (ReLU6)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU6(inplace=True),
    )


class InvertedResidual(nn.Module):
    """[1x1 expand] + depthwise 3x3 + linear 1x1 projection; identity shortcut at stride 1 and equal widths."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = int(round(in_channels * expand_ratio))
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[nn.Module] = [] if expand_ratio == 1 else [_conv_bn_relu6(in_channels, hidden, kernel_size=1)]
        layers += [
            _conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_channels, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class ImageNetMobileNetV2(nn.Module):
    """MobileNetV2 for 224x224 inputs (adaptive pool: any size works) with torchvision's names and ``width_mult``.

    Features: ``[stem, stage1, stage2, stage4, stage6, embedding]`` (stage indices from 0) at reductions
    2, 4, 8, 16, 32; stage outputs are linear bottlenecks (no ReLU), so ``preact`` changes nothing, as in the
    CIFAR MobileNetV2.
    """

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, dropout: float = 0.2) -> None:
        super().__init__()
        in_channels = make_divisible(32 * width_mult)
        layers: list[nn.Module] = [_conv_bn_relu6(3, in_channels, stride=2)]
        reduction = 2
        self.feature_info = [FeatureInfo(in_channels, reduction)]
        self.feature_indices = [0]  # positions in ``features`` whose outputs are features
        for index, (expand_ratio, channels, num_blocks, stride) in enumerate(_STAGES):
            out_channels = make_divisible(channels * width_mult)
            for block_stride in [stride] + [1] * (num_blocks - 1):
                layers.append(InvertedResidual(in_channels, out_channels, block_stride, expand_ratio))
                in_channels = out_channels
            reduction *= stride
            if index in _FEATURE_STAGES:
                self.feature_indices.append(len(layers) - 1)
                self.feature_info.append(FeatureInfo(out_channels, reduction))
        self.last_channel = make_divisible(1280 * max(1.0, width_mult))
        layers.append(_conv_bn_relu6(in_channels, self.last_channel, kernel_size=1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))
        self.feature_info.append(FeatureInfo(self.last_channel, None))
        init_weights(self, linear_std=0.01)  # torchvision's: He-normal (fan_out) convs, BN 1/0, Linear N(0, 0.01)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList(list(self.features)[:-1])  # all but the final 1x1 conv, as the CIFAR model

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        return [self.features[index].conv[-1] for index in self.feature_indices[1:]]

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> Tensor | tuple[list[Tensor], Tensor]:
        feats = []
        out = x
        for index, layer in enumerate(self.features):
            out = layer(out)
            if index in self.feature_indices:
                feats.append(out)
        embedding = self.avgpool(out).flatten(1)
        feats.append(embedding)
        logits = self.classifier(embedding)
        return (feats, logits) if is_feat else logits


@MODELS.register("mobilenet_v2_imagenet")
def mobilenet_v2_imagenet(num_classes: int = 1000) -> ImageNetMobileNetV2:
    """MobileNetV2 1.0 (torchvision ``mobilenet_v2``), 3.5M parameters at 1000 classes."""
    return ImageNetMobileNetV2(num_classes=num_classes)
