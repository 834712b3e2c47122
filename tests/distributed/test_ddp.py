"""DDP on CPU (gloo), 2 processes started by torchrun: identical ranks, equality with one process, rank-0-only
writes, exact evaluation, resume across world sizes (docs/distributed.md).

Two torchrun launches, shared by the tests (module fixtures): the real command line
(``python -m torch.distributed.run --standalone --nproc_per_node=2 -m distillers distill ...``), and the test-only
wrapper ``ddp_child.py`` that runs the same CLI and then saves each rank's state. Single-process runs are forked
children (``reliability.harness``), patched the same way, so the imports are paid once.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data.fake_data import write_cifar100
from distillers.engine.distributed import DistInfo
from distillers.engine.resume import progress_from, resume_step
from distillers.methods.crd import ContrastMemory
from distillers.tasks.evaluate import evaluate_checkpoint
from reliability import harness

from . import ddp_child

N_TRAIN, N_TEST, BATCH = 64, 31, 8  # 31 test images: the 2 evaluation shards are uneven (16 + 15)
STEPS_PER_EPOCH = N_TRAIN // (2 * BATCH)
CHILD = Path(ddp_child.__file__)


def torchrun(args: list[str], cwd: Path, timeout: float = 240) -> harness.Outcome:
    """``torchrun --standalone --nproc_per_node=2 <args>`` on CPU, one thread per process."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args]
    done = subprocess.run(command, cwd=cwd, env={**os.environ, **harness.ENV}, capture_output=True, text=True,
                          timeout=timeout)
    return harness.Outcome(done.returncode, done.stdout, done.stderr)


class Workspace:
    """The fake CIFAR-100, a teacher, and the distill flags every run here shares."""

    def __init__(self, root: Path) -> None:
        self.root = root
        write_cifar100(root / "data", n_train=N_TRAIN, n_test=N_TEST, seed=0)
        # The teacher of the tolerance below (2 x 8 equals 1 x 16 to rtol 1e-4): trained through the DataLoader
        # in NCHW, as before CPU's auto choices changed. A teacher trained on the device-resident path gives
        # students whose 2 x 8 and 1 x 16 weights differ by up to 1.2e-4 (1.5e-6 with this one); see the note.
        outcome = harness.run(["train-teacher", "--model", "resnet8", "--epochs", "1", "--out", "teachers",
                               "--data-dir", "data", "--workers", "0", "--batch-size", "16", "--data-path", "cpu",
                               "--channels-last", "off"], root)
        assert outcome.code == 0, outcome.describe()
        self.teacher = root / "teachers" / "resnet8_cifar100_vanilla_trial-1" / "last.pt"

    def distill(self, method: str, out: str, name: str, *extra: str, batch: int = BATCH) -> list[str]:
        return ["distill", "--teacher", str(self.teacher), "--student", "resnet8", "--method", method,
                "--data-dir", str(self.root / "data"), "--workers", "0", "--batch-size", str(batch), "--epochs", "2",
                "--out", str(self.root / out), "--name", name, *extra]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    harness.warm_imports()
    return Workspace(tmp_path_factory.mktemp("ddp"))


@pytest.fixture(scope="module")
def wrapped(workspace: Workspace) -> dict:
    """One torchrun launch of the wrapper: RRD (batch-independent steps), CRD, CRD stopped by a signal to rank 1
    during its 2nd step, and --sync-bn on CPU (refused); then the bank-update check. Returns the exit codes."""
    root = workspace.root
    spec = [
        {"args": workspace.distill("rrd", "ddp", "rrd", "--nce-k", "32", "--lr", "0.05"),
         "dump": str(root / "dump/rrd"), "deterministic": True},
        {"args": workspace.distill("crd", "ddp", "crd", "--nce-k", "16"), "dump": str(root / "dump/crd")},
        {"args": workspace.distill("crd", "ddp", "stopped", "--nce-k", "16"), "dump": str(root / "dump/stopped"),
         "stop_at_step": 2, "log_every": 1},
        {"args": workspace.distill("kd", "ddp", "syncbn", "--sync-bn"), "dump": str(root / "dump/syncbn")},
    ]
    (root / "spec.json").write_text(json.dumps(spec))
    outcome = torchrun([str(CHILD), str(root / "spec.json")], root)
    assert outcome.code == 0, outcome.describe()
    codes = [json.loads((root / f"spec.codes{rank}.json").read_text()) for rank in range(2)]
    return {"codes": codes, "outcome": outcome}


