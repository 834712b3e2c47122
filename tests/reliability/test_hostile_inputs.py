"""A hostile pass over every subcommand: each bad input ends in exit code 2, one ``distillers: error:`` line, no
traceback, and no file created, changed or deleted (the whole workspace is hashed before and after).

These go through the real command line (``harness.run``), so they hold whatever module a command lives in.
``pytest -s tests/reliability/test_hostile_inputs.py`` prints the line a user sees for each case.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from . import harness
from .test_bad_inputs import Context

Case = Callable[[Context], tuple[list[str], tuple[str, ...]]]  # -> (argv, fragments the error line must hold)


def distill_run(ctx: Context, folder: str) -> Path:
    """A finished distillation run directory as the engine writes it (what ``report`` reads)."""
    run = ctx.workspace / folder / "S-resnet8_T-resnet14_cifar100_kd_r-0.1_a-0.9_b-0_trial-1"
    run.mkdir(parents=True)
    config = {"task": "distill", "student": "resnet8", "teacher": "resnet14", "method": "kd", "dataset": "cifar100",
              "weights": {"gamma": 0.1, "alpha": 0.9, "beta": 0.0}, "trial": 1, "protocol": "crd", "epochs": 1}
    (run / "config.json").write_text(json.dumps(config))
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 1, "test_acc": 50.0, "test_acc_top5": 90.0}) + "\n")
    (run / "summary.json").write_text(json.dumps({"status": "finished", "last_acc": 50.0, "best_acc": 50.0,
                                                  "epochs": 1, "epochs_done": 1, "best_epoch": 1}))
    return ctx.workspace / folder


def corrupt_runs(ctx: Context) -> Path:
    """A folder of runs whose config.json was cut short."""
    run = ctx.workspace / "broken" / "run1"
    run.mkdir(parents=True)
    (run / "config.json").write_text('{"task": "distill", "method": ')
    (run / "summary.json").write_text("{")
    return run.parent


def non_tensor_weights(ctx: Context) -> Path:
    path = ctx.workspace / "odd.pt"
    torch.save({"model": {"conv.weight": 1, "arch": "resnet8"}}, path)
    return path


def foreign_teacher_folder(ctx: Context) -> Path:
    """A user's folder with a run named ``teacher`` that is not the quickstart's (a CIFAR-100 run)."""
    out = ctx.workspace / "mine"
    run = out / "teacher"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"task": "teacher", "dataset": "cifar100", "model": "resnet32x4"}))
    (run / "last.pt").write_bytes(b"months of GPU time")
    return out


def truncated(ctx: Context) -> Path:
    data = ctx.assets.teacher.read_bytes()
    return ctx.file("half.pt", data[: len(data) // 3])


def data(ctx: Context) -> list[str]:
    return ["--data-dir", str(ctx.assets.data_dir), "--workers", "0"]


TINY_BENCH = ["--pairs", "resnet8:resnet8:kd", "--steps", "1", "--warmup", "0", "--batch-size", "8",
              "--num-images", "16", "--device", "cpu"]

CASES: dict[str, Case] = {
    # report
    "report-corrupt-json": lambda c: (["report", str(corrupt_runs(c))], ("config.json is not valid JSON",
                                                                           "fix or remove that run")),
    "report-a-file": lambda c: (["report", str(c.file("notes.txt", b"x"))], ("is a file, not a run directory",)),
    "report-empty-folder": lambda c: (["report", str(c.file("empty/.keep", b"").parent)],
                                      ("no run directories (with config.json)",)),
    "report-out-is-a-folder": lambda c: (["report", str(distill_run(c, "dist")), "--out", "runs"],
                                         ("--out runs is a folder", "name the file")),
    "report-plots-onto-a-file": lambda c: (["report", str(distill_run(c, "dist")), "--plots",
                                            str(c.file("notes.txt", b"x"))], ("--plots", "is a file")),
    # export
    "export-not-a-checkpoint": lambda c: (["export", "--ckpt", str(c.file("notes.txt", b"just text\n"))],
                                          ("notes.txt is not a PyTorch checkpoint",)),
    "export-onto-an-existing-file": lambda c: (
        ["export", "--ckpt", "runs/finished/last.pt", "--out", str(c.file("model.safetensors", b"keep me"))],
        ("model.safetensors already exists", "--overwrite")),
    "export-onto-the-checkpoint": lambda c: (["export", "--ckpt", "runs/finished/last.pt", "--out",
                                              "runs/finished/last.pt", "--overwrite"], ("is the checkpoint itself",)),
    "export-into-a-missing-folder": lambda c: (["export", "--ckpt", "runs/finished/last.pt", "--out",
                                                "no/such/dir/m.safetensors"], ("folder no/such/dir does not exist",)),
    "export-non-tensor-weights": lambda c: (["export", "--ckpt", str(non_tensor_weights(c)), "--out", "o.st"],
                                            ("holds no tensors to export", "conv.weight")),
    # eval
    "eval-truncated-checkpoint": lambda c: (["eval", "--ckpt", str(truncated(c)), *data(c)],
                                            ("half.pt is a damaged checkpoint",)),
    "eval-negative-workers": lambda c: (["eval", "--ckpt", str(c.assets.teacher), "--workers", "-1"],
                                        ("--workers: must be >= 0, got -1",)),
    # bench
    "bench-zero-steps": lambda c: (["bench", "--steps", "0"], ("--steps: must be positive, got 0",)),
    "bench-unknown-model": lambda c: (["bench", "--pairs", "resnet99:resnet8", "--device", "cpu"],
                                      ("unknown model 'resnet99'",)),
    "bench-pair-without-colon": lambda c: (["bench", "--pairs", "resnet8", "--device", "cpu"],
                                           ("cannot read the pair 'resnet8'",)),
    "bench-negative-workers": lambda c: (["bench", *TINY_BENCH, "--workers", "-1"], ("--workers: must be >= 0",)),
    "bench-json-into-a-missing-folder": lambda c: (["bench", *TINY_BENCH, "--json", "nowhere/rows.json"],
                                                   ("--json nowhere/rows.json: folder nowhere does not exist",)),
    # analyze
    "analyze-missing-teacher": lambda c: (["analyze", "--teacher", "gone.pt", "--student", str(c.assets.teacher),
                                           "--data-dir", str(c.assets.data_dir), "--device", "cpu"],
                                          ("checkpoint not found: gone.pt",)),
    "analyze-out-is-a-file": lambda c: (["analyze", "--teacher", str(c.assets.teacher), "--student",
                                         str(c.assets.teacher), "--data-dir", str(c.assets.data_dir), "--device",
                                         "cpu", "--out", str(c.file("notes.txt", b"x"))],
                                        ("cannot hold the plots", "is a file")),
    # fetch-teachers (nothing here may reach the network)
    "fetch-unknown-teacher": lambda c: (["fetch-teachers", "resnet99", "--save-dir", "save"],
                                        ("unknown teacher 'resnet99'", "resnet32x4")),
    "fetch-save-dir-is-a-file": lambda c: (["fetch-teachers", "resnet8", "--file", str(c.assets.teacher),
                                            "--save-dir", str(c.file("notes.txt", b"x"))],
                                           ("--save-dir", "is a file")),
    "fetch-file-not-a-checkpoint": lambda c: (["fetch-teachers", "resnet56", "--file", str(c.file("t.pth", b"no")),
                                               "--save-dir", "save"], ("could not fetch teacher(s) resnet56",
                                                                       "t.pth is not a PyTorch checkpoint")),
    # sweep
    "sweep-pair-without-colon": lambda c: (["sweep", "--pairs", "resnet32x4", "--dry-run"],
                                           ("--pairs takes TEACHER:STUDENT",)),
    "sweep-unknown-method": lambda c: (["sweep", "--pairs", "resnet14:resnet8", "--methods", "kdx", "--dry-run"],
                                       ("unknown method 'kdx'",)),
    "sweep-unknown-model": lambda c: (["sweep", "--pairs", "resnet99:resnet8", "--dry-run"],
                                      ("unknown model 'resnet99'",)),
    # list, quickstart
    "sweep-out-is-a-file": lambda c: (["sweep", "--pairs", "resnet14:resnet8", "--methods", "kd", "--trials", "1",
                                       "--out", str(c.file("notes.txt", b"x"))],
                                      ("notes.txt is a file; choose another --out",)),
    "list-unknown-kind": lambda c: (["list", "teachers"], ("invalid choice: 'teachers'",)),
    "quickstart-over-a-foreign-run": lambda c: (["quickstart", "--out", str(foreign_teacher_folder(c))],
                                                ("holds something other than a quickstart run",
                                                 "choose another --out")),
    "quickstart-out-is-a-file": lambda c: (["quickstart", "--out", str(c.file("notes.txt", b"x"))],
                                           ("cannot write the run directory", "Not a directory")),
    # transfer and the training flags every task shares
    "transfer-not-a-checkpoint": lambda c: (["transfer", "--student-ckpt", str(c.file("s.pt", b"text")), "--out",
                                             "runs", *data(c)], ("s.pt is not a PyTorch checkpoint",)),
    "transfer-unsorted-decay": lambda c: (["transfer", "--student-ckpt", str(c.assets.teacher), "--out", "runs",
                                           "--lr-decay-epochs", "90,30,60", *data(c)],
                                          ("--lr-decay-epochs must be increasing", "did you mean 30,60,90?")),
    "lr-infinite": lambda c: (c.teacher("--lr", "inf"), ("--lr must be a finite number, got inf",)),
    "weight-decay-nan": lambda c: (c.teacher("--weight-decay", "nan"), ("--weight-decay must be a finite number",)),
    "alpha-nan": lambda c: (c.distill(None, "kd", "-a", "nan"), ("-a/--alpha must be a finite number, got nan",)),
    "temperature-infinite": lambda c: (c.distill(None, "kd", "--kd-T", "inf"), ("--kd-T must be a finite number",)),
    "crd-momentum-above-one": lambda c: (c.distill(None, "crd", "--nce-m", "2"), ("--nce-m", "between 0 and 1")),
    "run-name-escapes-out": lambda c: (c.teacher("--name", "../escaped"), ("--name '../escaped' cannot be part",)),
    "trial-with-a-slash": lambda c: (c.teacher("--trial", "a/b"), ("--trial 'a/b' cannot be part",)),
    "negative-save-freq": lambda c: (c.teacher("--save-freq", "-1"), ("--save-freq must be >= 0",)),
}


@pytest.mark.parametrize("name", CASES)
def test_hostile_input_is_refused_cleanly(assets, workspace, name):
    ctx = Context(assets, workspace)
    args, fragments = CASES[name](ctx)
    before = harness.snapshot(workspace)
    outcome = harness.run(args, workspace)
    harness.assert_user_error(outcome, *fragments)
    assert harness.snapshot(workspace) == before  # nothing created, changed or deleted


def test_export_overwrite_replaces_only_when_asked(assets, workspace):
    """The refusal above has a way out: --overwrite replaces the file, atomically, with the checkpoint's tensors."""
    from safetensors.torch import load_file

    target = workspace / "model.safetensors"
    target.write_bytes(b"old")
    outcome = harness.run(["export", "--ckpt", "runs/finished/last.pt", "--out", str(target), "--overwrite"],
                          workspace)
    assert outcome.code == 0, outcome.describe()
    weights = torch.load(workspace / "runs" / "finished" / "last.pt", weights_only=True)["model"]
    assert load_file(target).keys() == weights.keys()
    assert not [path for path in workspace.iterdir() if path.name.startswith(".model.safetensors")]
