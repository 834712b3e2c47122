"""A loss that becomes NaN/inf stops the run with a clear error, keeping the last good checkpoint."""

from __future__ import annotations

import torch

from . import faults, harness
from .conftest import STEPS_PER_EPOCH


def test_nan_loss_stops_and_keeps_last_good_checkpoint(assets, tmp_path):
    run_dir = tmp_path / "runs" / "run"
    outcome = harness.run(assets.teacher_run_args("runs"), tmp_path,
                          patch=faults.nan_loss_at_step(STEPS_PER_EPOCH + 3))  # epoch 2, step 3
    where = "the loss became NaN or infinite at epoch 2, step 3 (main stage)"
    harness.assert_user_error(outcome, where, f"the last good checkpoint {run_dir.relative_to(tmp_path)}/last.pt "
                              f"is kept (main epoch 1)", "lower --lr", after_progress=True)
    summary = harness.summary(run_dir)
    assert summary["status"] == "failed" and summary["reason"] == where
    checkpoint = torch.load(run_dir / "last.pt", weights_only=True)
    assert checkpoint["epoch"] == 1 and checkpoint["step_in_epoch"] == 0
    assert all(torch.isfinite(tensor).all() for tensor in checkpoint["model"].values())
    assert [r["epoch"] for r in harness.metrics(run_dir)] == [1]  # the broken epoch is not logged


def test_absurd_learning_rate_diverges_in_first_epoch(assets, tmp_path):
    """No fault injected: --lr 1e30 overflows the weights after the first step."""
    run_dir = tmp_path / "runs" / "run"
    args = [*assets.teacher_run_args("runs"), "--lr", "1e30"]
    outcome = harness.run(args, tmp_path)
    line = harness.assert_user_error(outcome, "the loss became NaN or infinite at epoch 1, step ",
                                     "no checkpoint was written", "lower --lr", after_progress=True)
    step = int(line.split("step ")[1].split(" ")[0])
    assert 2 <= step <= STEPS_PER_EPOCH  # step 1's loss is computed before the first update
    assert harness.summary(run_dir)["status"] == "failed"
    assert not (run_dir / "last.pt").exists() and harness.metrics(run_dir) == []
