"""Launchers run a sweep's RunConfigs: ``local`` (in this process, or N subprocesses / one per GPU) and ``slurm``
(a job array through submitit, preemption-safe). A new launcher is one module here with its registration."""

from __future__ import annotations

import argparse

from distillers.launchers.registry import LAUNCHERS, Launcher, PlannedRun, run_state
from distillers.registry import import_submodules

import_submodules(__name__, __path__)

__all__ = ["LAUNCHERS", "Launcher", "PlannedRun", "add_launcher_flags", "run_state"]


def add_launcher_flags(parser: argparse.ArgumentParser) -> None:
    """``--launcher`` and every launcher's own flags, on the sweep's parser."""
    parser.add_argument("--launcher", choices=LAUNCHERS.names(), default="local",
                        help="where the runs go: this machine (local) or a SLURM cluster (slurm)")
    for name in LAUNCHERS.names():
        LAUNCHERS.get(name).add_flags(parser)
