"""Checkpoints: atomic writes, safe loads (a checkpoint is untrusted input), RepDistiller compatibility.

A checkpoint is a dict with ``model`` (a RepDistiller-compatible state dict), ``arch``, ``epoch``,
``accuracy`` and, for resume, the optimiser, method state and RNG states. Loading always uses
``torch.load(weights_only=True)``, so a pickle that would run code is refused rather than executed.
"""

from __future__ import annotations

import io
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distillers.errors import UserError
from distillers.rundir import TMP_SUFFIX, write_bytes_atomic


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """Write ``payload`` to ``path`` via a temporary file, fsync and rename: a crash never leaves half a file.

    A full disk or a read-only folder raises UserError and leaves any previous file at ``path`` intact.
    """
    path = Path(path)
    # Serialise in memory first: torch's zip writer turns a failing write (a full disk) into a RuntimeError whose
    # text says nothing of the cause, while a plain write raises the OSError with its errno.
    buffer = io.BytesIO()
    try:
        torch.save(payload, buffer)
        write_bytes_atomic(path, buffer.getbuffer(), suffix=TMP_SUFFIX)
    except OSError as error:
        raise UserError(f"could not save checkpoint {path}: {error.strerror or error}; the previous checkpoint "
                        f"(if any) is intact: free some space and rerun with --resume") from error


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
        with warnings.catch_warnings():  # torch warns about unusual pickle protocols: the error below says it all
            warnings.simplefilter("ignore")
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # an untrusted file can fail in many ways; none of them may escape as a traceback
        raise UserError(describe_load_failure(path, error)) from error
    if isinstance(blob, dict) and isinstance(blob.get("model"), dict):
        return blob
    if isinstance(blob, dict) and blob and all(isinstance(v, torch.Tensor) for v in blob.values()):
        return {"model": blob}
    raise UserError(f"{path} is not a model checkpoint: expected a dict with a 'model' state dict")


def describe_load_failure(path: Path, error: Exception) -> str:
    """One line saying why ``torch.load`` refused or failed to read ``path``."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError as read_error:
        return f"cannot read checkpoint {path}: {read_error.strerror}"
    if head != b"PK\x03\x04" and head[:1] != b"\x80":  # neither torch.save's zip format (PyTorch >= 1.6) nor a pickle
        # (a text file would otherwise read as a pickle whose first byte is an opcode torch refuses)
        return f"{path} is not a PyTorch checkpoint (neither torch.save's zip format nor its legacy pickle format)"
    text = str(error).strip()
    if "Weights only load failed" in text:
        # torch's text: a generic paragraph, then the reason ("Unsupported global: GLOBAL posix.system ..."),
        # then "Check the documentation ..."; keep only the reason.
        paragraphs = [part.strip() for part in re.split(r"\n\s*\n", text) if part.strip()]
        reasons = [part for part in paragraphs[1:] if not part.startswith("Check the documentation")]
        detail = " ".join(reasons[0].split())[:160] if reasons else "it references code"
        return (f"refusing to load {path}: it is not a plain weights file and could run code when unpickled "
                f"({detail}); only load checkpoints from sources you trust, re-saved as plain tensors")
    first = (text.split(". ")[0].splitlines() or [""])[0][:160] or type(error).__name__
    return f"{path} is a damaged checkpoint (truncated or corrupt: {first}); save or download it again"


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
