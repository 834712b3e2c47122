"""Checkpoint writes are atomic: a kill or a full disk in the middle of one never corrupts ``last.pt``."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch

from . import faults, harness


def stale_temporaries(run_dir) -> list[str]:
    return sorted(path.name for path in run_dir.glob(".last.pt.*"))


def test_sigkill_during_checkpoint_write_keeps_previous_last_pt(assets, reference_run, tmp_path):
    run_dir = tmp_path / "runs" / "run"
    marker = tmp_path / "writing"
    args = assets.teacher_run_args("runs")
    # The 2nd write of last.pt (end of epoch 2) stalls half-way through; it is killed there.
    child = harness.spawn(args, tmp_path, patch=faults.stall_checkpoint_write("last.pt", 2, marker))
    child.wait_for(marker.exists)
    partial = stale_temporaries(run_dir)
    assert len(partial) == 1 and (run_dir / partial[0]).stat().st_size > 0  # really killed mid-write
    child.send(signal.SIGKILL)
    assert child.wait().code == -signal.SIGKILL

    checkpoint = torch.load(run_dir / "last.pt", weights_only=True)  # loads: the previous, complete file
    assert checkpoint["epoch"] == 1 and checkpoint["step_in_epoch"] == 0
    assert [r["epoch"] for r in harness.metrics(run_dir)] == [1, 2]  # epoch 2 was logged, never checkpointed

    resumed = harness.run([*args, "--resume"], tmp_path)
    assert resumed.code == 0, resumed.describe()
    assert stale_temporaries(run_dir) == []  # the half-written file is cleaned up
    harness.assert_same_history(reference_run, run_dir)  # epoch 2 redone once, not logged twice


def test_sigkill_during_first_checkpoint_write_leaves_no_last_pt(assets, tmp_path):
    run_dir = tmp_path / "runs" / "run"
    marker = tmp_path / "writing"
    args = assets.teacher_run_args("runs")
    child = harness.spawn(args, tmp_path, patch=faults.stall_checkpoint_write("last.pt", 1, marker))
    child.wait_for(marker.exists)
    child.send(signal.SIGKILL)
    assert child.wait().code == -signal.SIGKILL
    assert not (run_dir / "last.pt").exists()
    again = harness.run([*args, "--resume"], tmp_path)
    harness.assert_user_error(again, f"nothing to resume: {run_dir.relative_to(tmp_path)}/last.pt does not exist",
                              "--overwrite")


def test_disk_full_during_checkpoint_write(assets, reference_run, tmp_path):
    run_dir = tmp_path / "runs" / "run"
    args = assets.teacher_run_args("runs")
    full = harness.run(args, tmp_path, patch=faults.disk_full_during_checkpoint_write("last.pt", 2))
    line = harness.assert_user_error(full, f"could not save checkpoint {run_dir.relative_to(tmp_path)}/last.pt",
                                     "No space left on device", "previous checkpoint (if any) is intact",
                                     "--resume", after_progress=True)
    checkpoint = torch.load(run_dir / "last.pt", weights_only=True)
    assert checkpoint["epoch"] == 1
    assert stale_temporaries(run_dir) == []
    summary = harness.summary(run_dir)
    assert summary["status"] == "failed" and "No space left on device" in summary["reason"], summary
    assert line.endswith(summary["reason"])

    resumed = harness.run([*args, "--resume"], tmp_path)  # space freed: the run carries on
    assert resumed.code == 0, resumed.describe()
    harness.assert_same_history(reference_run, run_dir)


@pytest.mark.parametrize("target", ["metrics.jsonl", "summary.json"])
def test_disk_full_writing_run_records(assets, tmp_path, target):
    """A full disk hits the small files too: the same clear error, never a traceback."""

    def patch() -> None:
        import builtins
        import errno
        import os

        real_open, real_fdopen = builtins.open, os.fdopen

        def refuse(path: str, mode: str) -> None:
            if Path(path).name.lstrip(".").startswith(target) and any(m in mode for m in "wa"):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def open_(file, mode="r", *args, **kwargs):
            refuse(str(file), mode)
            return real_open(file, mode, *args, **kwargs)

        def fdopen(fd, mode="r", *args, **kwargs):
            refuse(os.readlink(f"/proc/self/fd/{fd}"), mode)
            return real_fdopen(fd, mode, *args, **kwargs)

        builtins.open, os.fdopen = open_, fdopen

    outcome = harness.run(assets.teacher_run_args("runs"), tmp_path, patch=patch)
    harness.assert_user_error(outcome, "cannot write", target, "No space left on device", after_progress=True)
