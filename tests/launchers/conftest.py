"""Fixtures of the launcher tests: a tiny CIFAR-100 on disk, a teacher where the sweep looks for it, a running SLURM.

SLURM runs for real (a one-node cluster from Debian's packages, started by ``scripts/slurm-local.sh``; .ci/run
starts it before the tests). The fixture starts it when it is not answering yet, so these tests also run alone.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from data.fake_data import FakeArrays, write_cifar100
from distillers import cli

REPO = Path(__file__).resolve().parents[2]
TEACHER = "resnet14"  # stages as wide as resnet8's: every method applies
# Flags after `sweep --`: tiny runs on the CPU (the CRD memory must fit 128 training images).
TINY = ["--batch-size", "16", "--workers", "0", "--device", "cpu", "--nce-k", "16"]


@pytest.fixture(scope="session")
def tiny_cifar(tmp_path_factory: pytest.TempPathFactory) -> FakeArrays:
    return write_cifar100(tmp_path_factory.mktemp("data"), n_train=128, n_test=32, seed=0)


@pytest.fixture(scope="session")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory, tiny_cifar: FakeArrays) -> Path:
    """``<dir>/resnet14_vanilla/ckpt_epoch_240.pth``: a teacher trained two steps through the CLI, where the sweep
    reads teachers (the seed's layout)."""
    out = tmp_path_factory.mktemp("teacher-run")
    code = cli.main(["train-teacher", "--model", TEACHER, "--epochs", "1", "--max-steps-per-epoch", "2",
                     "--batch-size", "16", "--workers", "0", "--device", "cpu", "--data-dir", str(tiny_cifar.root),
                     "--out", str(out)])
    assert code == 0
    (run_dir,) = [path for path in out.iterdir() if path.is_dir()]
    teachers = tmp_path_factory.mktemp("teachers")
    (teachers / f"{TEACHER}_vanilla").mkdir()
    shutil.copy(run_dir / "last.pt", teachers / f"{TEACHER}_vanilla" / "ckpt_epoch_240.pth")
    return teachers


def node_state() -> str:
    try:
        result = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=30,
                                check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


@pytest.fixture(scope="session")
def slurm() -> None:
    """A one-node SLURM answering on this machine (started by the repository's script when it is not yet)."""
    if node_state() not in ("idle", "mixed", "allocated"):
        started = subprocess.run([str(REPO / "scripts" / "slurm-local.sh"), "start"], capture_output=True, text=True,
                                 timeout=900, check=False)
        assert started.returncode == 0, f"scripts/slurm-local.sh start failed:\n{started.stdout}\n{started.stderr}"
    assert node_state() in ("idle", "mixed", "allocated")


def sweep(capsys: pytest.CaptureFixture, *argv: Any) -> tuple[int, str, str]:
    """``distillers sweep <argv>`` in-process: exit code (argparse's included), stdout, stderr."""
    capsys.readouterr()
    try:
        code = cli.main(["sweep", *map(str, argv)])
    except SystemExit as stop:  # argparse's errors
        code = int(stop.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
