"""Run logging: metrics.jsonl (one line per epoch), summary.json, console lines, and the trackers ``--log`` names
(TensorBoard by default; MLflow, W&B), which mirror the records and the summary (``distillers.tracking``)."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distillers.errors import UserError
from distillers.rundir import METRICS, SUMMARY, read_json, temporary_beside, write_json_atomic
from distillers.tracking import TrackerContext, Trackers, open_trackers, parse_names

if TYPE_CHECKING:
    from distillers.config import RunConfig

DEFAULT_PROJECT = "distillers"  # MLflow experiment / W&B project when --log-project is not given


def _unwritable(path: Path, error: OSError) -> UserError:
    return UserError(f"cannot write {path}: {error.strerror or error}; free some space (or fix the folder) and "
                     f"rerun with --resume")


class RunLogger:
    """Writes a run's per-epoch records and its final summary; only the main process writes (DDP rank 0).

    ``trackers`` mirror the records (see ``for_run``); without them, TensorBoard alone (``tensorboard=True``).
    """

    def __init__(self, run_dir: Path, enabled: bool = True, tensorboard: bool = True,
                 trackers: Trackers | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        if trackers is None:
            names = ("tensorboard",) if enabled and tensorboard else ()
            trackers = open_trackers(names, TrackerContext(self.run_dir, self.run_dir.name, DEFAULT_PROJECT, {},
                                                           resumed=False))
        self.trackers = trackers if enabled else Trackers()

    @classmethod
    def for_run(cls, cfg: RunConfig, run_dir: Path, name: str, facts: dict[str, Any], resumed: bool,
                enabled: bool = True) -> RunLogger:
        """The logger of a run with the trackers ``cfg.log`` names, opened on the main process only (``enabled``).

        ``facts`` are what config.json records besides the RunConfig (task facts, world size, device); a resumed
        run (``resumed``) continues the tracker runs whose ids ``<run_dir>/trackers.json`` kept.
        """
        if not enabled:
            return cls(run_dir, enabled=False)
        import torch

        from distillers import __version__

        config = {**cfg.to_dict(), **facts, "name": name,
                  "versions": {"distillers": __version__, "torch": torch.__version__,
                               "python": platform.python_version()}}
        context = TrackerContext(Path(run_dir), name, cfg.log_project or DEFAULT_PROJECT, config, resumed,
                                 tags={"sweep": cfg.sweep} if cfg.sweep else {}, mlflow_uri=cfg.mlflow_uri)
        return cls(run_dir, trackers=open_trackers(parse_names(cfg.log), context))

    def epoch(self, record: dict[str, Any]) -> None:
        """Append the record to metrics.jsonl, then hand it to the trackers (which never block the loop)."""
        if not self.enabled:
            return
        try:
            with open(self.run_dir / METRICS, "a") as handle:
                handle.write(json.dumps(record, sort_keys=True) + "\n")
                handle.flush()
        except OSError as error:
            raise _unwritable(self.run_dir / METRICS, error) from error
        self.trackers.epoch(record)

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
        """End the trackers' runs with the summary as summary.json has it, and print their closing notes."""
        path = self.run_dir / SUMMARY
        try:
            summary = read_json(path) if self.enabled and path.exists() else {}
        except (OSError, ValueError):  # a summary the disk could not take: the trackers end their runs as failed
            summary = {}
        for note in self.trackers.close(summary):
            self.info(note)
