"""A small CNN registered as ``tiny_cnn``: the worked example of the docs' "Adding a model" page.

What a method needs from a model, and nothing more: logits from ``model(x)``; the feature list from
``model(x, is_feat=True)`` (stem, each stage, the pooled embedding last); pre-activation stage outputs with
``preact=True``; ``feature_info`` declaring the channels and spatial reduction of each feature; and the two
hooks the two-stage and margin methods use (``get_feat_modules``, ``get_bn_before_relu``).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from distillers.models import MODELS, FeatureInfo


def conv_bn(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    """A 3x3 convolution and its BatchNorm; the ReLU is applied by the caller, after the pre-activation is kept."""
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(out_channels))


class TinyCNN(nn.Module):
    """Stem and three stages (strides 1, 2, 2), global average pooling, a linear classifier."""

    def __init__(self, num_classes: int = 100, widths: tuple[int, ...] = (16, 32, 64)) -> None:
        super().__init__()
        self.stem = conv_bn(3, widths[0], stride=1)
        strides = (1, 2, 2)
        inputs = (widths[0], *widths[:-1])
        self.stages = nn.ModuleList(conv_bn(c_in, c_out, s) for c_in, c_out, s in zip(inputs, widths, strides))
        self.fc = nn.Linear(widths[-1], num_classes)
        # One entry per feature of forward(is_feat=True); reduction None marks the pooled embedding.
        self.feature_info = [FeatureInfo(widths[0], 1), FeatureInfo(widths[0], 1), FeatureInfo(widths[1], 2),
                             FeatureInfo(widths[2], 4), FeatureInfo(widths[2], None)]

    def forward(self, x: Tensor, is_feat: bool = False, preact: bool = False) -> Tensor | tuple[list[Tensor], Tensor]:
        out = F.relu(self.stem(x))
        feats, preacts = [out], [out]
        for stage in self.stages:
            pre = stage(out)
            out = F.relu(pre)
            feats.append(out)
            preacts.append(pre)
        embedding = F.adaptive_avg_pool2d(out, 1).flatten(1)
        logits = self.fc(embedding)
        if not is_feat:
            return logits
        return (preacts if preact else feats) + [embedding], logits

    def get_feat_modules(self) -> nn.ModuleList:
        """Everything before the classifier (trained by the initialisation stage of AB, FT and FSP)."""
        return nn.ModuleList([self.stem, self.stages])

    def get_bn_before_relu(self) -> list[nn.BatchNorm2d]:
        """The BatchNorm before each stage's ReLU (AB and OFD read its statistics)."""
        return [stage[1] for stage in self.stages]


@MODELS.register("tiny_cnn")
def tiny_cnn(num_classes: int = 100) -> TinyCNN:
    return TinyCNN(num_classes)
