"""Files written atomically (temp file + rename) get the permissions a plain ``open()`` gives under the umask.

``tempfile.mkstemp`` alone makes every such file 0600, so a lab mate could not read a shared checkpoint or summary.
The whole command runs under the umask set here (a forked child inherits it).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from distillers.engine.checkpoint import save_checkpoint
from distillers.rundir import write_json_atomic

from . import harness


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def test_atomic_writers_follow_the_umask(umask, tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")  # what open() gives: the reference
    write_json_atomic(tmp_path / "summary.json", {"a": 1})
    save_checkpoint({"model": {"w": torch.zeros(2)}}, tmp_path / "last.pt")
    assert mode_of(plain) == 0o666 & ~umask
    assert mode_of(tmp_path / "summary.json") == mode_of(plain)
    assert mode_of(tmp_path / "last.pt") == mode_of(plain)


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_a_finished_run_and_its_export_are_readable_as_the_umask_says(assets, tmp_path, mask):
    previous = os.umask(mask)
    try:
        outcome = harness.run(["train-teacher", "--model", "resnet8", "--epochs", "2", "--save-freq", "1",
                               "--name", "run", "--out", "runs", *assets.flags()], tmp_path)
        assert outcome.code == 0, outcome.describe()
        run_dir = tmp_path / "runs" / "run"
        exported = harness.run(["export", "--ckpt", str(run_dir / "best.pt"), "--out", "best.safetensors"], tmp_path)
        assert exported.code == 0, exported.describe()
    finally:
        os.umask(previous)
    expected = 0o666 & ~mask  # 0644 under 022, 0600 under 077
    files = ["config.json", "summary.json", "metrics.jsonl", "last.pt", "best.pt", "ckpt_epoch_1.pt",
             "ckpt_epoch_2.pt"]
    assert {name: oct(mode_of(run_dir / name)) for name in files} == {name: oct(expected) for name in files}
    assert oct(mode_of(tmp_path / "best.safetensors")) == oct(expected)
