"""Run logging: metrics.jsonl (one line per epoch), TensorBoard scalars, summary.json, console lines."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from distillers.errors import UserError
from distillers.rundir import METRICS, SUMMARY, read_json, temporary_beside, write_json_atomic


def _unwritable(path: Path, error: OSError) -> UserError:
    return UserError(f"cannot write {path}: {error.strerror or error}; free some space (or fix the folder) and "
                     f"rerun with --resume")


class RunLogger:
    """Writes a run's per-epoch records and its final summary; only the main process writes (DDP rank 0)."""

    def __init__(self, run_dir: Path, enabled: bool = True, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._writer = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._writer = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))
            except ImportError:  # tensorboard is a dependency, but a broken install should not stop training
                self._writer = None

    def epoch(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        try:
            with open(self.run_dir / METRICS, "a") as handle:
                handle.write(json.dumps(record, sort_keys=True) + "\n")
                handle.flush()
        except OSError as error:
            raise _unwritable(self.run_dir / METRICS, error) from error
        if self._writer is not None:
            step = record["epoch"] if record.get("stage", "main") == "main" else -record["epoch"]
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "epoch":
                    self._writer.add_scalar(f"{record.get('stage', 'main')}/{key}", value, step)
            self._writer.flush()

    def truncate_after(self, stage: str, epoch: int) -> None:
        """Drop records beyond a resumed checkpoint so a resumed run's metrics read like an uninterrupted one."""
        path = self.run_dir / METRICS
        if not self.enabled or not path.exists():
            return
        stages = ["init", "main"]
        kept = []
        for line in path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:  # blank, or the torn last line of a killed process
                continue
            rank = stages.index(record.get("stage", "main")), record["epoch"]
            if rank <= (stages.index(stage), epoch):
                kept.append(line)
        # Through a temporary file and a rename: a kill now must not lose the records of the earlier epochs.
        fd, tmp = temporary_beside(path)  # the umask's permissions, not mkstemp's 0600
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write("".join(line + "\n" for line in kept))
            os.replace(tmp, path)
        except OSError as error:
            Path(tmp).unlink(missing_ok=True)
            raise _unwritable(path, error) from error

    def summary(self, **values: Any) -> dict[str, Any]:
        """Merge ``values`` into summary.json (atomically) and return the whole summary."""
        path = self.run_dir / SUMMARY
        current = read_json(path) if path.exists() else {}
        current.update(values)
        if self.enabled:
            try:
                write_json_atomic(path, current)
            except OSError as error:
                raise _unwritable(path, error) from error
        return current

    def info(self, message: str) -> None:
        if self.enabled:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
