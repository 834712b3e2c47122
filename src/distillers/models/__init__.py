"""Registry of CIFAR architectures with RepDistiller's parameter names (one file per family)."""

from __future__ import annotations

from torch import nn

from distillers.models.base import FeatureInfo, feature_shapes
from distillers.registry import Registry, import_submodules

MODELS: Registry = Registry("model")

# Students the seed trains with lr 0.01 instead of 0.05 (RepDistiller train_student.py).
SMALL_LR_MODELS = frozenset({"MobileNetV2", "ShuffleV1", "ShuffleV2"})


def create_model(name: str, num_classes: int = 100, input_size: int = 32) -> nn.Module:
    """Build a registered model by name (unknown names raise a UserError listing the valid ones), or an external
    one named ``timm:<name>`` / ``torchvision:<name>`` (random init; see ``models.sources`` for weights)."""
    from distillers.models import sources

    if sources.is_external_name(name):
        return sources.create(name, num_classes, input_size)[0]
    return MODELS.get(name)(num_classes=num_classes)


def create_named(name: str, num_classes: int, input_size: int = 32) -> tuple[nn.Module, str]:
    """``create_model`` and the name a checkpoint records to rebuild it (an external model's name carries the input
    size it was built for, e.g. a ViT's ``img_size``)."""
    from distillers.models import sources

    if sources.is_external_name(name):
        return sources.create(name, num_classes, input_size)
    return create_model(name, num_classes), name


def canonical_name(name: str) -> str:
    """The registered name of a zoo model (aliases resolved), or a checked external ``timm:``/``torchvision:`` name."""
    from distillers.models import sources

    return sources.model_name(name) if sources.is_external_name(name) else MODELS.canonical(name)


def default_lr(name: str) -> float:
    """The seed's learning rate for a model: 0.01 for MobileNetV2/ShuffleNets, else 0.05 (external models too)."""
    from distillers.models import sources

    if sources.is_external_name(name):
        return 0.05
    return 0.01 if MODELS.canonical(name) in SMALL_LR_MODELS else 0.05


import_submodules(__name__, __path__)

__all__ = ["MODELS", "FeatureInfo", "canonical_name", "create_model", "create_named", "default_lr",
           "feature_shapes", "SMALL_LR_MODELS"]
