"""Resume equivalence: a run stopped after epoch k and resumed logs exactly what an uninterrupted run logs.

How a run is stopped "after epoch k": the child sends itself SIGTERM right after the engine logs epoch k
(``faults.signal_after_epoch``). That is the real signal path at a deterministic moment: the engine finishes the
epoch's checkpoint, sees the request and exits through ``Interrupted``. The alternatives are weaker: a signal
from outside when metrics.jsonl grows lands at a random step (``test_signals`` covers that), and ``--epochs k``
then ``--epochs n --resume`` never interrupts anything. The engine reseeds every epoch from (seed, epoch) and
the sampler's order depends only on (seed, epoch), so on CPU the per-epoch metrics must match bit for bit.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch

from . import faults, harness


def interrupted_then_resumed(args: list[str], cwd: Path, run_dir: Path, stage: str, epoch: int) -> None:
    """Run ``args`` stopped by SIGTERM after ``stage`` epoch ``epoch``, check the stop, then resume to the end."""
    stopped = harness.run(args, cwd, patch=faults.signal_after_epoch(stage, epoch, signal.SIGTERM))
    line = harness.assert_user_error(stopped, "interrupted by SIGTERM", "--resume", after_progress=True)
    assert harness.summary(run_dir)["status"] == "interrupted", line
    checkpoint = torch.load(run_dir / "last.pt", weights_only=True)
    assert (checkpoint["stage"], checkpoint["epoch"], checkpoint["step_in_epoch"]) == (stage, epoch, 0)
    resumed = harness.run([*args, "--resume"], cwd)
    assert resumed.code == 0, resumed.describe()
    assert f"resuming {run_dir.relative_to(cwd)} from {stage} epoch {epoch}\n" in resumed.stderr


def test_teacher_resume_after_epoch_is_exact(assets, reference_run, tmp_path):
    interrupted_then_resumed(assets.teacher_run_args("stopped"), tmp_path, tmp_path / "stopped" / "run", "main", 1)
    harness.assert_same_history(reference_run, tmp_path / "stopped" / "run")
    # lr decays after epoch 2: the resumed run picked up the schedule where it stood.
    assert [r["lr"] for r in harness.metrics(tmp_path / "stopped" / "run")] == pytest.approx([0.05, 0.05, 0.005])


def test_teacher_resume_with_worker_processes_is_exact(assets, tmp_path):
    """Data-loading workers draw the augmentations: they must also depend only on (seed, epoch)."""
    args = [*assets.teacher_run_args("reference"), "--workers", "1"]
    reference = harness.run(args, tmp_path)
    assert reference.code == 0, reference.describe()
    interrupted_then_resumed([*assets.teacher_run_args("stopped"), "--workers", "1"], tmp_path,
                             tmp_path / "stopped" / "run", "main", 1)
    harness.assert_same_history(tmp_path / "reference" / "run", tmp_path / "stopped" / "run")


@pytest.mark.parametrize(("method", "extra", "stage", "epoch"), [
    # CRD: a memory bank in the checkpoint, and contrast rows drawn per epoch by the dataset.
    pytest.param("crd", ["--nce-k", "16", "--epochs", "2"], "main", 1, id="crd-after-main-epoch-1"),
    # FSP: a two-stage method stopped at the end of its initialisation stage, before the main stage starts.
    pytest.param("fsp", ["--init-epochs", "1", "--epochs", "2"], "init", 1, id="fsp-after-init-stage"),
    # AB: a two-stage method stopped in its main stage (the resumed run must skip the initialisation stage).
    pytest.param("ab", ["--init-epochs", "1", "--epochs", "2"], "main", 1, id="ab-after-main-epoch-1"),
])
def test_distill_resume_after_epoch_is_exact(assets, tmp_path, method, extra, stage, epoch):
    args = ["distill", "--teacher", str(assets.teacher), "--student", "resnet8", "--method", method, "--name", "run",
            *extra, *assets.flags()]
    reference = harness.run([*args, "--out", "reference"], tmp_path)
    assert reference.code == 0, reference.describe()
    interrupted_then_resumed([*args, "--out", "stopped"], tmp_path, tmp_path / "stopped" / "run", stage, epoch)
    harness.assert_same_history(tmp_path / "reference" / "run", tmp_path / "stopped" / "run")