def dumps(root: Path, name: str, stage: str = "main") -> list[dict[str, torch.Tensor]]:
    return [torch.load(root / "dump" / name / f"{stage}_rank{rank}.pt", weights_only=True) for rank in range(2)]


def assert_identical(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    different = [key for key in first if not torch.equal(first[key], second[key])]
    assert not different, f"differ between ranks: {different[:5]}"


def metrics(run_dir: Path) -> list[dict]:
    return harness.metrics(run_dir)


# ---- RRD: every rank identical, and equal to one process with the same global batch -----------------------------
def test_rrd_two_processes_equal_one_process_with_the_global_batch(workspace, wrapped):
    """2 x 8 (lr 0.05, linearly scaled to 0.1) against 1 x 16 at lr 0.1, with batch-independent steps (the
    student's BatchNorm frozen, no augmentation): the same samples make each global step (the sampler strides one
    global order), gradients are averaged over ranks, and the queue receives every rank's keys."""
    assert [codes[0] for codes in wrapped["codes"]] == [0, 0]
    root = workspace.root
    rank0, rank1 = dumps(root, "rrd")
    assert_identical(rank0, rank1)  # weights, heads and the queue are the same on both ranks
    checkpoint = torch.load(root / "ddp/rrd/last.pt", weights_only=True)
    assert all(torch.equal(checkpoint["model"][key], rank0[f"student.{key}"]) for key in checkpoint["model"])
    assert all(torch.equal(value, rank1[f"method.{key}"]) for key, value in checkpoint["method_state"].items())

    single = harness.run(workspace.distill("rrd", "single", "rrd", "--nce-k", "32", "--lr", "0.1", batch=16), root,
                         patch=lambda: ddp_child.install(root / "dump/rrd_single", deterministic=True))
    assert single.code == 0, single.describe()
    alone = torch.load(root / "dump/rrd_single/main_rank0.pt", weights_only=True)
    for key, value in alone.items():
        if key == "method.queue":
            continue
        assert torch.allclose(rank0[key].double(), value.double(), rtol=1e-4, atol=1e-5), key
    assert torch.equal(rank0["method.embed_t.weight"], alone["method.embed_t.weight"])  # never trained, either way
    # The queue holds the last global batches; all_gather orders each as [rank 0's 8, rank 1's 8], i.e. global
    # positions 0, 2, ..., 14, 1, 3, ..., 15 of the single process's batch.
    order = list(range(0, 16, 2)) + list(range(1, 16, 2))
    queue, queue_alone = rank0["method.queue"], alone["method.queue"]
    blocks = queue.shape[0] // 16
    assert torch.allclose(queue.view(blocks, 16, -1), queue_alone.view(blocks, 16, -1)[:, order], atol=1e-5)
    # The logged numbers are over the whole (global) batch and test set.
    ddp_log, single_log = metrics(root / "ddp/rrd"), metrics(root / "single/rrd")
    assert [r["epoch"] for r in ddp_log] == [1, 2]
    for ours, theirs in zip(ddp_log, single_log):
        assert ours["lr"] == pytest.approx(theirs["lr"]) == pytest.approx(0.1)
        for key in ("train_loss", "loss_rrd", "test_loss", "test_acc", "test_acc_top5"):
            assert ours[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-6), key


def test_config_records_world_size_global_batch_and_effective_lr(workspace, wrapped):
    config = json.loads((workspace.root / "ddp/rrd/config.json").read_text())
    assert (config["world_size"], config["global_batch_size"], config["batch_size"]) == (2, 16, 8)
    assert (config["lr"], config["effective_lr"], config["lr_scaling"]) == (0.05, pytest.approx(0.1), "linear")


# ---- CRD: the memory bank ---------------------------------------------------------------------------------------
def test_crd_bank_and_weights_identical_on_both_ranks(workspace, wrapped):
    """Contrast rows are drawn per rank, so a CRD run is not compared with one process; what must hold is that
    every rank ends with the same bank, normalisers, heads and student (and rank 0 saved exactly that)."""
    assert [codes[1] for codes in wrapped["codes"]] == [0, 0]
    rank0, rank1 = dumps(workspace.root, "crd")
    assert_identical(rank0, rank1)
    checkpoint = torch.load(workspace.root / "ddp/crd/last.pt", weights_only=True)
    assert torch.equal(checkpoint["method_state"]["contrast.memory_v1"], rank1["method.contrast.memory_v1"])
    assert torch.equal(checkpoint["method_state"]["contrast.memory_v2"], rank1["method.contrast.memory_v2"])
    # Every sample passed through a rank in 2 epochs, so every row was written (written rows have unit norm, the
    # uniform initial rows do not): both ranks wrote both ranks' samples.
    for key in ("method.contrast.memory_v1", "method.contrast.memory_v2"):
        assert (rank0[key].norm(dim=1) - 1).abs().max() < 1e-4


def test_crd_bank_update_equals_one_process_update_of_the_gathered_batch(workspace, wrapped):
    ranks = [torch.load(workspace.root / "dump" / f"bank_rank{rank}.pt", weights_only=True) for rank in range(2)]
    assert_identical(ranks[0]["state"], ranks[1]["state"])
    inputs = [torch.cat([ranks[0]["inputs"][i], ranks[1]["inputs"][i]]) for i in range(4)]
    torch.manual_seed(0)
    alone = ContrastMemory(feat_dim=4, n_data=10, nce_k=3, nce_t=0.07, nce_m=0.5)
    out_s, out_t = alone(*inputs)
    for key, value in alone.state_dict().items():
        assert torch.allclose(ranks[0]["state"][key], value, rtol=1e-6, atol=1e-7), key
    assert torch.allclose(torch.cat([ranks[0]["out"][0], ranks[1]["out"][0]]), out_s, rtol=1e-5)
    assert torch.allclose(torch.cat([ranks[0]["out"][1], ranks[1]["out"][1]]), out_t, rtol=1e-5)


# ---- stop on one rank, resume in one process -------------------------------------------------------------------
def test_signal_to_one_rank_stops_all_and_a_one_process_resume_continues_exactly(workspace, wrapped):
    """Rank 1 alone gets SIGTERM in its 2nd step: both ranks stop after that step; the checkpoint's 2 per-rank
    steps are 32 samples of the epoch's global order, which a 1 x 16 resume skips (2 steps of its own)."""
    root = workspace.root
    assert [codes[2] for codes in wrapped["codes"]] == [2, 2]
    checkpoint = torch.load(root / "ddp/stopped/last.pt", weights_only=True)
    assert (checkpoint["epoch"], checkpoint["step_in_epoch"], checkpoint["samples_in_epoch"]) == (0, 2, 32)
    assert (checkpoint["world_size"], checkpoint["batch_size"], len(checkpoint["rng_per_rank"])) == (2, 8, 2)
    assert checkpoint["partial"][2] == 32  # the epoch's running sums are over both ranks
    before = [torch.load(root / "dump/stopped" / f"indices_rank{rank}.pt") for rank in range(2)]
    assert [len(steps) for steps in before] == [2, 2]

    resumed = harness.run([*workspace.distill("crd", "ddp", "stopped", "--nce-k", "16", batch=16), "--resume"], root,
                          patch=lambda: ddp_child.install(root / "dump/resumed"))
    assert resumed.code == 0, resumed.describe()
    assert "from main epoch 0, step 2 of epoch 1" in resumed.stderr
    assert "written by 2 process(es) x batch 8; continuing with 1 x 16" in resumed.stderr
    after = torch.load(root / "dump/resumed/indices_rank0.pt")
    assert [len(batch) for batch in after] == [16] * (2 + STEPS_PER_EPOCH)  # the rest of epoch 1, then epoch 2
    epoch_1 = torch.cat([*before[0], *before[1], *after[:2]])
    assert sorted(epoch_1.tolist()) == list(range(N_TRAIN))  # every sample exactly once in the resumed epoch
    assert [r["epoch"] for r in metrics(root / "ddp/stopped")] == [1, 2]
    assert json.loads((root / "ddp/stopped/summary.json").read_text())["status"] == "finished"


def test_sync_bn_on_cpu_is_refused_on_every_rank(wrapped):
    assert [codes[3] for codes in wrapped["codes"]] == [2, 2]
    stderr = wrapped["outcome"].stderr
    assert stderr.count("distillers: error: --sync-bn is not supported on cpu") == 2, stderr[-3000:]


# ---- the real command line -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cli_run(workspace: Workspace) -> tuple[harness.Outcome, Path]:
    outcome = torchrun(["-m", "distillers", *workspace.distill("crd", "cli", "crd", "--nce-k", "16", "--epochs", "1")],
                       workspace.root)
    return outcome, workspace.root / "cli" / "crd"


def test_torchrun_cli_rank_0_alone_writes_the_run(cli_run):
    outcome, run_dir = cli_run
    assert outcome.code == 0, outcome.describe()
    assert outcome.stdout.count("crd resnet8 -> resnet8 finished") == 1
    assert sorted(path.name for path in run_dir.iterdir()) == ["best.pt", "config.json", "last.pt", "metrics.jsonl",
                                                                "summary.json", "tensorboard"]
    assert len(list((run_dir / "tensorboard").iterdir())) == 1  # one event file: rank 1 opened no writer
    assert [r["epoch"] for r in metrics(run_dir)] == [1]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["epochs_done"] == 1


def test_torchrun_cli_evaluation_counts_each_test_image_once(cli_run):
    """The logged test numbers equal a one-process evaluation of the saved model over the 31 test images (a padded
    evaluation would score 32, one of them twice)."""
    _, run_dir = cli_run
    logged = metrics(run_dir)[-1]
    alone = evaluate_checkpoint(str(run_dir / "last.pt"), "cifar100", str(run_dir.parents[1] / "data"),
                                batch_size=BATCH, device="cpu", workers=0)
    assert logged["test_acc"] == pytest.approx(alone["test_acc"], abs=1e-9)
    assert logged["test_acc_top5"] == pytest.approx(alone["test_acc_top5"], abs=1e-9)
    assert logged["test_loss"] == pytest.approx(alone["test_loss"], rel=1e-6)
    assert round(alone["test_acc_top5"] * N_TEST / 100) * 100 / N_TEST == pytest.approx(alone["test_acc_top5"])


def test_torchrun_cli_run_resumes_in_one_process(workspace, cli_run):
    _, run_dir = cli_run
    resumed = harness.run([*workspace.distill("crd", "cli", "crd", "--nce-k", "16"), "--resume"], workspace.root)
    assert resumed.code == 0, resumed.describe()
    assert "written by 2 process(es) x batch 8; continuing with 1 x 8" in resumed.stderr
    log = metrics(run_dir)
    assert [r["epoch"] for r in log] == [1, 2]
    assert log[1]["lr"] == pytest.approx(0.05)  # linear scaling follows the world size of the resumed run


# ---- the conversion itself -------------------------------------------------------------------------------------
def test_resume_step_converts_through_samples_consumed():
    saved = {"stage": "main", "epoch": 3, "step_in_epoch": 5, "samples_in_epoch": 5 * 8 * 4, "world_size": 4,
             "batch_size": 8, "rng": {"r": 0}, "rng_per_rank": [{"r": rank} for rank in range(4)]}
    assert resume_step(saved, 4, 8) == 5  # same layout: as saved
    assert resume_step(saved, 1, 32) == 5  # same global batch
    assert resume_step(saved, 2, 8) == 10  # half the processes: twice the steps
    assert resume_step(saved, 1, 48) == 3  # 160 samples: 3 full global batches of 48, the rest is trained again
    assert progress_from(saved, "main", DistInfo(2, 4, 2), 8).rng == {"r": 2}  # each rank its own RNG stream
    assert progress_from(saved, "main", DistInfo(0, 2, 0), 8).rng is None  # another layout: fresh epoch seeds
    legacy = {"stage": "main", "epoch": 1, "step_in_epoch": 3, "rng": {"r": 9}}  # before DDP: one process
    assert (progress_from(legacy, "main", DistInfo(), 16).step, progress_from(legacy, "main").rng) == (3, {"r": 9})
