"""Tasks describe jobs (what to train, in which stages, what to checkpoint and record); ``engine.run`` runs them.

A task is one module with a builder registered in ``TASKS``; ``run_task`` is the one entry point the CLI, the seed's
scripts, the sweep and the launchers call.
"""

from __future__ import annotations

from typing import Any

from distillers.config import RunConfig
from distillers.engine.run import run
from distillers.plugins import load_plugins
from distillers.registry import import_submodules
from distillers.tasks.registry import TASKS

import_submodules(__name__, __path__)


def run_task(cfg: RunConfig) -> dict[str, Any]:
    """Run ``cfg.task`` (teacher, distill or transfer) in this process or in each process torchrun started, and
    return the run's summary. The user's plugins load first (idempotent), so a method from ``DISTILLERS_PLUGINS``
    is known in every process that runs a task: launcher workers and SLURM jobs too, not only the CLI."""
    load_plugins()
    return run(cfg, TASKS.get(cfg.task))


__all__ = ["TASKS", "run_task"]
