"""One test per bad input: exit code 2, one clear ``distillers: error: ...`` line, and nothing saved is touched.

Every case runs in a workspace whose ``runs/finished`` holds a finished run; the whole workspace is hashed
before and after the command, so "nothing lost or overwritten" (and "no stray run directory") is checked too.
A read-only run directory cannot be made with permission bits here (the tests run as root, which ignores them):
the cases use a path below a regular file (``--out notes.txt/runs``: ENOTDIR) and one inside ``/proc``.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from . import harness


@dataclass
class Context:
    assets: object  # conftest.Assets
    workspace: Path

    def teacher(self, *extra: str, model: str = "resnet8") -> list[str]:
        return ["train-teacher", "--model", model, "--epochs", "1", "--out", "runs", *self.assets.flags(), *extra]

    def distill(self, teacher: str | Path | None = None, method: str = "kd", *extra: str) -> list[str]:
        return ["distill", "--teacher", str(teacher or self.assets.teacher), "--student", "resnet8", "--method", method,
                "--epochs", "1", "--out", "runs", *self.assets.flags(), *extra]

    def file(self, name: str, content: bytes) -> Path:
        path = self.workspace / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        return path


Case = Callable[[Context], tuple[list[str], tuple[str, ...]]]  # -> (argv, fragments the error line must hold)


def truncated_teacher(ctx: Context) -> Path:
    data = ctx.assets.teacher.read_bytes()
    return ctx.file("truncated.pth", data[: len(data) // 2])


def bare_state_dict(ctx: Context) -> Path:
    """A teacher that records no architecture, in a folder whose name is no model's."""
    state = torch.load(ctx.assets.teacher, weights_only=True)["model"]
    path = ctx.workspace / "mystery" / "weights.pth"
    path.parent.mkdir()
    torch.save(state, path)
    return path


def corrupt_dataset(ctx: Context) -> Path:
    """A copy of the CIFAR-100 folder whose training pickle was cut short."""
    root = ctx.workspace / "corrupt-data"
    shutil.copytree(ctx.assets.data_dir / "cifar-100-python", root / "cifar-100-python")
    train = root / "cifar-100-python" / "train"
    train.write_bytes(train.read_bytes()[:5000])
    return root


