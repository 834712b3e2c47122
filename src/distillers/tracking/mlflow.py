"""MLflow: one MLflow run per run directory, in the experiment ``--log-project`` names.

The default store is ``sqlite:///<out>/mlflow.db`` (a file beside the run directories: works offline, one store for
a whole sweep; look at it with ``mlflow ui --backend-store-uri sqlite:///<out>/mlflow.db``). Only MLflow's client
API is used (no global "active run"), so a library user's own MLflow runs are left alone.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distillers.tracking.base import TRACKERS, Tracker, TrackerContext, epoch_metrics, flatten, summary_numbers

# MLflow's limits: 100 params per log_batch call; param values of older servers hold 500 characters.
PARAMS_PER_BATCH = 100
PARAM_CHARS = 500
END_STATUS = {"finished": "FINISHED", "interrupted": "KILLED"}  # anything else: FAILED


def default_uri(out: Path) -> str:
    """The SQLite store beside the run directories (``<out>/mlflow.db``)."""
    return f"sqlite:///{(Path(out) / 'mlflow.db').resolve()}"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """MLflow and alembic announce every database migration at INFO level: keep the run's stderr to its own lines."""
    loggers = [logging.getLogger(name) for name in ("mlflow", "alembic")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


@TRACKERS.register("mlflow")
class MlflowTracker(Tracker):
    """Params: the flattened config (``method_options.kd_T`` ...). Metrics: each epoch's values at step = epoch, and
    the summary's final numbers. Tags: the run directory and the sweep. A resumed run reopens its MLflow run."""

    name = "mlflow"

    def __init__(self, context: TrackerContext) -> None:
        from mlflow.tracking import MlflowClient

        previous = context.previous
        self.uri = context.mlflow_uri or previous.get("tracking_uri") or default_uri(context.run_dir.parent)
        with _quiet():
            self._client = MlflowClient(tracking_uri=self.uri)
            self.run_id = self._reopen(previous) if context.resumed else None
            if self.run_id is None:
                self.run_id = self._create(context)

    def _reopen(self, previous: dict[str, Any]) -> str | None:
        """The stored run, back to RUNNING; None when there is none in this store (then a new run starts)."""
        run_id = previous.get("run_id")
        if not run_id or previous.get("tracking_uri") != self.uri:
            return None
        self._client.get_run(run_id)  # raises when the store lost it
        self._client.update_run(run_id, status="RUNNING")
        return run_id

    def _create(self, context: TrackerContext) -> str:
        from mlflow.entities import Param

        experiment_id = self._experiment(context.project, context.run_dir.parent)
        tags = {"run_dir": str(context.run_dir.resolve()), **context.tags}
        run_id = self._client.create_run(experiment_id, run_name=context.run_name, tags=tags).info.run_id
        params = [Param(key, value[:PARAM_CHARS]) for key, value in sorted(flatten(context.config).items())]
        for start in range(0, len(params), PARAMS_PER_BATCH):
            self._client.log_batch(run_id, params=params[start:start + PARAMS_PER_BATCH])
        return run_id

    def _experiment(self, name: str, out: Path) -> str:
        """The experiment's id, created on first use (a concurrent run of the same sweep may create it first)."""
        from mlflow.exceptions import MlflowException

        found = self._client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        # A local store keeps artifacts beside it, not in the current directory (MLflow's default).
        local = self.uri.startswith(("sqlite:", "file:")) or "://" not in self.uri
        location = (Path(out) / "mlartifacts").resolve().as_uri() if local else None
        try:
            return self._client.create_experiment(name, artifact_location=location)
        except MlflowException:
            found = self._client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def log_epoch(self, record: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        epoch, values = epoch_metrics(record)
        now = int(time.time() * 1000)
        self._client.log_batch(self.run_id, metrics=[Metric(key, value, now, epoch) for key, value in values.items()])

    def log_summary(self, summary: dict[str, Any]) -> None:
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        metrics = [Metric(key, float(value), now, 0) for key, value in summary_numbers(summary).items()]
        tags = [RunTag(f"summary.{key}", str(value)[:PARAM_CHARS]) for key, value in summary.items()
                if isinstance(value, str)]
        self._client.log_batch(self.run_id, metrics=metrics, tags=tags)

    def finish(self, status: str) -> None:
        self._client.set_terminated(self.run_id, END_STATUS.get(status, "FAILED"))

    def state(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "tracking_uri": self.uri}
