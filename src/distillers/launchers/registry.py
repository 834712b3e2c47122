"""The launcher registry and what every launcher is handed: the planned runs of a sweep, each a RunConfig.

A launcher (one module each: ``local``, ``slurm``) declares its flags, checks them, and runs or submits the runs it is
given. It never parses a command line: the sweep hands it RunConfigs, and each run goes to ``distillers.tasks``.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

from distillers.config import RunConfig
from distillers.errors import UserError
from distillers.registry import Registry
from distillers.rundir import LAST, SUMMARY, read_json


@dataclass(frozen=True)
class PlannedRun:
    """One run of a sweep: its directory name, its config, and (for printing only) the equivalent command line."""

    name: str
    cfg: RunConfig
    argv: tuple[str, ...]  # arguments of the equivalent `distillers` command

    @property
    def command(self) -> str:
        return "distillers " + shlex.join(self.argv)

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.out) / self.name


def run_state(run_dir: Path) -> str:
    """What a run directory says: ``finished``, ``running``, ``failed``, ``interrupted`` or ``not started``."""
    summary_path = Path(run_dir) / SUMMARY
    if not summary_path.exists():
        return "interrupted" if (Path(run_dir) / LAST).exists() else "not started"
    try:
        status = read_json(summary_path).get("status")
    except (OSError, ValueError):
        return "running"  # being rewritten: summary.json is replaced atomically, so this is a reader race
    return status if status in ("finished", "running", "failed", "interrupted") else "running"


def continued(cfg: RunConfig, run_dir: Path) -> RunConfig:
    """``cfg`` set to go on from what its run directory holds: resume from last.pt when the run left one (interrupted,
    preempted, requeued), replace a directory whose run stopped before its first checkpoint (nothing to keep)."""
    if (run_dir / LAST).exists():
        return replace(cfg, resume=True, overwrite=False)
    occupied = run_dir.is_dir() and any(run_dir.iterdir())
    return replace(cfg, resume=False, overwrite=occupied)


class Launcher:
    """Base of the launchers: ``flags`` are (dest, flag) pairs that belong to this launcher alone."""

    name: ClassVar[str] = ""
    flags: ClassVar[tuple[tuple[str, str], ...]] = ()

    @staticmethod
    def add_flags(parser: argparse.ArgumentParser) -> None:
        """Add this launcher's flags (a group of the sweep's parser)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.errors: dict[str, str] = {}  # run name -> why it failed (kept in OUT/.sweep.json for --status)

    def prepare(self, out: Path) -> None:
        """Check everything the launch needs (a scheduler, valid options) before anything is written."""

    def launch(self, runs: list[PlannedRun], out: Path) -> dict[str, str]:
        """Run or submit ``runs``; returns each run's job id (empty for runs without one)."""
        raise NotImplementedError

    def wait(self, out: Path) -> None:
        """Return once every launched run has ended (launchers that submit and return at once)."""

    def waited(self) -> bool:
        """Whether ``launch`` returned only once every run had ended (then the sweep prints the report)."""
        return True

    def failed(self) -> int:
        """Runs that did not finish, once the launcher waited for them (0 when it did not wait)."""
        return len(self.errors)

    @staticmethod
    def last_error(out: Path, job_id: str) -> str:
        """The last error line of a job's log ('' when the launcher keeps none)."""
        return ""

    @staticmethod
    def scheduler_states(job_ids: list[str]) -> dict[str, str] | None:
        """The scheduler's state of each job id it still knows (None when no scheduler answers)."""
        return None


LAUNCHERS: Registry[type[Launcher]] = Registry("launcher")


def check_foreign_flags(chosen: str, args: argparse.Namespace) -> None:
    """A flag of another launcher is an error (it would be silently ignored otherwise); unset flags are falsy."""
    for name in LAUNCHERS.names():
        if name == chosen:
            continue
        for dest, flag in LAUNCHERS.get(name).flags:
            if getattr(args, dest, None):
                raise UserError(f"{flag} applies to --launcher {name}, not --launcher {chosen}")
