"""``--log mlflow`` / ``--log wandb`` end to end, offline: what the trackers' own readers find after a real run.

MLflow is read back through ``MlflowClient`` from the SQLite store beside the run directories; W&B's offline run
files are decoded with W&B's own record schema (``wandb_log``). Runs are tiny (2 steps per epoch) and in-process.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import pytest

from cli.conftest import FAST, only_child, read_run, run_cli
from distillers.engine.logging import RunLogger
from distillers.tracking import TRACKERS_FILE
from distillers.tracking.mlflow import MlflowTracker

from .wandb_log import read_offline_run

pytestmark = pytest.mark.slow


def teacher_argv(cifar, out: Path, *extra: str) -> list[str]:
    return ["train-teacher", "--model", "resnet8", "--epochs", "2", "--max-steps-per-epoch", "2", "--batch-size", "16",
            "--data-dir", cifar.root, "--out", out, *FAST, *extra]


def stop_after_first_epoch(monkeypatch) -> None:
    """SIGTERM to this process right after epoch 1 is logged: the engine stops with a checkpoint, as under a
    scheduler's preemption (the handler is installed for the length of the loop)."""
    log_epoch = RunLogger.epoch

    def log_then_signal(self: RunLogger, record: dict) -> None:
        log_epoch(self, record)
        if record["epoch"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(RunLogger, "epoch", log_then_signal)


def warnings_in(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("distillers: warning:")]


def test_distill_to_mlflow_interrupted_and_resumed_is_one_mlflow_run(capsys, monkeypatch, tmp_path, cifar, teacher):
    from mlflow.tracking import MlflowClient

    argv = ["distill", "--teacher", teacher.checkpoint, "--student", "resnet8", "--method", "kd", "--epochs", "2",
            "--max-steps-per-epoch", "2", "--batch-size", "16", "--data-dir", cifar.root, "--out", tmp_path, *FAST,
            "--log", "mlflow", "--log-project", "kd-grid"]
    with monkeypatch.context() as patch:
        stop_after_first_epoch(patch)
        stopped = run_cli(capsys, *argv)
    assert stopped.code != 0 and "interrupted by SIGTERM" in stopped.err
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "kd-grid"]
    (first,) = client.search_runs([experiment.experiment_id])
    assert first.info.status == "KILLED"

    resumed = run_cli(capsys, *argv, "--resume")
    assert resumed.code == 0, resumed.err
    assert warnings_in(resumed.err) == []
    run_dir = only_child(tmp_path)
    config, metrics, summary = read_run(run_dir)
    (run,) = client.search_runs([experiment.experiment_id])  # still one MLflow run
    assert run.info.run_id == first.info.run_id == json.loads((run_dir / TRACKERS_FILE).read_text())["mlflow"]["run_id"]
    assert run.info.status == "FINISHED" and run.info.run_name == run_dir.name
    history = client.get_metric_history(run.info.run_id, "test_acc")
    assert [(m.step, m.value) for m in history] == [(r["epoch"], r["test_acc"]) for r in metrics]
    assert [m.step for m in history] == [1, 2]
    params = run.data.params
    for key in ("method", "student", "teacher", "epochs", "batch_size", "seed", "world_size"):
        assert params[key] == str(config[key]), key
    assert params["method_options.kd_T"] == str(config["method_options"]["kd_T"])
    assert params["versions.torch"] == config["torch"]
    assert run.data.metrics["best_acc"] == summary["best_acc"] and run.data.metrics["last_acc"] == summary["last_acc"]
    assert run.data.tags["summary.status"] == "finished"
    assert run.data.tags["run_dir"] == str(run_dir.resolve())