CASES: dict[str, Case] = {
    # names
    "unknown-model": lambda c: (c.teacher(model="resnet9"), ("unknown model 'resnet9'", "choose one of:", "resnet8")),
    "unknown-student": lambda c: ([*c.distill()[:4], "resnet9", *c.distill()[5:]],
                                  ("unknown model 'resnet9'", "wrn_40_2")),
    "unknown-dataset": lambda c: (c.teacher("--dataset", "cifar1000"),
                                  ("unknown dataset 'cifar1000'", "choose one of:", "cifar100")),
    "unknown-method": lambda c: (c.distill(None, "kdx"), ("unknown method 'kdx'", "choose one of:", "crd")),
    # checkpoints
    "checkpoint-missing": lambda c: (c.distill("missing.pth"), ("checkpoint not found: missing.pth",)),
    "checkpoint-is-a-directory": lambda c: (c.distill("runs"), ("checkpoint path is a directory", "runs")),
    "not-a-checkpoint": lambda c: (c.distill(c.file("notes.pth", b"hello, not weights\n")),
                                   ("notes.pth is not a PyTorch checkpoint",)),
    "truncated-checkpoint": lambda c: (c.distill(truncated_teacher(c)),
                                       ("truncated.pth is a damaged checkpoint (truncated or corrupt",
                                        "save or download it again")),
    "checkpoint-without-weights": lambda c: (c.distill(_save(c, "epoch.pth", {"epoch": 3})),
                                             ("epoch.pth is not a model checkpoint", "'model'")),
    "checkpoint-of-another-architecture": lambda c: (
        ["eval", "--ckpt", str(c.assets.teacher), "--model", "wrn_16_1", "--data-dir", str(c.assets.data_dir),
         "--workers", "0"], ("does not hold a wrn_16_1 model", "missing: ", "unexpected: ")),
    "teacher-arch-differs-from-file": lambda c: (c.distill(None, "kd", "--teacher-arch", "resnet14"),
                                                 ("does not hold a resnet14 model", "missing: layer1.1.conv1.weight")),
    "teacher-arch-unknowable": lambda c: (c.distill(bare_state_dict(c)), ("cannot tell the architecture",)),
    "teacher-trained-on-other-classes": lambda c: (c.distill(c.assets.teacher_cifar10),
                                                   ("trained on 10 classes but the dataset has 100",)),
    # objective and method settings
    "all-weights-zero": lambda c: (c.distill(None, "kd", "-r", "0", "-a", "0", "-b", "0"),
                                   ("-r, -a and -b are all 0",)),
    "nce-k-larger-than-dataset": lambda c: (c.distill(None, "crd", "--nce-k", "100000"),
                                            ("nce_k=100000 is larger than the", "negatives available", "or less")),
    "rrd-batch-does-not-divide-queue": lambda c: (c.distill(None, "rrd", "--nce-k", "40"),
                                                  ("--nce_k (40) to be a multiple of the batch size (16)",)),
    "negative-init-epochs": lambda c: (c.distill(None, "fsp", "--init-epochs=-1"), ("--init-epochs", "-1")),
    "negative-workers": lambda c: (c.teacher("--workers=-1"), ("--workers must be >= 0",)),
    "cuda-unavailable": lambda c: (c.teacher("--device", "cuda"), ("--device cuda", "CUDA is not available")),
    # data
    "dataset-missing": lambda c: (c.teacher("--data-dir", "nowhere"), ("CIFAR-100 not found", "--download")),
    "dataset-file-corrupt": lambda c: (c.teacher("--data-dir", str(corrupt_dataset(c))),
                                       ("is not a readable CIFAR batch",)),
    # run directories
    "run-directory-exists": lambda c: (c.teacher("--name", "finished"),
                                       ("runs/finished already holds a run", "--resume", "--overwrite")),
    "resume-with-other-architecture": lambda c: (c.teacher("--name", "finished", "--resume", model="resnet14"),
                                                 ("runs/finished/last.pt does not hold a resnet14 model",)),
    "resume-without-checkpoint": lambda c: (c.teacher("--name", "fresh", "--resume"), ("nothing to resume",)),
    "run-directory-below-a-file": lambda c: (c.teacher("--out", str(c.file("notes.txt", b"x")) + "/runs"),
                                             ("cannot write the run directory", "Not a directory",
                                              "choose another --out")),
    "run-directory-in-proc": lambda c: (c.teacher("--out", "/proc/distillers-runs"),
                                        ("cannot write the run directory /proc/distillers-runs",
                                         "choose another --out")),
}

# Checked by argparse, which prints its usage block and "distillers <command>: error: argument ..." instead of
# the one-line contract; needs the cli.py change described in the report.
ARGPARSE_CASES: dict[str, Case] = {
    f"{flag.strip('-')}={value}": (lambda c, flag=flag, value=value: (c.teacher(f"{flag}={value}"),
                                                                      (flag, "must be positive")))
    for flag, value in (("--epochs", "0"), ("--epochs", "-2"), ("--batch-size", "0"), ("--batch-size", "-16"),
                        ("--lr", "0"), ("--lr", "-0.1"))
}


# Needs the distill.py change described in the report: today the resumed student's load_state_dict raises a
# RuntimeError (a traceback, exit code 1) after the run directory's summary was already rewritten.
DISTILL_RESUME_CASES: dict[str, Case] = {
    "distill-resume-with-other-student": lambda c: (
        [*c.distill()[:4], "resnet14", *c.distill()[5:], "--name", "finished", "--resume"],
        ("runs/finished/last.pt does not hold a resnet14 model",)),
}


def _save(ctx: Context, name: str, payload: dict) -> Path:
    path = ctx.workspace / name
    torch.save(payload, path)
    return path


def check_refused(assets, workspace: Path, case: Case) -> None:
    ctx = Context(assets, workspace)
    args, fragments = case(ctx)
    before = harness.snapshot(workspace)
    outcome = harness.run(args, workspace)
    harness.assert_user_error(outcome, *fragments)
    assert harness.snapshot(workspace) == before  # nothing created, changed or deleted


@pytest.mark.parametrize("name", CASES)
def test_bad_input_is_refused_cleanly(assets, workspace, name):
    check_refused(assets, workspace, CASES[name])


@pytest.mark.parametrize("name", ARGPARSE_CASES)
def test_bad_number_is_refused_cleanly(assets, workspace, name):
    check_refused(assets, workspace, ARGPARSE_CASES[name])


@pytest.mark.parametrize("name", DISTILL_RESUME_CASES)
def test_bad_distill_resume_is_refused_cleanly(assets, workspace, name):
    check_refused(assets, workspace, DISTILL_RESUME_CASES[name])

