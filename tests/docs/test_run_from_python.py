"""The library page's example: examples/run_from_python.py runs a distillation without the command line."""

from __future__ import annotations

import json
from pathlib import Path

from cli.conftest import only_child
from distillers import plugins

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "run_from_python.py"


def test_distil_from_python_writes_the_run_the_cli_would(tmp_path: Path, cifar, teacher) -> None:
    example = plugins.load_plugin(str(EXAMPLE))
    summary = example.distil(str(teacher.checkpoint), student="resnet8", method="kd", data_dir=str(cifar.root),
                             out=str(tmp_path), epochs=1, max_steps_per_epoch=2, batch_size=16, device="cpu",
                             workers=0)
    run_dir = only_child(tmp_path)
    assert summary["status"] == "finished" and summary["epochs_done"] == 1
    assert json.loads((run_dir / "summary.json").read_text())["last_acc"] == summary["last_acc"]
    assert json.loads((run_dir / "config.json").read_text())["method"] == "kd"
    assert run_dir.name.startswith("S-resnet8_T-resnet14_cifar100_kd_r-0.1_a-0.9_b-0_trial-1")
