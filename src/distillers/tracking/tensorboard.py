"""TensorBoard scalars in ``<run_dir>/tensorboard`` (the default tracker): ``<stage>/<metric>`` per epoch."""

from __future__ import annotations

from typing import Any

from distillers.tracking.base import TRACKERS, Tracker, TrackerContext, epoch_metrics


@TRACKERS.register("tensorboard", "tb")
class TensorBoardTracker(Tracker):
    """Writes each epoch's numbers as scalars; an initialisation stage plots at negative epochs (before the main
    stage's epoch 1), as it always has."""

    name = "tensorboard"

    def __init__(self, context: TrackerContext) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self._writer = SummaryWriter(log_dir=str(context.run_dir / "tensorboard"))

    def log_epoch(self, record: dict[str, Any]) -> None:
        stage = record.get("stage", "main")
        epoch, _ = epoch_metrics(record)
        step = epoch if stage == "main" else -epoch
        for key, value in record.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "epoch":
                self._writer.add_scalar(f"{stage}/{key}", value, step)
        self._writer.flush()

    def finish(self, status: str) -> None:
        self._writer.close()
