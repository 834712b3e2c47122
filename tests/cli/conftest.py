"""Helpers of the end-to-end CLI tests (their tiny CIFAR-100 and teacher fixtures live in ``tests/conftest.py``).

The CLI runs in-process (``distillers.cli.main``), which is much faster than a subprocess per command; only the
entry points themselves (``python -m distillers``, the seed scripts) run as subprocesses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from distillers import cli

N_TRAIN, N_TEST = 128, 32  # 100 classes: about one image per class, enough for CRD's negatives
FAST = ["--workers", "0", "--device", "cpu"]


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(capsys: pytest.CaptureFixture, *argv: str) -> CliResult:
    """``distillers <argv>`` in-process: exit code (argparse's SystemExit included), stdout and stderr."""
    capsys.readouterr()
    try:
        code = cli.main([str(arg) for arg in argv])
    except SystemExit as stop:  # argparse: --help (0) and bad flags (2)
        code = stop.code if isinstance(stop.code, int) else 1
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


def read_run(run_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    """``(config.json, metrics.jsonl records, summary.json)`` of a run directory."""
    config = json.loads((run_dir / "config.json").read_text())
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    summary = json.loads((run_dir / "summary.json").read_text())
    return config, metrics, summary


def only_child(folder: Path) -> Path:
    """The single run directory a command created under ``folder``."""
    children = [path for path in folder.iterdir() if path.is_dir()]
    assert len(children) == 1, f"expected one run directory in {folder}, found {[c.name for c in children]}"
    return children[0]



@dataclass
class Teacher:
    checkpoint: Path
    arch: str
    test_acc: float  # its exact test accuracy on ``cifar``
