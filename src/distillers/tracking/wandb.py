"""Weights & Biases: one W&B run per run directory, its files under ``<run_dir>/wandb/``.

Online only when the user has a key (``WANDB_API_KEY`` or ``wandb login``) and has not set ``WANDB_MODE``;
otherwise offline, with the ``wandb sync`` command to upload it printed at the end (mdistiller's always-online W&B
stalls on machines without a network: here the run never waits for one).
"""

from __future__ import annotations

import netrc
import os
import secrets
import string
from typing import Any
from urllib.parse import urlparse

from distillers.tracking.base import TRACKERS, Tracker, TrackerContext, epoch_metrics, one_line, summary_numbers, warn

INIT_TIMEOUT_S = 30.0  # online: how long wandb.init may wait for the server before the run goes offline instead


def _new_id() -> str:
    """A W&B run id (8 lowercase letters and digits, like W&B's own)."""
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


def has_key() -> bool:
    """Whether W&B can log in without asking: an API key in the environment or in ~/.netrc (``wandb login``)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or "api.wandb.ai"
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def choose_mode() -> str:
    """``WANDB_MODE`` when the user set it; else online with a key, offline without one."""
    return os.environ.get("WANDB_MODE") or ("online" if has_key() else "offline")


@TRACKERS.register("wandb")
class WandbTracker(Tracker):
    """Config: the resolved config (nested, as config.json). History: each epoch's record. Summary: the run's final
    numbers and status. Resume: the same run id (online, W&B continues the run; offline, ``wandb sync --id`` joins
    the pieces)."""

    name = "wandb"

    def __init__(self, context: TrackerContext) -> None:
        import wandb

        self.run_id = context.previous.get("id") or _new_id()
        self.run_dir = context.run_dir
        self.mode = choose_mode()
        options = {"project": context.project, "name": context.run_name, "id": self.run_id, "resume": "allow",
                   "dir": str(context.run_dir), "config": context.config, "group": context.tags.get("sweep"),
                   "tags": [f"{key}:{value}" for key, value in context.tags.items()] or None,
                   "reinit": "create_new"}
        try:
            self._run = wandb.init(mode=self.mode, settings=self._settings(wandb), **options)
        except Exception as error:
            if self.mode != "online":
                raise
            warn(f"wandb could not start online ({one_line(error)}); logging offline instead")
            self.mode = "offline"
            self._run = wandb.init(mode=self.mode, settings=self._settings(wandb), **options)

    def _settings(self, wandb: Any) -> Any:
        # console="off": the run's own stdout/stderr stay the run's (no wrapping of the streams); silent offline,
        # where W&B's banner would only repeat what the closing note says.
        return wandb.Settings(console="off", silent=self.mode != "online", init_timeout=INIT_TIMEOUT_S)

    def log_epoch(self, record: dict[str, Any]) -> None:
        epoch, values = epoch_metrics(record)
        self._run.log({**values, "epoch": epoch})

    def log_summary(self, summary: dict[str, Any]) -> None:
        final: dict[str, Any] = dict(summary_numbers(summary))
        final.update({key: value for key, value in summary.items() if isinstance(value, str)})
        self._run.summary.update(final)

    def finish(self, status: str) -> None:
        self._run.finish(exit_code=0 if status == "finished" else 1)

    def state(self) -> dict[str, Any]:
        return {"id": self.run_id}

    def closing_note(self) -> str | None:
        if self.mode != "offline":
            return None
        # A resumed run leaves one offline folder per start; --id uploads them, in order, into one W&B run.
        folders = sorted(str(path) for path in (self.run_dir / "wandb").glob(f"offline-run-*-{self.run_id}"))
        return f"W&B ran offline; upload with: wandb sync --id {self.run_id} {' '.join(folders)}"
