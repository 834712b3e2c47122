"""The fan-out: trackers never break or slow a run; names, warnings, trackers.json, what each tracker receives."""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest

from distillers.config import RunConfig
from distillers.engine.logging import RunLogger
from distillers.errors import UserError
from distillers.tracking import TRACKERS, TRACKERS_FILE, Tracker, TrackerContext, open_trackers, parse_names
from distillers.tracking.base import epoch_metrics, flatten
from distillers.tracking.wandb import choose_mode

RECORDS = [{"stage": "init", "epoch": 1, "train_loss": 2.5},
           {"stage": "main", "epoch": 1, "test_acc": 10.0, "lr": 0.05},
           {"stage": "main", "epoch": 2, "test_acc": 12.5, "lr": 0.05}]


class Recorder(Tracker):
    """A tracker that keeps what it was given (and can be told to fail, or to wait)."""

    name = "recorder"
    opened: ClassVar[list[Recorder]] = []

    def __init__(self, context: TrackerContext) -> None:
        self.context = context
        self.records: list[dict[str, Any]] = []
        self.summary: dict[str, Any] | None = None
        self.status: str | None = None
        self.fail_at: int | None = None
        self.release = threading.Event()
        self.release.set()
        Recorder.opened.append(self)

    def log_epoch(self, record: dict[str, Any]) -> None:
        self.release.wait(30)
        if self.fail_at is not None and len(self.records) + 1 == self.fail_at:
            raise RuntimeError("tracker server said no\nwith a second line")
        self.records.append(record)

    def log_summary(self, summary: dict[str, Any]) -> None:
        self.summary = summary

    def finish(self, status: str) -> None:
        self.status = status

    def state(self) -> dict[str, Any]:
        return {"run": f"run-of-{self.context.run_name}"}

    def closing_note(self) -> str | None:
        return "look at the recorder"


@pytest.fixture
def recorder(monkeypatch):
    """``recorder`` as a registered tracker for the length of a test."""
    monkeypatch.setitem(TRACKERS._items, "recorder", Recorder)
    Recorder.opened = []
    return Recorder


def context(run_dir: Path, resumed: bool = False) -> TrackerContext:
    return TrackerContext(run_dir, "run-a", "proj", {"epochs": 2}, resumed)


def warnings_in(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("distillers: warning:")]


def test_names_are_checked_and_canonical():
    assert parse_names("tensorboard,mlflow") == ("tensorboard", "mlflow")
    assert parse_names("tb, wandb,tb") == ("tensorboard", "wandb")  # alias, spaces, repeats
    assert parse_names("none") == ()
    with pytest.raises(UserError, match=r"unknown tracker 'mlfow' in --log; choose from: mlflow, tensorboard, wandb"):
        parse_names("mlflow,mlfow")
    with pytest.raises(UserError, match="unknown tracker 'neptune'"):
        RunConfig(log=("neptune",)).validate()
    assert RunConfig.from_dict(RunConfig(log=("mlflow",)).to_dict() | {"log": ["mlflow"]}).log == ("mlflow",)


def test_a_failing_tracker_is_dropped_with_one_warning_and_the_others_get_everything(recorder, tmp_path, capsys):
    trackers = open_trackers(["recorder", "recorder"], context(tmp_path))
    failing, healthy = Recorder.opened
    failing.fail_at = 2
    for record in RECORDS:
        trackers.epoch(record)
    notes = trackers.close({"status": "finished", "best_acc": 12.5})
    warned = warnings_in(capsys.readouterr().err)
    assert len(warned) == 1
    assert "recorder tracker failed while logging an epoch (RuntimeError: tracker server said no)" in warned[0]
    assert "the run goes on without it" in warned[0]
    assert failing.records == RECORDS[:1] and failing.status == "failed" and failing.summary is None
    assert healthy.records == RECORDS and healthy.summary == {"status": "finished", "best_acc": 12.5}
    assert healthy.status == "finished"
    assert notes == ["look at the recorder"]  # only from the tracker that is still there


def test_a_slow_tracker_does_not_hold_up_the_loop(recorder, tmp_path):
    trackers = open_trackers(["recorder"], context(tmp_path))
    (slow,) = Recorder.opened
    slow.release.clear()  # the tracker's server hangs
    for record in RECORDS:
        trackers.epoch(record)  # returns although the tracker cannot take the record yet
    assert slow.records == []
    slow.release.set()
    trackers.close({"status": "interrupted"})
    assert slow.records == RECORDS and slow.status == "interrupted"


