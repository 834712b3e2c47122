"""MobileNetV2: Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018, arXiv 1801.04381.

RepDistiller's ``models/mobilenetv2.py`` ``mobile_half`` (expansion 6, width 0.5, parameter names included), the
CIFAR variant of "Knowledge Distillation via Route Constrained Optimization": a stride-2 stem, so a 32x32
input ends at 2x2. Unlike RepDistiller it prints nothing when built.
"""

from __future__ import annotations

from torch import Tensor, nn

from distillers.models import MODELS
from distillers.models.base import FeatureInfo
from distillers.models.resnet import init_weights

# (channels at width 1, blocks, first stride) per stage; the first stage does not expand (ratio 1).
_STAGES: tuple[tuple[int, int, int], ...] = (
    (16, 1, 1),
    (24, 2, 1),
    (32, 3, 2),
    (64, 4, 2),
    (96, 3, 1),
    (160, 3, 2),
    (320, 1, 1),
)
# The stages whose outputs are features (RepDistiller's f1..f4), at 16x16, 8x8, 4x4 and 2x2.
_FEATURE_STAGES = (1, 2, 4, 6)


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class InvertedResidual(nn.Module):
    """Pointwise expand, depthwise 3x3, linear pointwise project; identity shortcut when stride 1 and same width."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = in_channels * expand_ratio
        self.use_res_connect = stride == 1 and in_channels == out_channels
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1, 1, 0, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, out_channels, 1, 1, 0, bias=False),
            nn.BatchNorm2d(out_channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        return x + out if self.use_res_connect else out


class MobileNetV2(nn.Module):
    """MobileNetV2 for 32x32 inputs with ``expand_ratio`` and ``width_mult`` (RepDistiller's ``T`` and ``W``).

    Features: ``[stem, stage1, stage2, stage4, stage6, embedding]`` (stage indices from 0); the stage outputs are
    linear bottlenecks (no ReLU). RepDistiller quirk kept: ``preact`` is ignored, the features are the same either way.
    """

    def __init__(self, expand_ratio: int = 6, width_mult: float = 0.5, num_classes: int = 100) -> None:
        super().__init__()
        in_channels = int(32 * width_mult)
        self.conv1 = _conv_bn_relu(3, in_channels, 3, stride=2)
        reduction = 2
        self.feature_info = [FeatureInfo(in_channels, reduction)]
        self.blocks = nn.ModuleList()
        for index, (base_channels, num_blocks, stride) in enumerate(_STAGES):
            out_channels = int(base_channels * width_mult)
            ratio = 1 if index == 0 else expand_ratio
            stage = []
            for block_stride in [stride] + [1] * (num_blocks - 1):
                stage.append(InvertedResidual(in_channels, out_channels, block_stride, ratio))
                in_channels = out_channels
            self.blocks.append(nn.Sequential(*stage))
            reduction *= stride
            if index in _FEATURE_STAGES:
                self.feature_info.append(FeatureInfo(out_channels, reduction))
        self.last_channel = int(1280 * width_mult) if width_mult > 1.0 else 1280
        self.conv2 = _conv_bn_relu(in_channels, self.last_channel, 1, stride=1)
        self.classifier = nn.Sequential(nn.Linear(self.last_channel, num_classes))
        # Pools the 2x2 map of a 32x32 input (RepDistiller: input_size // 16, ceil_mode=True).
        self.avgpool = nn.AvgPool2d(2, ceil_mode=True)
        self.feature_info.append(FeatureInfo(self.last_channel, None))
        init_weights(self, linear_std=0.01)

    def get_feat_modules(self) -> nn.ModuleList:
        return nn.ModuleList([self.conv1, self.blocks])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        return [self.blocks[index][-1].conv[-1] for index in _FEATURE_STAGES]

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> Tensor | tuple[list[Tensor], Tensor]:
        out = self.conv1(x)
        feats = [out]
        for index, stage in enumerate(self.blocks):
            out = stage(out)
            if index in _FEATURE_STAGES:
                feats.append(out)
        embedding = self.avgpool(self.conv2(out)).flatten(1)
        feats.append(embedding)
        logits = self.classifier(embedding)
        return (feats, logits) if is_feat else logits


@MODELS.register("MobileNetV2")
def mobilenet_v2(num_classes: int = 100) -> MobileNetV2:
    """RepDistiller's ``mobile_half``: expansion 6, width 0.5 (the seed's MobileNetV2 student)."""
    return MobileNetV2(expand_ratio=6, width_mult=0.5, num_classes=num_classes)
