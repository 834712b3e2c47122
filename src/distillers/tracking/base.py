"""What every experiment tracker offers the run, and what the run tells it when it opens.

A tracker mirrors the run directory (DESIGN.md: the run directory is the source of truth): it receives the
resolved config once, each epoch's record as the engine writes it to metrics.jsonl, and the summary at the end.
It never sees a training step, so it cannot slow the loop.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillers.registry import Registry

# name -> the tracker class; its constructor opens (or, on resume, reopens) the tracker's run.
TRACKERS: Registry[Callable[[TrackerContext], Tracker]] = Registry("tracker")

# Extras that install a tracker's package (pyproject.toml), for the "not installed" warning.
EXTRAS = {"mlflow": "mlflow", "wandb": "wandb"}

MAIN_STAGE = "main"


@dataclass
class TrackerContext:
    """What a tracker needs to open its run."""

    run_dir: Path
    run_name: str
    project: str  # MLflow experiment / W&B project
    config: dict[str, Any]  # the resolved config (as config.json records it) plus versions
    resumed: bool
    previous: dict[str, Any] = field(default_factory=dict)  # what this tracker stored in trackers.json before
    tags: dict[str, str] = field(default_factory=dict)  # e.g. {"sweep": NAME}
    mlflow_uri: str | None = None


class Tracker:
    """One experiment tracker's run. Subclasses open it in ``__init__(context)``; any exception is caught by the
    fan-out (``tracking.fanout.Trackers``), which then drops the tracker with one warning line."""

    name = "tracker"

    def log_epoch(self, record: dict[str, Any]) -> None:
        """One record of metrics.jsonl (stage, epoch, lr, losses, accuracies)."""

    def log_summary(self, summary: dict[str, Any]) -> None:
        """summary.json as the run ends (status, last/best accuracy, wall time)."""

    def finish(self, status: str) -> None:
        """End the tracker's run: ``status`` is summary.json's (finished | interrupted | failed)."""

    def state(self) -> dict[str, Any]:
        """What trackers.json keeps so that a resumed run continues this tracker's run."""
        return {}

    def closing_note(self) -> str | None:
        """A line for the user after the run (e.g. how to upload an offline run)."""
        return None


def epoch_metrics(record: dict[str, Any]) -> tuple[int, dict[str, float]]:
    """The epoch and the numeric values of a record, with the engine's names; an initialisation stage's values are
    prefixed with the stage (``init/test_acc``) so they never mix with the main stage's curve."""
    stage = record.get("stage", MAIN_STAGE)
    prefix = "" if stage == MAIN_STAGE else f"{stage}/"
    values = {f"{prefix}{key}": float(value) for key, value in record.items()
              if key not in ("epoch", "stage") and _is_number(value)}
    return int(record.get("epoch", 0)), values


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def summary_numbers(summary: dict[str, Any]) -> dict[str, int | float]:
    """The final numbers of a summary (accuracies, epochs, wall time); ``started`` is a clock reading, not a result."""
    return {key: value for key, value in summary.items() if key != "started" and _is_number(value)}


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as flat ``a.b`` keys with text values (MLflow params are strings)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = re.sub(r"[^\w\-. /]", "_", f"{prefix}{key}")
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple)):
            flat[name] = ",".join(str(item) for item in value)
        else:
            flat[name] = str(value)
    return flat


def one_line(error: BaseException, limit: int = 200) -> str:
    """An exception as a short single line (tracker errors can span pages)."""
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    first = first if len(first) <= limit else first[:limit] + "..."
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def warn(message: str) -> None:
    """One warning line on stderr, written at once (several processes or threads may share stderr)."""
    sys.stderr.write(f"distillers: warning: {message}\n")
    sys.stderr.flush()
