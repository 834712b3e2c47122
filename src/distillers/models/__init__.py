"""Registry of CIFAR architectures with RepDistiller's parameter names (one file per family)."""

from __future__ import annotations

from torch import nn

from distillers.models.base import FeatureInfo, feature_shapes
from distillers.registry import Registry, import_submodules

MODELS: Registry = Registry("model")

# Students the seed trains with lr 0.01 instead of 0.05 (RepDistiller train_student.py).
SMALL_LR_MODELS = frozenset({"MobileNetV2", "ShuffleV1", "ShuffleV2"})


def create_model(name: str, num_classes: int = 100) -> nn.Module:
    """Build a registered model by name (unknown names raise a UserError listing the valid ones)."""
    return MODELS.get(name)(num_classes=num_classes)


def default_lr(name: str) -> float:
    """The seed's learning rate for a model: 0.01 for MobileNetV2/ShuffleNets, else 0.05."""
    return 0.01 if MODELS.canonical(name) in SMALL_LR_MODELS else 0.05


import_submodules(__name__, __path__)

__all__ = ["MODELS", "FeatureInfo", "create_model", "default_lr", "feature_shapes", "SMALL_LR_MODELS"]
