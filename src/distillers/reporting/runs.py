"""Reading run directories (``config.json``, ``summary.json``, ``metrics.jsonl``; see ``rundir``) into records.

A run that a crash or a kill left half-written still reads: a cut line of ``metrics.jsonl`` is skipped, a missing
or unreadable summary becomes the run's status, and the accuracies of a finished run fall back to its metrics.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distillers import rundir
from distillers.errors import UserError
from distillers.reporting.names import display_name

DEFAULT_PROTOCOL = "crd"
# Where a logit-standardisation switch may sit in config.json (the shared option of DESIGN.md).
_LS_KEYS = ("logit_stand", "logit_standardization", "logit_standardisation")
_OPTION_DICTS = ("options", "method_options")


@dataclass
class RunRecord:
    """What the report needs from one run directory."""

    path: Path
    task: str
    dataset: str
    protocol: str
    trial: Any
    status: str  # summary.json's status, or "no summary" / "unreadable summary"
    model: str | None = None  # the trained network (the student of a distill run)
    teacher: str | None = None
    method: str | None = None  # row label: display name, "+LS", "+KD" (distill runs)
    weights: tuple[float, float, float] = (1.0, 0.0, 0.0)  # gamma, alpha, beta
    epochs: int | None = None
    epochs_done: int | None = None
    last_acc: float | None = None
    best_acc: float | None = None
    config: dict = field(default_factory=dict, repr=False)
    summary: dict = field(default_factory=dict, repr=False)

    @property
    def finished(self) -> bool:
        """Counted in a table: status finished, every planned epoch done, and an accuracy on record."""
        complete = self.epochs is None or self.epochs_done is None or self.epochs_done >= self.epochs
        return self.status == "finished" and complete and self.last_acc is not None

    def accuracy(self, metric: str) -> float | None:
        return self.last_acc if metric == "last" else self.best_acc

    def progress(self) -> str:
        """One line for the list of unfinished runs."""
        done = "?" if self.epochs_done is None else self.epochs_done
        planned = "?" if self.epochs is None else self.epochs
        return f"{self.status}, {done}/{planned} epochs"


def read_metrics_tolerant(run_dir: Path) -> list[dict[str, Any]]:
    """Per-epoch records, skipping a line that does not parse (a run killed mid-write leaves half a line)."""
    path = Path(run_dir) / rundir.METRICS
    if not path.exists():
        return []
    records = []
    with open(path) as handle:
        for line in handle:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return [r for r in records if isinstance(r, dict)]


def as_number(value: Any) -> float | None:
    """A finite float, or None for anything else (a missing key, text, NaN)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def as_integer(value: Any) -> int | None:
    number = as_number(value)
    return None if number is None else int(number)


def _logit_stand(config: dict) -> bool:
    places = [config] + [config[k] for k in _OPTION_DICTS if isinstance(config.get(k), dict)]
    return any(bool(place.get(key)) for place in places for key in _LS_KEYS)


def _read_config(run_dir: Path) -> dict:
    try:
        config = rundir.read_json(run_dir / rundir.CONFIG)
    except FileNotFoundError:
        raise UserError(f"{run_dir} is not a run directory (no {rundir.CONFIG}); pass run directories") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{run_dir / rundir.CONFIG} is not valid JSON ({err}); fix or remove that run") from None
    if not isinstance(config, dict):
        raise UserError(f"{run_dir / rundir.CONFIG} is not a JSON object; fix or remove that run")
    return config


def _read_summary(run_dir: Path) -> tuple[dict, str]:
    """``(summary, status)``; the status says so when there is no summary or it does not parse."""
    if not (run_dir / rundir.SUMMARY).exists():
        return {}, "no summary"
    try:
        summary = rundir.read_json(run_dir / rundir.SUMMARY)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}, "unreadable summary"
    if not isinstance(summary, dict):
        return {}, "unreadable summary"
    return summary, str(summary.get("status", "no status"))


def read_run(run_dir: Path) -> RunRecord:
    """One run directory as a record; raises UserError when ``config.json`` is missing or not JSON."""
    run_dir = Path(run_dir)
    config = _read_config(run_dir)
    summary, status = _read_summary(run_dir)
    task = str(config.get("task", ""))
    raw_weights = config.get("weights") if isinstance(config.get("weights"), dict) else {}
    gamma, alpha, beta = (as_number(raw_weights.get(k)) for k in ("gamma", "alpha", "beta"))
    weights = (1.0 if gamma is None else gamma, 0.0 if alpha is None else alpha, 0.0 if beta is None else beta)
    record = RunRecord(
        path=run_dir, task=task, dataset=str(config.get("dataset", "cifar100")),
        protocol=str(config.get("protocol") or DEFAULT_PROTOCOL), trial=config.get("trial"), status=status,
        weights=weights, config=config, summary=summary,
        epochs=as_integer(summary.get("epochs", config.get("epochs"))),
        epochs_done=as_integer(summary.get("epochs_done")),
        last_acc=as_number(summary.get("last_acc")), best_acc=as_number(summary.get("best_acc")),
    )
    if task == "distill":
        record.model = config.get("student")
        record.teacher = config.get("teacher")
        if config.get("method"):
            record.method = display_name(str(config["method"]), weights[1], _logit_stand(config))
    else:
        record.model = config.get("model")
    if record.status == "finished" and (record.last_acc is None or record.best_acc is None):
        _accuracy_from_metrics(record)
    elif record.status != "finished" and record.epochs_done is None:
        record.epochs_done = len(read_metrics_tolerant(run_dir))  # progress of a run without a summary
    return record


def _accuracy_from_metrics(record: RunRecord) -> None:
    """Fill last/best accuracy from metrics.jsonl when a summary lacks them."""
    accs = [as_number(m.get("test_acc")) for m in read_metrics_tolerant(record.path)]
    accs = [a for a in accs if a is not None]
    if accs:
        record.last_acc = accs[-1] if record.last_acc is None else record.last_acc
        record.best_acc = max(accs) if record.best_acc is None else record.best_acc
        record.epochs_done = len(accs) if record.epochs_done is None else record.epochs_done


def collect(run_dirs: Iterable[str | Path]) -> list[RunRecord]:
    """Records of the given run directories; a folder that is not a run is searched for runs below it."""
    found: dict[Path, None] = {}
    for given in run_dirs:
        path = Path(given)
        if path.exists() and not path.is_dir():
            raise UserError(f"{str(given)!r} is a file, not a run directory; pass run directories or their parent")
        if not path.is_dir():
            raise UserError(f"run directory {str(given)!r} does not exist; pass run directories or their parent")
        if (path / rundir.CONFIG).is_file():
            found[path.resolve()] = None
            continue
        below = sorted(config.parent for config in path.rglob(rundir.CONFIG))
        if not below:
            raise UserError(f"no run directories (with {rundir.CONFIG}) under {str(given)!r}")
        found.update((run.resolve(), None) for run in below)
    return [read_run(path) for path in sorted(found)]
