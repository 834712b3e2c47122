"""`distillers sweep`: the grid behind the seed's tables, skipping finished runs and resuming interrupted ones."""

from __future__ import annotations

import json

import pytest

from distillers import cli
from distillers.errors import UserError
from distillers.rundir import distill_run_name
from distillers.sweep import SEED_METHODS, SEED_PAIRS, plan


def test_default_grid_is_the_seed_tables():
    runs = plan(SEED_PAIRS, SEED_METHODS, 3, "save/models", "runs", "cifar100")
    assert len(runs) == 13 * 18 * 3
    names = {run.name for run in runs}
    assert len(names) == len(runs)  # every run has its own directory
    crd_kd = distill_run_name("resnet8x4", "resnet32x4", "cifar100", "crd", 1, 1, 0.8, 2)
    assert crd_kd in names  # CRD+KD = the seed's CRD weights plus -a 1


def test_dry_run_prints_commands_and_skips_finished_runs(tmp_path, capsys):
    out = tmp_path / "runs"
    finished = distill_run_name("resnet8x4", "resnet32x4", "cifar100", "kd", 0.1, 0.9, 0, 1)
    interrupted = distill_run_name("resnet8x4", "resnet32x4", "cifar100", "icd", 1, 1, 1, 1)
    for name, status in ((finished, "finished"), (interrupted, "interrupted")):
        (out / name).mkdir(parents=True)
        (out / name / "summary.json").write_text(json.dumps({"status": status}))
    (out / interrupted / "last.pt").write_bytes(b"checkpoint")
    code = cli.main(["sweep", "--dry-run", "--pairs", "resnet32x4:resnet8x4", "--methods", "kd", "icd+kd", "--trials",
                     "2", "--out", str(out), "--teacher-dir", "teachers", "--", "--epochs", "5"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4
    assert lines[0] == f"[1/4] skip (finished): {finished}"
    expected_kd2 = (f"[2/4] run: distillers distill --teacher teachers/resnet32x4_vanilla/ckpt_epoch_240.pth "
                    f"--student resnet8x4 --method kd -r 0.1 -a 0.9 -b 0 --trial 2 --dataset cifar100 --out {out} "
                    f"--epochs 5")
    assert lines[1] == expected_kd2
    assert lines[2].startswith("[3/4] resume: distillers distill")
    assert "--method icd -r 1 -a 1 -b 1 --trial 1" in lines[2]
    assert lines[2].endswith("--epochs 5 --resume")
    assert lines[3].startswith("[4/4] run: ") and "--trial 2" in lines[3]
    assert not (out / distill_run_name("resnet8x4", "resnet32x4", "cifar100", "kd", 0.1, 0.9, 0, 2)).exists()


def test_bad_grid_entries_are_user_errors():
    with pytest.raises(UserError, match="TEACHER:STUDENT"):
        plan(["resnet32x4-resnet8x4"], ["kd"], 1, "t", "o", "cifar100")
    with pytest.raises(UserError, match="unknown method"):
        plan(["resnet32x4:resnet8x4"], ["kdx"], 1, "t", "o", "cifar100")
    with pytest.raises(UserError, match="METHOD\\+kd"):
        plan(["resnet32x4:resnet8x4"], ["crd+at"], 1, "t", "o", "cifar100")
