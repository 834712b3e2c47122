"""Registry of distillation methods: one file each, registered by name (and the seed's alias)."""

from __future__ import annotations

from distillers.methods.base import Method, Pair, Step, Weights, kd_loss
from distillers.methods.options import Option
from distillers.registry import Registry, import_submodules

METHODS: Registry = Registry("method")

import_submodules(__name__, __path__)

__all__ = ["METHODS", "Method", "Option", "Pair", "Step", "Weights", "kd_loss"]