def test_a_tracker_that_never_returns_is_left_behind_at_the_end(recorder, tmp_path, capsys):
    trackers = open_trackers(["recorder"], context(tmp_path))
    (stuck,) = Recorder.opened
    stuck.release.clear()
    trackers.epoch(RECORDS[0])
    assert trackers.close({"status": "finished"}, timeout_s=0.2) == []
    assert "still busy after 0s" in warnings_in(capsys.readouterr().err)[0]
    stuck.release.set()


def test_a_missing_package_is_one_warning_naming_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    trackers = open_trackers(["wandb"], context(tmp_path))
    assert trackers.names == []
    warned = warnings_in(capsys.readouterr().err)
    assert warned == [("distillers: warning: --log wandb: cannot import wandb (pip install 'distillers[wandb]'); "
                       "the run goes on without it")]
    assert not (tmp_path / TRACKERS_FILE).exists()


def test_run_ids_are_kept_for_resume(recorder, tmp_path):
    open_trackers(["recorder"], context(tmp_path)).close({"status": "interrupted"})
    assert json.loads((tmp_path / TRACKERS_FILE).read_text()) == {"recorder": {"run": "run-of-run-a"}}
    (tmp_path / TRACKERS_FILE).write_text(json.dumps({"recorder": {"run": "r1"}, "other": {"id": "x"}}))
    open_trackers(["recorder"], context(tmp_path, resumed=True))
    assert Recorder.opened[-1].context.previous == {"run": "r1"}
    open_trackers(["recorder"], context(tmp_path, resumed=False))  # a new run (e.g. --overwrite) starts afresh
    assert Recorder.opened[-1].context.previous == {}
    kept = json.loads((tmp_path / TRACKERS_FILE).read_text())
    assert kept["recorder"] == {"run": "run-of-run-a"}


def test_for_run_gives_trackers_the_resolved_config_project_and_sweep(recorder, tmp_path, capsys):
    cfg = RunConfig(task="distill", log=("recorder",), log_project="kd-grid", sweep="grid-2026", epochs=3)
    logger = RunLogger.for_run(cfg, tmp_path, "run-b", {"world_size": 1, "device_name": "cpu"}, resumed=False)
    (opened,) = Recorder.opened
    assert opened.context.project == "kd-grid" and opened.context.tags == {"sweep": "grid-2026"}
    config = opened.context.config
    assert config["epochs"] == 3 and config["world_size"] == 1 and config["name"] == "run-b"
    assert config["method_options"]["kd_T"] == 4.0 and set(config["versions"]) == {"distillers", "torch", "python"}
    assert not (tmp_path / "tensorboard").exists()  # --log without tensorboard: no event files
    for record in RECORDS:
        logger.epoch(record)
    logger.summary(status="finished", best_acc=12.5, started=1.0)
    logger.close()
    assert [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()] == RECORDS
    assert opened.records == RECORDS and opened.status == "finished" and opened.summary["best_acc"] == 12.5
    assert capsys.readouterr().err.splitlines()[-1] == "look at the recorder"
    assert RunLogger.for_run(cfg, tmp_path, "run-b", {}, resumed=False, enabled=False).trackers.names == []
    assert len(Recorder.opened) == 1  # not on the other ranks


def test_metric_names_and_params():
    assert epoch_metrics(RECORDS[0]) == (1, {"init/train_loss": 2.5})
    assert epoch_metrics(RECORDS[1]) == (1, {"test_acc": 10.0, "lr": 0.05})
    flat = flatten({"lr_decay_epochs": (150, 180), "method_options": {"kd_T": 4.0, "extra": {"beta": 8}},
                    "teacher": None, "weird key!": 1})
    assert flat == {"lr_decay_epochs": "150,180", "method_options.kd_T": "4.0", "method_options.extra.beta": "8",
                    "teacher": "None", "weird key_": "1"}


def test_wandb_goes_offline_without_a_key(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    for name in ("WANDB_API_KEY", "WANDB_MODE", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    assert choose_mode() == "offline"
    (tmp_path / ".netrc").write_text("machine api.wandb.ai login user password k\n")
    (tmp_path / ".netrc").chmod(0o600)
    assert choose_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")  # the user's choice wins
    assert choose_mode() == "disabled"
    (tmp_path / ".netrc").unlink()
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    assert choose_mode() == "online"
