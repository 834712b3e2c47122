"""SIGINT and SIGTERM during training: a checkpoint at the next step boundary, a clean exit, an exact resume."""

from __future__ import annotations

import signal

import pytest
import torch

from . import faults, harness
from .conftest import STEPS_PER_EPOCH


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_epoch_checkpoints_at_step_boundary_and_resumes_exactly(assets, reference_run, tmp_path, sig):
    # The signal arrives during the 2nd step of epoch 2: the engine finishes that step, saves, and stops.
    step = STEPS_PER_EPOCH + 2
    run_dir = tmp_path / "runs" / "run"
    args = assets.teacher_run_args("runs")
    stopped = harness.run(args, tmp_path, patch=faults.signal_during_step(step, sig))
    name = signal.Signals(sig).name
    line = harness.assert_user_error(stopped, f"interrupted by {name}", f"{run_dir.relative_to(tmp_path)}/last.pt",
                                     "resume with the same command plus --resume", after_progress=True)
    summary = harness.summary(run_dir)
    assert (summary["status"], summary["reason"]) == ("interrupted", f"stopped by {name}"), line
    checkpoint = torch.load(run_dir / "last.pt", weights_only=True)
    assert (checkpoint["epoch"], checkpoint["step_in_epoch"]) == (1, 2)  # epoch 1 done, 2 steps of epoch 2
    assert [r["epoch"] for r in harness.metrics(run_dir)] == [1]

    resumed = harness.run([*args, "--resume"], tmp_path)
    assert resumed.code == 0, resumed.describe()
    assert "from main epoch 1, step 2 of epoch 2" in resumed.stderr
    # Mid-epoch resume is exact too: the sampler skips the used samples, the RNG streams and the running
    # sums of the interrupted epoch come back from the checkpoint.
    harness.assert_same_history(reference_run, run_dir)


def test_second_signal_stops_at_once(assets, tmp_path):
    outcome = harness.run(assets.teacher_run_args("runs"), tmp_path,
                          patch=faults.signal_during_step(STEPS_PER_EPOCH + 2, signal.SIGINT, times=2))
    assert outcome.code == 130, outcome.describe()
    assert "Traceback" not in outcome.stderr
    assert outcome.stderr.splitlines()[-1] == "distillers: interrupted"
    summary = harness.summary(tmp_path / "runs" / "run")
    assert summary["status"] == "interrupted"
    # The previous checkpoint (end of epoch 1) is what is left, intact.
    assert torch.load(tmp_path / "runs" / "run" / "last.pt", weights_only=True)["epoch"] == 1


@pytest.mark.slow
def test_console_script_sigterm_from_outside_then_resume(assets, reference_run, tmp_path):
    """The installed entry point in a fresh interpreter, stopped by a SIGTERM sent whenever epoch 1 is logged."""
    run_dir = tmp_path / "runs" / "run"
    args = assets.teacher_run_args("runs")
    process = harness.start_console_script(args, tmp_path)
    try:
        metrics = run_dir / "metrics.jsonl"  # wait for its first complete line
        harness.wait_until(lambda: metrics.exists() and "\n" in metrics.read_text(), process, timeout=180)
        process.send_signal(signal.SIGTERM)
        outcome = harness.finish(process)
    finally:
        if process.poll() is None:
            process.kill()
    harness.assert_user_error(outcome, "interrupted by SIGTERM", "--resume", after_progress=True)
    assert harness.summary(run_dir)["status"] == "interrupted"
    checkpoint = torch.load(run_dir / "last.pt", weights_only=True)
    assert checkpoint["epoch"] >= 1  # wherever the signal landed, at a step boundary at or after epoch 1
    resumed = harness.run([*args, "--resume"], tmp_path)
    assert resumed.code == 0, resumed.describe()
    harness.assert_same_history(reference_run, run_dir)
