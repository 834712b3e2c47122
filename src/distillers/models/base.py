"""The feature interface every model offers (RepDistiller's, plus declared metadata).

Contract of a registered model (see DESIGN.md "Model"):
- ``model(x)`` returns logits; ``model(x, is_feat=True, preact=False)`` returns ``(feats, logits)`` with
  ``feats = [stem, stage_1, ..., stage_n, embedding]`` exactly as RepDistiller slices them;
  ``preact=True`` gives the stage outputs before their final ReLU (AB, OFD, ReviewKD consume these).
- ``model.feature_info``: one ``FeatureInfo`` per entry of ``feats`` so methods size their adapters from
  metadata instead of a dry run.
- ``model.get_feat_modules()`` (an ``nn.ModuleList``, used by two-stage init) and
  ``model.get_bn_before_relu()`` (the BN layers before each stage's final ReLU; AB and OFD).
- Parameter names and shapes equal RepDistiller's, so its checkpoints load with ``strict=True``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FeatureInfo:
    """Channels and spatial reduction of one feature entry; ``reduction=None`` marks the pooled embedding."""

    channels: int
    reduction: int | None

    def shape(self, input_size: int) -> tuple[int, ...]:
        """Shape of this feature (without the batch dimension) for a square ``input_size`` input."""
        if self.reduction is None:
            return (self.channels,)
        side = max(1, input_size // self.reduction)
        return (self.channels, side, side)


def feature_shapes(model, input_size: int = 32) -> list[tuple[int, ...]]:
    """The shapes of ``model(x, is_feat=True)[0]`` for a square input, read from its declared metadata."""
    return [info.shape(input_size) for info in model.feature_info]
