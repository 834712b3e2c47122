"""Every fast-path choice through ``distill`` on CPU: compile fallback, and device data + bf16 + channels-last +
compile interrupted mid-epoch and resumed equal to the uninterrupted run (issue 13, "Done when")."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from cli.conftest import FAST, only_child, run_cli
from distillers.data.gpu_loader import DeviceLoader
from distillers.engine import speed

pytestmark = pytest.mark.slow


def distill_args(cifar, teacher, out: Path, *extra: str) -> list[str]:
    return ["distill", "--path-t", str(teacher.checkpoint), "--student", "resnet8", "--method", "kd",
            "--epochs", "1", "--batch-size", "32", "--data-dir", str(cifar.root), "--out", str(out), "--name", "run",
            *FAST, *extra]


def test_compile_that_fails_at_the_first_call_finishes_eagerly(capsys, tmp_path, cifar, teacher, monkeypatch):
    from torch._dynamo import list_backends, register_backend

    if "distillers_e2e_failing" not in list_backends(exclude_tags=()):
        @register_backend(name="distillers_e2e_failing")
        def _fail(graph, example_inputs):
            raise RuntimeError("InvalidCxxCompiler: No working C++ compiler found")
    monkeypatch.setattr(speed, "COMPILE_BACKEND", "distillers_e2e_failing")
    torch._dynamo.reset()
    result = run_cli(capsys, *distill_args(cifar, teacher, tmp_path, "--compile", "--max-steps-per-epoch", "2"))
    torch._dynamo.reset()
    assert result.code == 0, result.err
    fallback = [line for line in result.err.splitlines() if "fell back to eager" in line]
    assert len(fallback) == 1 and "InvalidCxxCompiler" in fallback[0]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "finished"


def test_every_fast_path_choice_resumes_mid_epoch_exactly(capsys, tmp_path, cifar, teacher, monkeypatch):
    """Device-resident data, bf16 autocast, channels-last and compile (dynamo, eager backend) on CPU; SIGUSR2 at
    the second batch stops the run at a step boundary; --resume must end where the uninterrupted run ends."""
    monkeypatch.setattr(speed, "COMPILE_BACKEND", "eager")  # dynamo's graph capture, without C++ code generation
    flags = ("--data-path", "device", "--amp", "on", "--channels-last", "on", "--compile")
    torch._dynamo.reset()
    full = run_cli(capsys, *distill_args(cifar, teacher, tmp_path / "full", *flags))
    assert full.code == 0, full.err
    config = json.loads((tmp_path / "full" / "run" / "config.json").read_text())
    assert (config["data_path"], config["amp"], config["channels_last"], config["compile"]) == ("device", "on", "on",
                                                                                                 True)

    batch = DeviceLoader._batch
    calls = []

    def interrupting(self, index, position):
        calls.append(position)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGUSR2)
        return batch(self, index, position)

    monkeypatch.setattr(DeviceLoader, "_batch", interrupting)
    stopped = run_cli(capsys, *distill_args(cifar, teacher, tmp_path / "cut", *flags))
    assert stopped.code != 0 and "resume" in (stopped.err + stopped.out).lower()
    monkeypatch.setattr(DeviceLoader, "_batch", batch)
    checkpoint = torch.load(tmp_path / "cut" / "run" / "last.pt", weights_only=True)
    assert checkpoint["epoch"] == 0 and checkpoint["step_in_epoch"] >= 1  # stopped inside the first epoch
    resumed = run_cli(capsys, *distill_args(cifar, teacher, tmp_path / "cut", *flags, "--resume"))
    assert resumed.code == 0, resumed.err
    torch._dynamo.reset()
    expected = torch.load(only_child(tmp_path / "full") / "last.pt", weights_only=True)["model"]
    got = torch.load(tmp_path / "cut" / "run" / "last.pt", weights_only=True)["model"]
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
