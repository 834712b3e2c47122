"""Shared fixtures: tiny datasets in the real formats, trained teacher checkpoints, a workspace with a finished run.

Everything expensive is session-scoped and produced by the real CLI (``harness.run``), once.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from data.fake_data import write_cifar10, write_cifar100

from . import harness

N_TRAIN, N_TEST, BATCH = 64, 32, 16  # 4 steps per epoch: enough to stop mid-epoch, cheap on 2 busy cores
STEPS_PER_EPOCH = N_TRAIN // BATCH


def run_flags(data_dir: Path, *extra: str) -> list[str]:
    """The flags every training command here shares: tiny data, no worker processes, small batches."""
    return ["--data-dir", str(data_dir), "--workers", "0", "--batch-size", str(BATCH), *extra]


@dataclass(frozen=True)
class Assets:
    """Read-only inputs shared by the whole session."""

    data_dir: Path  # --data-dir holding cifar-100-python and cifar-10-batches-py
    teacher: Path  # resnet8 trained one epoch on the fake CIFAR-100 (our checkpoint format)
    teacher_run: Path  # its run directory
    teacher_cifar10: Path  # resnet8 trained one epoch on the fake CIFAR-10

    def flags(self, *extra: str) -> list[str]:
        return run_flags(self.data_dir, *extra)

    def teacher_run_args(self, out: str | Path) -> list[str]:
        """A 3-epoch teacher run named ``run`` whose lr decays after epoch 2 (the runs that get interrupted)."""
        return ["train-teacher", "--model", "resnet8", "--epochs", "3", "--lr-decay-epochs", "2", "--seed", "3",
                "--name", "run", "--out", str(out), *self.flags()]


@pytest.fixture(scope="session")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Assets:
    harness.warm_imports()
    root = tmp_path_factory.mktemp("reliability")
    data_dir = root / "data"
    write_cifar100(data_dir, n_train=N_TRAIN, n_test=N_TEST, seed=0)
    write_cifar10(data_dir, n_train=N_TRAIN, n_test=N_TEST, seed=1)
    teachers = {}
    for dataset in ("cifar100", "cifar10"):
        outcome = harness.run(["train-teacher", "--model", "resnet8", "--dataset", dataset, "--epochs", "1",
                               "--out", "teachers", *run_flags(data_dir)], root)
        assert outcome.code == 0, outcome.describe()
        teachers[dataset] = root / "teachers" / f"resnet8_{dataset}_vanilla_trial-1"
    return Assets(data_dir, teachers["cifar100"] / "last.pt", teachers["cifar100"], teachers["cifar10"] / "last.pt")


@pytest.fixture
def workspace(tmp_path: Path, assets: Assets) -> Path:
    """A working directory whose ``runs/`` already holds a finished run (``runs/finished``) that must survive."""
    shutil.copytree(assets.teacher_run, tmp_path / "runs" / "finished")
    return tmp_path


@pytest.fixture(scope="session")
def reference_run(assets: Assets, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``teacher_run_args`` run without interruption: what every interrupted-and-resumed copy must reproduce."""
    cwd = tmp_path_factory.mktemp("reference")
    outcome = harness.run(assets.teacher_run_args("runs"), cwd)
    assert outcome.code == 0, outcome.describe()
    return cwd / "runs" / "run"
