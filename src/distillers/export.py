"""Export weights to safetensors: a format that holds tensors only, so sharing it can never run code."""

from __future__ import annotations

import json
from pathlib import Path

from distillers.engine.checkpoint import load_checkpoint
from distillers.errors import UserError
from distillers.rundir import write_bytes_atomic


def export_safetensors(ckpt: str | Path, out: str | Path | None = None, overwrite: bool = False) -> Path:
    """Write the checkpoint's ``model`` state dict (plus arch/accuracy metadata) as ``.safetensors``.

    The file appears whole or not at all (temporary file + rename, with the umask's permissions); an existing
    file is replaced only with ``overwrite``, and never the checkpoint itself.
    """
    from safetensors.torch import save

    checkpoint = load_checkpoint(ckpt)
    target = _target(Path(ckpt), out, overwrite)
    state = checkpoint["model"]
    odd = [name for name, value in state.items() if not hasattr(value, "contiguous")]
    if odd or not state:
        raise UserError(f"{ckpt}: its 'model' entry holds no tensors to export"
                        + (f" ({', '.join(map(str, odd[:3]))} are not tensors)" if odd else ""))
    metadata = {key: json.dumps(checkpoint[key]) for key in ("arch", "epoch", "accuracy", "num_classes", "dataset")
                if isinstance(checkpoint.get(key), (str, int, float))}
    try:
        blob = save({str(name): tensor.contiguous() for name, tensor in state.items()}, metadata=metadata)
    except Exception as error:  # e.g. tensors sharing memory (tied weights): safetensors refuses them
        raise UserError(f"cannot export {ckpt} as safetensors: {' '.join(str(error).split())[:200]}") from error
    _write(target, blob)
    return target


def _target(ckpt: Path, out: str | Path | None, overwrite: bool) -> Path:
    """Where the export goes: ``out`` (a file, or a folder to put ``<name>.safetensors`` in) or beside ``ckpt``."""
    target = Path(out) if out else ckpt.with_suffix(".safetensors")
    if target.is_dir():
        target = target / ckpt.with_suffix(".safetensors").name
    if target.exists() and target.resolve() == ckpt.resolve():
        raise UserError(f"--out {target} is the checkpoint itself; choose another file")
    if target.exists() and not overwrite:
        raise UserError(f"{target} already exists; pass --overwrite to replace it, or choose another --out")
    if not target.parent.is_dir():
        raise UserError(f"cannot write {target}: folder {target.parent} does not exist; create it or choose "
                        f"another --out")
    return target


def _write(target: Path, blob: bytes) -> None:
    try:
        write_bytes_atomic(target, blob)
    except OSError as error:
        raise UserError(f"cannot write {target}: {error.strerror or error}; choose another --out") from error
