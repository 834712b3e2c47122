"""The transfer table: linear-probe runs grouped by how their source network was trained, per target dataset."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from distillers.reporting import collect, write_report
from distillers.reporting.transfer import transfer_markdown


def _run(root: Path, name: str, config: dict, last_acc: float | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(config))
    if last_acc is not None:
        (folder / "summary.json").write_text(json.dumps({"status": "finished", "epochs": 120, "epochs_done": 120,
                                                         "last_acc": last_acc, "best_acc": last_acc + 1}))
    return folder


def test_transfer_table_from_run_directories(tmp_path):
    crd_kd = _run(tmp_path, "crd_kd", {"task": "distill", "method": "crd", "student": "wrn_16_2",
                                      "teacher": "wrn_40_2", "weights": {"gamma": 1, "alpha": 1, "beta": 0.8}})
    alone = _run(tmp_path, "alone", {"task": "teacher", "model": "wrn_16_2"})
    probes = [("crd_stl_1", crd_kd, "stl10", 71.0), ("crd_stl_2", crd_kd, "stl10", 72.0),
              ("crd_tiny_1", crd_kd, "tinyimagenet", 35.5), ("alone_stl_1", alone, "stl10", 69.0)]
    for name, source, dataset, acc in probes:
        _run(tmp_path, name, {"task": "transfer", "model": "wrn_16_2", "dataset": dataset,
                              "student_path": str(source / "last.pt")}, acc)
    _run(tmp_path, "unfinished", {"task": "transfer", "model": "wrn_16_2", "dataset": "stl10",
                                  "student_path": str(crd_kd / "last.pt")})
    text = transfer_markdown(collect([tmp_path]), "last", published=True)
    lines = text.splitlines()
    assert lines[2] == "| Network (how it was trained) | CIFAR-100 → STL-10 | CIFAR-100 → Tiny ImageNet |"
    stl_std = statistics.stdev([71.0, 72.0])
    assert f"| CRD+KD | 71.50 ± {stl_std:.2f} (2) [paper 72.2] | 35.50 (1) [paper 35.5] |" in lines
    assert "| wrn_16_2 alone | 69.00 (1) [paper —] | — [paper —] |" in lines
    # The whole report puts it under the distillation table (here one unfinished distill run, so one empty column).
    report = write_report([tmp_path], "markdown", metric="last")
    assert report.startswith("### CIFAR-100") and report.endswith(transfer_markdown(collect([tmp_path]), "last"))
    best = transfer_markdown(collect([tmp_path]), "best")
    assert "best epoch" in best and "72.50 ± " in best


def test_report_of_transfer_runs_alone_is_the_transfer_table(tmp_path):
    source = _run(tmp_path / "students", "icd", {"task": "distill", "method": "icd", "student": "resnet8x4",
                                                 "teacher": "resnet32x4", "weights": {"gamma": 1, "alpha": 0,
                                                                                       "beta": 1}}, 74.0)
    _run(tmp_path / "probes", "p1", {"task": "transfer", "model": "resnet8x4", "dataset": "stl10",
                                     "student_path": str(source / "last.pt")}, 70.25)
    report = write_report([tmp_path / "probes"], "markdown")
    assert report == transfer_markdown(collect([tmp_path / "probes"]), "last")
    assert "| ICD | 70.25 (1) |" in report