def test_wandb_offline_run_files_hold_config_history_and_summary_across_a_resume(capsys, monkeypatch, tmp_path,
                                                                                 cifar, offline_home):
    out = tmp_path / "runs"  # beside the fixture's HOME
    argv = teacher_argv(cifar, out, "--log", "wandb,tensorboard", "--log-project", "teachers")
    with monkeypatch.context() as patch:
        stop_after_first_epoch(patch)
        stopped = run_cli(capsys, *argv)
    assert stopped.code != 0
    resumed = run_cli(capsys, *argv, "--resume")
    assert resumed.code == 0, resumed.err
    run_dir = only_child(out)
    config, metrics, summary = read_run(run_dir)
    run_id = json.loads((run_dir / TRACKERS_FILE).read_text())["wandb"]["id"]
    folders = sorted((run_dir / "wandb").glob(f"offline-run-*-{run_id}"))
    assert len(folders) == 2  # one per start, joined into one W&B run by the printed command
    sync = f"W&B ran offline; upload with: wandb sync --id {run_id} {folders[0]} {folders[1]}"
    assert sync in resumed.err.splitlines() and warnings_in(resumed.err) == []
    pieces = [read_offline_run(next(folder.glob("run-*.wandb"))) for folder in folders]
    assert [piece.run_id for piece in pieces] == [run_id, run_id]
    assert {piece.project for piece in pieces} == {"teachers"}
    assert [piece.exit_code for piece in pieces] == [1, 0]  # interrupted, then finished
    history = [row for piece in pieces for row in piece.history]
    assert [(row["epoch"], row["test_acc"], row["train_loss"]) for row in history] == \
        [(r["epoch"], r["test_acc"], r["train_loss"]) for r in metrics]
    final = pieces[1].summary
    assert final["status"] == "finished" and final["best_acc"] == summary["best_acc"]
    assert final["last_acc"] == summary["last_acc"] and final["best_epoch"] == summary["best_epoch"]
    assert pieces[1].config["model"] == config["model"] == "resnet8" and pieces[1].config["epochs"] == 2
    assert any((run_dir / "tensorboard").glob("events.out.tfevents.*"))


def test_a_tracker_failing_mid_run_leaves_the_run_finished_and_complete(capsys, monkeypatch, tmp_path, cifar):
    from mlflow.tracking import MlflowClient

    logged = MlflowTracker.log_epoch

    def fail_on_second(self: MlflowTracker, record: dict) -> None:
        if record["epoch"] == 2:
            raise ConnectionError("tracking server went away\n(a long traceback from the server)")
        logged(self, record)

    monkeypatch.setattr(MlflowTracker, "log_epoch", fail_on_second)
    result = run_cli(capsys, *teacher_argv(cifar, tmp_path, "--log", "mlflow"))
    assert result.code == 0, result.err
    (warning,) = warnings_in(result.err)
    assert "mlflow tracker failed while logging an epoch (ConnectionError: tracking server went away)" in warning
    _, metrics, summary = read_run(only_child(tmp_path))
    assert [r["epoch"] for r in metrics] == [1, 2] and summary["status"] == "finished"
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("distillers").experiment_id])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "test_acc")] == [1]
    assert run.info.status == "FAILED"  # the tracker's run says it broke off; the run directory says finished


def test_log_wandb_without_wandb_installed_warns_once_and_finishes(capsys, monkeypatch, tmp_path, cifar):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError, as when it is missing
    result = run_cli(capsys, *teacher_argv(cifar, tmp_path, "--log", "wandb", "--epochs", "1"))
    assert result.code == 0, result.err
    assert warnings_in(result.err) == [("distillers: warning: --log wandb: cannot import wandb (pip install "
                                        "'distillers[wandb]'); the run goes on without it")]
    run_dir = only_child(tmp_path)
    _, metrics, summary = read_run(run_dir)
    assert len(metrics) == 1 and summary["status"] == "finished"
    assert not (run_dir / "wandb").exists() and not (run_dir / "tensorboard").exists()


def test_unknown_tracker_is_a_one_line_usage_error(capsys, tmp_path, cifar):
    result = run_cli(capsys, *teacher_argv(cifar, tmp_path, "--log", "tensorboard,mlfow"))
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and "unknown tracker 'mlfow' in --log; choose from: mlflow, tensorboard, wandb" in lines[0]
    assert not any(tmp_path.iterdir())


def test_run_config_takes_the_tracker_flags():
    from distillers import cli

    args = cli.build_parser().parse_args(["train-teacher", "--model", "resnet8", "--log", "mlflow,wandb",
                                          "--log-project", "p", "--mlflow-uri", "sqlite:///x.db"])
    cfg = cli.run_config(args, "teacher")
    assert (cfg.log, cfg.log_project, cfg.mlflow_uri) == (("mlflow", "wandb"), "p", "sqlite:///x.db")
    default = cli.run_config(cli.build_parser().parse_args(["train-teacher", "--model", "resnet8"]), "teacher")
    assert (default.log, default.log_project, default.mlflow_uri) == (("tensorboard",), None, None)
