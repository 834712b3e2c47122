"""A checkpoint is untrusted input: a pickle that would run code is refused, never executed."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from . import harness


class _RunsCode:
    """Unpickling this runs ``touch <marker>``: the proof that a loader executed the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def write_evil(path: Path, marker: Path, fmt: str) -> Path:
    """A checkpoint-shaped file whose ``model`` entry runs code: torch's zip format or a bare legacy pickle."""
    payload = {"model": {"conv1.weight": _RunsCode(marker)}, "arch": "resnet8"}
    if fmt == "zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    return path


@pytest.fixture(params=["zip", "pickle"])
def evil(request, tmp_path) -> tuple[Path, Path]:
    marker = tmp_path / "PWNED"
    pickle.loads(pickle.dumps(_RunsCode(marker)))  # sanity: a plain unpickling does run the code
    assert marker.exists()
    marker.unlink()
    return write_evil(tmp_path / "evil.pth", marker, request.param), marker


def test_distill_refuses_code_running_teacher(assets, evil, tmp_path):
    path, marker = evil
    outcome = harness.run(["distill", "--teacher", str(path), "--student", "resnet8", "--method", "kd",
                           "--out", "runs", *assets.flags()], tmp_path)
    harness.assert_user_error(outcome, f"refusing to load {path}", "could run code")
    assert not marker.exists()
    assert not (tmp_path / "runs").exists()


def test_eval_refuses_code_running_checkpoint(assets, evil, tmp_path):
    path, marker = evil
    outcome = harness.run(["eval", "--ckpt", str(path), "--data-dir", str(assets.data_dir), "--workers", "0"],
                          tmp_path)
    harness.assert_user_error(outcome, f"refusing to load {path}", "could run code")
    assert not marker.exists()


def test_console_script_refuses_code_running_checkpoint(assets, tmp_path):
    """The same refusal from the installed entry point, in a fresh interpreter."""
    marker = tmp_path / "PWNED"
    path = write_evil(tmp_path / "evil.pth", marker, "zip")
    outcome = harness.finish(harness.start_console_script(["export", "--ckpt", str(path)], tmp_path))
    harness.assert_user_error(outcome, f"refusing to load {path}", "posix.system")
    assert not marker.exists() and not path.with_suffix(".safetensors").exists()


def test_export_safetensors_holds_identical_tensors(assets, tmp_path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    target = tmp_path / "teacher.safetensors"
    outcome = harness.run(["export", "--ckpt", str(assets.teacher), "--format", "safetensors", "--out",
                           str(target)], tmp_path)
    assert outcome.code == 0, outcome.describe()
    assert outcome.stdout.strip() == f"wrote {target}"
    exported = load_file(target)
    original = torch.load(assets.teacher, weights_only=True)["model"]
    assert exported.keys() == original.keys()
    for key, tensor in original.items():
        assert exported[key].dtype == tensor.dtype and torch.equal(exported[key], tensor), key
    with safe_open(target, "pt") as handle:
        assert handle.metadata()["arch"] == '"resnet8"'
