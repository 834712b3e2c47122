"""Export weights to safetensors: a format that holds tensors only, so sharing it can never run code."""

from __future__ import annotations

import json
from pathlib import Path

from distillers.engine.checkpoint import load_checkpoint


def export_safetensors(ckpt: str | Path, out: str | Path | None = None) -> Path:
    """Write the checkpoint's ``model`` state dict (plus arch/accuracy metadata) as ``.safetensors``."""
    from safetensors.torch import save_file

    checkpoint = load_checkpoint(ckpt)
    target = Path(out) if out else Path(ckpt).with_suffix(".safetensors")
    metadata = {key: json.dumps(checkpoint[key]) for key in ("arch", "epoch", "accuracy", "num_classes", "dataset")
                if isinstance(checkpoint.get(key), (str, int, float))}
    tensors = {name: tensor.contiguous() for name, tensor in checkpoint["model"].items()}
    save_file(tensors, str(target), metadata=metadata)
    return target
