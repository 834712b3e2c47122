"""Checkpoints: atomic writes, safe loads (a checkpoint is untrusted input), RepDistiller compatibility.

A checkpoint is a dict with ``model`` (a RepDistiller-compatible state dict), ``arch``, ``epoch``,
``accuracy`` and, for resume, the optimiser, method state and RNG states. Loading always uses
``torch.load(weights_only=True)``, so a pickle that would run code is refused rather than executed.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distillers.errors import UserError


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """Write ``payload`` to ``path`` via a temporary file, fsync and rename: a crash never leaves half a file.

    A full disk or a read-only folder raises UserError and leaves any previous file at ``path`` intact.
    """
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise UserError(f"cannot write checkpoint in {path.parent}: {error.strerror}") from error
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        Path(tmp).unlink(missing_ok=True)
        raise UserError(f"could not save checkpoint {path}: {error.strerror or error}; "
                        f"the previous checkpoint (if any) is intact") from error
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely and return it as a dict with a ``model`` state dict.

    Accepts our checkpoints, RepDistiller's (``{"model": state_dict, ...}``) and bare state dicts.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint not found: {path}")
    if path.is_dir():
        raise UserError(f"checkpoint path is a directory, not a file: {path}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # an untrusted file can fail in many ways; none of them may escape as a traceback
        text = str(error).strip()
        if "Weights only load failed" in text:
            detail = next((line.strip() for line in text.splitlines() if "GLOBAL" in line or "global" in line),
                          "it references code")
            raise UserError(f"refusing to load {path}: it is not a plain weights file and could run code when "
                            f"unpickled ({detail[:160]})") from error
        first = text.splitlines()[0][:160] if text else type(error).__name__
        raise UserError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {first}") from error
    if isinstance(blob, dict) and isinstance(blob.get("model"), dict):
        return blob
    if isinstance(blob, dict) and blob and all(isinstance(v, torch.Tensor) for v in blob.values()):
        return {"model": blob}
    raise UserError(f"{path} is not a model checkpoint: expected a dict with a 'model' state dict")


def architecture_of(path: str | Path, checkpoint: dict[str, Any], names: list[str]) -> str | None:
    """The architecture recorded in a checkpoint, else inferred from a RepDistiller folder name.

    RepDistiller saves teachers as ``save/models/<arch>_vanilla/ckpt_epoch_240.pth`` (or
    ``<arch>_cifar100_lr_...``): the longest registered model name that prefixes the folder name wins.
    """
    arch = checkpoint.get("arch")
    if isinstance(arch, str) and arch:
        return arch
    folder = Path(path).resolve().parent.name
    candidates = [name for name in names if folder == name or folder.startswith(name + "_")]
    return max(candidates, key=len) if candidates else None


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str, arch: str) -> None:
    """Load ``state`` into ``model`` with ``strict=True``; a mismatch says which keys differ."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong_shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if keys:
                shown = ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")
                parts.append(f"{label}: {shown}")
        raise UserError(f"{source} does not hold a {arch} model ({'; '.join(parts)}); "
                        f"pass the right architecture name")
    model.load_state_dict(state, strict=True)
