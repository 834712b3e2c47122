"""`distillers sweep --launcher local`: in this process, N at a time in subprocesses, one run per GPU."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import ClassVar

import pytest

from distillers.config import RunConfig
from distillers.launchers.local import LocalLauncher
from distillers.launchers.registry import PlannedRun
from distillers.rundir import distill_run_name

from .conftest import TEACHER, TINY, read_jsonl, sweep


def kd_run(teacher: str, trial: int) -> str:
    return distill_run_name("resnet8", teacher, "cifar100", "kd", 0.1, 0.9, 0, trial)


def test_sequential_sweep_runs_reports_and_records_status(tmp_path, capsys, tiny_cifar, teacher_dir):
    out = tmp_path / "runs"
    code, text, _ = sweep(capsys, "--pairs", f"{TEACHER}:resnet8", "--methods", "kd", "--trials", "1",
                          "--teacher-dir", teacher_dir, "--out", out, "--", "--epochs", "1",
                          "--max-steps-per-epoch", "1", "--data-dir", tiny_cifar.root, *TINY)
    assert code == 0
    summary = json.loads((out / kd_run(TEACHER, 1) / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs_done"] == 1
    assert "| KD |" in text  # the report follows the runs
    config = json.loads((out / kd_run(TEACHER, 1) / "config.json").read_text())
    assert config["method_options"]["nce_k"] == 16  # a flag after --, parsed once into the base config
    code, text, _ = sweep(capsys, "--status", out)
    assert code == 0
    assert text.splitlines()[0].split()[0] == "finished" and text.splitlines()[-1] == "1 finished"


@pytest.mark.slow
def test_parallel_two_at_a_time_and_a_failure_does_not_stop_the_others(tmp_path, capsys, tiny_cifar, teacher_dir):
    """resnet20's teacher does not exist: its two runs fail, the two resnet14 runs run together and finish."""
    out = tmp_path / "runs"
    code, text, err = sweep(capsys, "--launcher", "local", "--parallel", "2", "--pairs", f"{TEACHER}:resnet8",
                            "resnet20:resnet8", "--methods", "kd", "--trials", "2", "--teacher-dir", teacher_dir,
                            "--out", out, "--", "--epochs", "1", "--max-steps-per-epoch", "2", "--data-dir",
                            tiny_cifar.root, *TINY)
    assert code == 1 and "2 failed run(s)" in err
    intervals = []
    for trial in (1, 2):
        run_dir = out / kd_run(TEACHER, trial)
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["status"] == "finished"
        assert [record["epoch"] for record in read_jsonl(run_dir / "metrics.jsonl")] == [1]
        intervals.append((summary["started"], os.path.getmtime(run_dir / "summary.json")))
    (start_a, end_a), (start_b, end_b) = intervals
    assert start_a < end_b and start_b < end_a  # the two runs were in progress at the same time
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if " start: " in line]
    ends = [i for i, line in enumerate(lines) if " finished: " in line or " failed: " in line]
    assert len(starts) == 4 and starts[2] > ends[0]  # the third run waited for a free slot
    code, text, _ = sweep(capsys, "--status", out)
    failed = [line for line in text.splitlines() if line.startswith("failed")]
    assert len(failed) == 2 and all("resnet20" in line for line in failed)
    errors = [line for line in text.splitlines() if "last error:" in line]
    assert len(errors) == 2 and all("resnet20_vanilla/ckpt_epoch_240.pth" in line for line in errors)
    assert text.splitlines()[-1] == "2 finished, 2 failed"


class FakeProcess:
    """A worker that ends after two polls, recording the environment it was started with."""

    started: ClassVar[list[tuple[str, str, set[str]]]] = []
    alive: ClassVar[set[FakeProcess]] = set()

    def __init__(self, argv, stdout, stderr, env, start_new_session):
        self.gpu = env["CUDA_VISIBLE_DEVICES"]
        self.polls, self.returncode = 0, None
        FakeProcess.started.append((Path(argv[-1]).stem, self.gpu, {p.gpu for p in FakeProcess.alive}))
        FakeProcess.alive.add(self)

    def poll(self):
        self.polls += 1
        if self.polls > 2:
            self.returncode = 0
            FakeProcess.alive.discard(self)
        return self.returncode


def test_gpus_one_run_per_gpu_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setattr("distillers.launchers.local.subprocess.Popen", FakeProcess)
    monkeypatch.setattr("distillers.launchers.local.POLL_S", 0.0)
    args = argparse.Namespace(parallel=None, gpus=("0", "1", "2"))
    runs = [PlannedRun(f"run{i}", RunConfig(out=str(tmp_path), name=f"run{i}"), ("distill",)) for i in range(7)]
    LocalLauncher(args).launch(runs, tmp_path)
    assert [name for name, _, _ in FakeProcess.started] == [f"run{i}" for i in range(7)]
    for _, gpu, busy in FakeProcess.started:
        assert gpu in ("0", "1", "2") and gpu not in busy  # never two runs on one GPU
    assert {gpu for _, gpu, _ in FakeProcess.started[:3]} == {"0", "1", "2"}


@pytest.mark.parametrize("argv, message", [
    (["--launcher", "local", "--partition", "gpu"], "--partition applies to --launcher slurm"),
    (["--parallel", "2", "--gpus", "0,1"], "give one of them"),
    (["--", "--out", "elsewhere"], "--out after -- would be overridden"),
    (["--", "--epochs", "0"], "--epochs"),
])
def test_bad_sweep_flags_are_one_line_errors(tmp_path, capsys, argv, message):
    code, _, err = sweep(capsys, "--pairs", f"{TEACHER}:resnet8", "--methods", "kd", "--out", tmp_path / "r", *argv)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_ctrl_c_stops_parallel_runs_at_a_checkpoint_and_the_same_command_resumes(tmp_path, capsys, tiny_cifar,
                                                                                 teacher_dir):
    """The runs have sessions of their own: the sweep forwards one SIGTERM to each, they checkpoint, and the same
    sweep command resumes them; every epoch ends up in metrics.jsonl once."""
    out, epochs = tmp_path / "runs", 8
    argv = ["sweep", "--launcher", "local", "--parallel", "2", "--pairs", f"{TEACHER}:resnet8", "--methods", "kd",
            "--trials", "2", "--teacher-dir", str(teacher_dir), "--out", str(out), "--", "--epochs", str(epochs),
            "--max-steps-per-epoch", "4", "--data-dir", str(tiny_cifar.root), *TINY]
    sweep_process = subprocess.Popen([sys.executable, "-m", "distillers", *argv], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
    metrics = [out / kd_run(TEACHER, trial) / "metrics.jsonl" for trial in (1, 2)]
    deadline = time.monotonic() + 300
    while not all(path.exists() and read_jsonl(path) for path in metrics):
        assert time.monotonic() < deadline and sweep_process.poll() is None, "the runs never reached an epoch"
        time.sleep(0.1)
    sweep_process.send_signal(signal.SIGINT)
    _, err = sweep_process.communicate(timeout=300)
    assert sweep_process.returncode == 130
    assert err.strip().splitlines()[-1].startswith("distillers: error: sweep interrupted: 2 running run(s)")
    for path in metrics:
        summary = json.loads((path.parent / "summary.json").read_text())
        assert summary["status"] == "interrupted" and (path.parent / "last.pt").exists()
    code, text, _ = sweep(capsys, *argv[1:])
    assert code == 0 and text.count("] resume: ") == 2
    for path in metrics:
        assert [record["epoch"] for record in read_jsonl(path)] == list(range(1, epochs + 1))
        assert json.loads((path.parent / "summary.json").read_text())["status"] == "finished"
