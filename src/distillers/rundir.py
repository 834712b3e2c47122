"""The run directory: the unit users look at (DESIGN.md "Run directory").

``<out>/<run-name>/`` holds ``config.json`` (everything needed to rerun), ``metrics.jsonl`` (one JSON object per
epoch), ``summary.json`` (final numbers and status), ``last.pt`` / ``best.pt`` / ``ckpt_epoch_N.pt`` and
``tensorboard/``. Reports and sweeps read only these files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from distillers.errors import UserError

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
LAST = "last.pt"
BEST = "best.pt"
TMP_SUFFIX = ".tmp"  # ``.<name>.<random>.tmp``: a write in progress, or one a killed process left behind


def _safe(name: str) -> str:
    """A model name as a folder-name part: ``timm:vit_tiny_patch16_224,img_size=32`` has characters that other
    systems or shells treat specially; zoo names pass unchanged."""
    return re.sub(r"[^A-Za-z0-9._+-]", "-", name)


def _number(value: float) -> str:
    """Compact, stable text for a weight in a run name (0.9 -> '0.9', 1.0 -> '1')."""
    return f"{value:g}"


def distill_run_name(student: str, teacher: str, dataset: str, method: str, gamma: float, alpha: float,
                     beta: float, trial: int | str) -> str:
    """The seed's run name (``S:{s}_T:{t}_{dataset}_{method}_r:{r}_a:{a}_b:{b}_{trial}``) without colons."""
    return (f"S-{_safe(student)}_T-{_safe(teacher)}_{dataset}_{method}_r-{_number(gamma)}_a-{_number(alpha)}"
            f"_b-{_number(beta)}_trial-{trial}")


def teacher_run_name(model: str, dataset: str, trial: int | str) -> str:
    """The seed's teacher folder name ``{model}_{dataset}_lr_..._trial_{trial}``, simplified."""
    return f"{_safe(model)}_{dataset}_vanilla_trial-{trial}"


def transfer_run_name(model: str, source: str, dataset: str, trial: int | str) -> str:
    return f"transfer_{_safe(model)}_{source}_to_{dataset}_trial-{trial}"


def current_umask() -> int:
    """The process umask, read without changing it where Linux exposes it (changing it races with other threads)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temporary_beside(path: Path, suffix: str = "") -> tuple[int, str]:
    """A temporary file next to ``path`` (for write + rename) with the mode a plain ``open()`` would give.

    ``tempfile.mkstemp`` creates files 0600 whatever the umask; renamed into place, a checkpoint or summary would
    then be unreadable for the lab mates the user's umask lets read everything else.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    except BaseException:
        os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
    return fd, tmp


def write_bytes_atomic(path: Path, data: bytes | memoryview, suffix: str = "") -> None:
    """Write through a temporary file beside ``path`` and a rename, so readers never see half a file (a failure
    leaves the previous file intact and no temporary behind)."""
    path = Path(path)
    fd, tmp = temporary_beside(path, suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON atomically (``write_bytes_atomic``)."""
    write_bytes_atomic(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    with open(path) as handle:
        return json.load(handle)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The per-epoch records of a run (empty when it has none yet)."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files of checkpoint writes that a killed process never finished (and return them)."""
    stale = [path for path in Path(folder).glob(f".*{TMP_SUFFIX}") if path.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def prepare_run_dir(out: str | Path, name: str, resume: bool, overwrite: bool) -> Path:
    """Create (or reopen, with --resume) the run directory; never clobber another run's files silently."""
    run_dir = Path(out) / name
    occupied = run_dir.exists() and any(run_dir.iterdir())
    if resume:
        if not (run_dir / LAST).exists():
            again = "start it again with --overwrite" if occupied else "drop --resume to start a new run"
            raise UserError(f"nothing to resume: {run_dir / LAST} does not exist (the run stopped before its first "
                            f"checkpoint); {again}")
        remove_stale_temporaries(run_dir)  # half-written checkpoints of a killed process
        return run_dir
    if occupied:
        if not overwrite:
            raise UserError(f"run directory {run_dir} already holds a run; pass --resume to continue it, "
                            f"--overwrite to replace it, or --trial/--name to start another")
        shutil.rmtree(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise UserError(f"cannot write the run directory {run_dir}: {error.strerror}; choose another --out") from error
    return run_dir
