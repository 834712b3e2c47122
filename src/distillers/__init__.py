"""distillers: knowledge distillation for image classification (RepDistiller-compatible)."""

__version__ = "0.1.0"
