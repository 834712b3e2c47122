"""The run lifecycle's promises: checkpoints of the old key layout still resume, GPU-written checkpoints resume on
CPU (one RNG state per visible GPU, fused SGD with channels-last momentum buffers), numerical failures inside a
step and signals before training end in one line."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch

from . import faults, harness

# The keys a teacher checkpoint has held since before the lifecycle refactor: renaming one breaks every resume.
TEACHER_CHECKPOINT_KEYS = {"model", "arch", "num_classes", "dataset", "config", "epoch", "accuracy", "best_acc",
                           "best_epoch", "stage", "step_in_epoch", "samples_in_epoch", "world_size", "batch_size",
                           "partial", "partial_terms", "optimizer", "rng"}


def stopped_after_epoch_one(assets, cwd: Path) -> Path:
    args = assets.teacher_run_args("runs")
    stopped = harness.run(args, cwd, patch=faults.signal_after_epoch("main", 1, signal.SIGTERM))
    harness.assert_user_error(stopped, "interrupted by SIGTERM", "--resume", after_progress=True)
    return cwd / "runs" / "run"


def test_checkpoint_key_layout_is_unchanged_and_resumes(assets, reference_run, tmp_path):
    run_dir = stopped_after_epoch_one(assets, tmp_path)
    checkpoint = torch.load(run_dir / "last.pt", weights_only=True)
    assert set(checkpoint) == TEACHER_CHECKPOINT_KEYS
    # Rebuilt from its keys alone, as an older version wrote it (a plain dict of the same entries).
    torch.save({key: checkpoint[key] for key in sorted(TEACHER_CHECKPOINT_KEYS)}, run_dir / "last.pt")
    resumed = harness.run([*assets.teacher_run_args("runs"), "--resume"], tmp_path)
    assert resumed.code == 0, resumed.describe()
    harness.assert_same_history(reference_run, run_dir)


def test_gpu_written_checkpoint_resumes_exactly_on_cpu(assets, reference_run, tmp_path):
    """An 8-GPU job's RNG list and a fused SGD whose momentum buffers are channels-last: the CPU resume ignores
    the CUDA streams, keeps its own kernel choice and lays the buffers out like the parameters, so it still
    reproduces the uninterrupted run bit for bit."""
    run_dir = stopped_after_epoch_one(assets, tmp_path)
    checkpoint = torch.load(run_dir / "last.pt", weights_only=True)
    checkpoint["rng"]["cuda"] = [torch.zeros(16, dtype=torch.uint8) for _ in range(8)]
    optimizer = checkpoint["optimizer"]
    for group in optimizer["param_groups"]:
        group["fused"], group["foreach"] = True, False
    channels_last = 0
    for state in optimizer["state"].values():
        buffer = state.get("momentum_buffer")
        if buffer is not None and buffer.ndim == 4:
            state["momentum_buffer"] = buffer.contiguous(memory_format=torch.channels_last)
            channels_last += 1
    assert channels_last > 0
    torch.save(checkpoint, run_dir / "last.pt")
    resumed = harness.run([*assets.teacher_run_args("runs"), "--resume"], tmp_path)
    assert resumed.code == 0, resumed.describe()
    harness.assert_same_history(reference_run, run_dir)


def test_numerical_error_inside_a_step_stops_like_a_nan(assets, tmp_path):
    """A LinAlgError raised by a step (an SVD of non-finite numbers) ends the run with the non-finite line."""
    def raise_in_step() -> None:
        from distillers.objective import Supervised

        forward = Supervised.forward
        calls = {"n": 0}

        def failing(self, batch):
            calls["n"] += 1
            if calls["n"] == 6:  # epoch 2, step 2
                raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge because the input "
                                               "matrix contained non-finite values.")
            return forward(self, batch)

        Supervised.forward = failing

    outcome = harness.run(assets.teacher_run_args("runs"), tmp_path, patch=raise_in_step)
    line = harness.assert_user_error(outcome, "a step failed on non-finite numbers (LinAlgError",
                                     "at epoch 2, step 2 (main stage)", "last good checkpoint", after_progress=True)
    summary = harness.summary(tmp_path / "runs" / "run")
    assert summary["status"] == "failed" and "LinAlgError" in summary["reason"], line
    assert torch.load(tmp_path / "runs" / "run" / "last.pt", weights_only=True)["epoch"] == 1


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["SIGTERM", "SIGINT"])
def test_signal_before_training_leaves_no_half_made_run(assets, tmp_path, sig, code):
    """A signal while the teacher is evaluated (before the loop): one line, the signal's exit code, and the run
    directory it had just created is gone, so the same command starts cleanly again."""
    def signal_in_baseline() -> None:
        import os

        from distillers.engine import run

        evaluate = run.evaluate

        def interrupted(*args, **kwargs):
            os.kill(os.getpid(), sig)
            return evaluate(*args, **kwargs)

        run.evaluate = interrupted

    args = ["distill", "--teacher", str(assets.teacher), "--student", "resnet8", "--method", "kd", "--epochs", "1",
            "--name", "early", "--out", "runs", *assets.flags()]
    outcome = harness.run(args, tmp_path, patch=signal_in_baseline)
    assert outcome.code == code, outcome.describe()
    assert "Traceback" not in outcome.stderr
    last = outcome.stderr.strip().splitlines()[-1]
    assert last.startswith(f"distillers: error: interrupted by {signal.Signals(sig).name} before training started")
    assert "removed (nothing to resume)" in last
    assert not (tmp_path / "runs" / "early").exists()
    again = harness.run(args, tmp_path)
    assert again.code == 0, again.describe()


def test_decay_epochs_beyond_the_run_are_said_once(assets, tmp_path):
    args = ["train-teacher", "--model", "resnet8", "--epochs", "1", "--lr-decay-epochs", "1,5", "--out", "runs",
            *assets.flags()]
    outcome = harness.run(args, tmp_path)
    assert outcome.code == 0, outcome.describe()
    notes = [line for line in outcome.stderr.splitlines() if "--lr-decay-epochs" in line]
    assert notes == ["note: --lr-decay-epochs 1,5 not before the end of this 1-epoch run: the lr never decays"]


def test_backend_choices_are_applied_for_the_run_and_recorded(assets, tmp_path):
    """``--deterministic`` reaches torch during training (a patched step reports it) and config.json records it."""
    def report_settings() -> None:
        import sys

        from distillers.objective import Supervised

        forward = Supervised.forward

        def watched(self, batch):
            print(f"step sees deterministic={torch.are_deterministic_algorithms_enabled()} "
                  f"cudnn={torch.backends.cudnn.deterministic}", file=sys.stderr)
            return forward(self, batch)

        Supervised.forward = watched

    args = ["train-teacher", "--model", "resnet8", "--epochs", "1", "--deterministic", "--name", "det", "--out", "runs",
            *assets.flags()]
    outcome = harness.run(args, tmp_path, patch=report_settings)
    assert outcome.code == 0, outcome.describe()
    assert "step sees deterministic=True cudnn=True" in outcome.stderr
    config = json.loads((tmp_path / "runs" / "det" / "config.json").read_text())
    assert (config["deterministic"], config["cudnn_benchmark"]) == (True, False)
    # What CPU's auto flags became is recorded too (the measured CPU answers, engine.speed.CPU_AUTO).
    from distillers.engine.speed import CPU_AUTO

    fast_path = harness.summary(tmp_path / "runs" / "det")["fast_path"]
    assert fast_path == {"data_path": "device" if CPU_AUTO["data_path"] == "device" else "dataloader",
                         "amp": "bfloat16" if CPU_AUTO["amp"] else "off", "channels_last": CPU_AUTO["channels_last"],
                         "compile": False}
    assert "fast path: data_path " in outcome.stderr
