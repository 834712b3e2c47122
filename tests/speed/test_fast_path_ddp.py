"""The device-resident loader under DDP: 2 gloo processes (torchrun) with --data-path device, bf16 autocast and
channels-last on CPU, CRD (contrast rows drawn per batch on each rank's shard)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from data.fake_data import write_cifar100
from reliability import harness

pytestmark = pytest.mark.slow


def test_two_gloo_processes_train_from_the_device_loader(tmp_path, cifar, teacher):
    write_cifar100(tmp_path / "data", n_train=64, n_test=16, seed=0)
    args = ["-m", "distillers", "distill", "--teacher", str(teacher.checkpoint), "--student", "resnet8",
            "--method", "crd", "--nce-k", "16", "--data-dir", str(tmp_path / "data"), "--workers", "0",
            "--batch-size", "8", "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "runs"), "--name", "ddp",
            "--data-path", "device", "--amp", "on", "--channels-last", "on"]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    done = subprocess.run(command, cwd=tmp_path, env={**os.environ, **harness.ENV}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    run_dir = tmp_path / "runs" / "ddp"
    config = json.loads((run_dir / "config.json").read_text())
    assert config["world_size"] == 2 and config["data_path"] == "device" and config["amp"] == "on"
    record = harness.metrics(run_dir)[-1]
    assert record["epoch"] == 1 and math.isfinite(record["train_loss"])
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "finished"
