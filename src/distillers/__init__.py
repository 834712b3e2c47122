"""distillers: knowledge distillation for image classification (RepDistiller-compatible)."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``distillers.Distiller`` (the library API), imported on first use so that ``import distillers`` stays light."""
    if name == "Distiller":
        from distillers.api import Distiller

        return Distiller
    raise AttributeError(f"module 'distillers' has no attribute {name!r}")


__all__ = ["Distiller", "__version__"]
