"""The offline quickstart runs the real tasks on scikit-learn's digits and prints what it measured."""

from __future__ import annotations

import json

import pytest

from distillers.errors import UserError
from distillers.tasks.quickstart import QuickstartPlan, _refuse_foreign_runs, quickstart


def test_quickstart_trains_all_four_and_prints_the_measured_table(tmp_path, capsys):
    plan = QuickstartPlan(teacher="resnet8", student="resnet8", teacher_epochs=1, student_epochs=1, seeds=(0,))
    table = quickstart(str(tmp_path / "qs"), plan)
    labels = [label for label, _ in table]
    assert labels == ["teacher resnet8", "student resnet8 alone", "student + KD", "student + ICD"]
    printed = capsys.readouterr().out
    # Every number in the table is the one its run directory recorded.
    runs = {"student resnet8 alone": "student_seed0", "student + KD": "kd_seed0", "student + ICD": "icd_seed0"}
    for label, run in runs.items():
        summary = json.loads((tmp_path / "qs" / run / "summary.json").read_text())
        assert dict(table)[label] == [summary["last_acc"]]
        assert f"{summary['last_acc']:.2f}" in printed
    config = json.loads((tmp_path / "qs" / "kd_seed0" / "config.json").read_text())
    assert config["dataset"] == "digits" and config["method"] == "kd" and config["trial"] == 1
    assert "quickstart finished in" in printed


def test_quickstart_replaces_only_its_own_runs(tmp_path):
    ours, theirs, broken = (tmp_path / name for name in ("teacher", "kd_seed0", "icd_seed0"))
    for run, config in ((ours, '{"dataset": "digits"}'), (theirs, '{"dataset": "cifar100"}'), (broken, "{")):
        run.mkdir()
        (run / "config.json").write_text(config)
    (tmp_path / "student_seed0").mkdir()  # empty: nothing to lose
    _refuse_foreign_runs(tmp_path, ["teacher", "student_seed0", "absent"])
    for name in ("kd_seed0", "icd_seed0"):
        with pytest.raises(UserError, match=f"{name} holds something other than a quickstart run"):
            _refuse_foreign_runs(tmp_path, ["teacher", name])


def test_the_lift_line_says_whether_the_seeds_support_the_reading():
    from distillers.tasks.quickstart import lift_line

    teacher = ("teacher resnet20", [99.0])
    clear = [teacher, ("alone", [80.0, 81.0]), ("student + KD", [90.0, 91.0]), ("student + ICD", [94.0, 95.0])]
    assert lift_line(clear) == ("lift over the student alone (points): KD +10.00 (above it in 2/2 seeds), ICD +14.00 "
                                "(above it in 2/2 seeds); larger than the largest seed std 0.71")
    close = [teacher, ("alone", [80.0, 90.0]), ("student + KD", [93.0, 94.0]), ("student + ICD", [94.0, 95.0])]
    assert lift_line(close).endswith("larger than the largest seed std 7.07; the methods' order is within that "
                                     "spread: do not read a winner")
    noisy = [teacher, ("alone", [70.0, 90.0]), ("student + KD", [85.0, 86.0]), ("student + ICD", [94.0, 95.0])]
    assert "KD +5.50 (above it in 1/2 seeds)" in lift_line(noisy)
    assert "ICD +14.50 (above it in 2/2 seeds); NOT larger than the largest seed std 14.14" in lift_line(noisy)
