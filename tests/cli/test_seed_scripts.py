"""The seed README's commands run unchanged (plus ``--epochs 1`` and a tiny dataset): ``python train_teacher.py``
then ``python train_student.py`` for ICD, ICD+KD and KD, as subprocesses from a fresh working directory, saving
under ``./save/`` as the seed does. The flag mapping itself is checked in-process first (fast)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distillers import cli, seed_compat

from .conftest import read_run

REPO = Path(__file__).resolve().parents[2]
TINY = ["--epochs", "1", "--batch_size", "16", "--num_workers", "0"]


def forwarded(monkeypatch: pytest.MonkeyPatch, entry, argv: list[str]) -> list[str]:
    """The ``distillers`` argv a seed command is translated into (the CLI itself is not run)."""
    calls: list[list[str]] = []
    monkeypatch.setattr(cli, "main", lambda args: calls.append(list(args)) or 0)
    assert entry(argv) == 0
    return calls[0]


def flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_train_student_maps_every_seed_flag(monkeypatch):
    argv = forwarded(monkeypatch, seed_compat.train_student, [
        "--path_t", "save/models/resnet32x4_vanilla/ckpt_epoch_240.pth", "--distill", "crd", "--model_s",
        "resnet8x4", "-a", "0", "-b", "0.8", "--trial", "3", "--data_dir", "/data/c100", "--batch_size", "32",
        "--num_workers", "1", "--epochs", "7", "--learning_rate", "0.1", "--lr_decay_epochs", "3,5",
        "--lr_decay_rate", "0.2", "--weight_decay", "1e-4", "--momentum", "0.8", "--init_epochs", "4", "--kd_T", "3",
        "--feat_dim", "64", "--nce_k", "100", "--nce_t", "0.1", "--nce_m", "0.4", "--nce_t_s", "0.05",
        "--nce_t_t", "0.2", "--mode", "relax", "--hint_layer", "3"])
    assert argv[0] == "distill"
    expected = {"--teacher": "save/models/resnet32x4_vanilla/ckpt_epoch_240.pth", "--method": "crd",
                "--student": "resnet8x4", "-a": "0.0", "-b": "0.8", "--trial": "3", "--data-dir": "/data/c100",
                "--batch-size": "32", "--workers": "1", "--epochs": "7", "--lr": "0.1", "--lr-decay-epochs": "3,5",
                "--lr-decay-rate": "0.2", "--weight-decay": "0.0001", "--momentum": "0.8", "--init-epochs": "4",
                "--kd-T": "3.0", "--feat-dim": "64", "--nce-k": "100", "--nce-t": "0.1", "--nce-m": "0.4",
                "--nce-t-s": "0.05", "--nce-t-t": "0.2", "--mode": "relax", "--hint-layer": "3",
                "--out": "./save/student_model", "-r": "1.0"}
    assert {name: flag(argv, name) for name in expected} == expected
    # ... and the translated command parses into the config those flags mean.
    cfg = cli.run_config(cli.build_parser().parse_args(argv), "distill")
    assert (cfg.gamma, cfg.alpha, cfg.beta) == (1.0, 0.0, 0.8) and cfg.data_dir == "/data/c100"
    assert cfg.method_options.nce_t_s == 0.05 and cfg.method_options.mode == "relax" and cfg.lr_decay_epochs == (3, 5)


def test_train_student_r_defaults_to_the_seeds_1(monkeypatch):
    """The seed's ``-r`` default is 1 for every method, KD included (its run script passes ``-r 0.1`` explicitly)."""
    argv = forwarded(monkeypatch, seed_compat.train_student, ["--path_t", "t.pth", "--distill", "kd", "-a", "0.9",
                                                              "-b", "0"])
    assert flag(argv, "-r") == "1.0"


def test_train_teacher_maps_the_seed_flags(monkeypatch):
    argv = forwarded(monkeypatch, seed_compat.train_teacher, ["--model", "wrn_40_2", "-t", "2", "--data_dir", "d",
                                                              "--save_freq", "5", *TINY])
    assert argv[0] == "train-teacher" and flag(argv, "--model") == "wrn_40_2" and flag(argv, "--trial") == "2"
    assert flag(argv, "--data-dir") == "d" and flag(argv, "--out") == "./save/models"
    assert flag(argv, "--save-freq") == "5" and flag(argv, "--epochs") == "1" and flag(argv, "--workers") == "0"
    assert "--lr" not in argv  # left to the task: 0.05, or 0.01 for MobileNetV2/ShuffleNets


def run_script(cwd: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, str(REPO / script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"{script} {' '.join(args)} failed:\n{done.stderr[-3000:]}"
    return done


def test_seed_readme_commands(tmp_path_factory, cifar):
    cwd = tmp_path_factory.mktemp("seed-cwd")
    data = ["--data_dir", str(cifar.root)]
    run_script(cwd, "train_teacher.py", "--model", "resnet8", *TINY, *data)
    teacher_dir = cwd / "save" / "models" / "resnet8_cifar100_vanilla_trial-1"
    config, metrics, summary = read_run(teacher_dir)
    assert config["model"] == "resnet8" and config["epochs"] == 1 and config["batch_size"] == 16
    assert summary["status"] == "finished" and len(metrics) == 1
    teacher = teacher_dir / "last.pt"
    assert torch.load(teacher, weights_only=True)["arch"] == "resnet8"

    commands = [  # the README's ICD, ICD+KD and KD commands (student resnet8, the tiny teacher above)
        (["--distill", "icd", "--model_s", "resnet8", "-a", "0", "-b", "1", "--trial", "1"], "icd", (1, 0, 1)),
        (["--distill", "icd", "--model_s", "resnet8", "-a", "1", "-b", "1", "--trial", "1"], "icd", (1, 1, 1)),
        (["--distill", "kd", "--model_s", "resnet8", "-r", "0.1", "-a", "0.9", "-b", "0", "--trial", "1"], "kd",
         (0.1, 0.9, 0)),
    ]
    for args, method, (r, a, b) in commands:
        done = run_script(cwd, "train_student.py", "--path_t", str(teacher), *args, *TINY, *data)
        name = f"S-resnet8_T-resnet8_cifar100_{method}_r-{r:g}_a-{a:g}_b-{b:g}_trial-1"
        run_dir = cwd / "save" / "student_model" / name
        assert run_dir.is_dir(), sorted(p.name for p in (cwd / "save" / "student_model").iterdir())
        assert str(run_dir.name) in done.stdout
        config, metrics, summary = read_run(run_dir)
        assert config["method"] == method and config["weights"] == {"gamma": r, "alpha": a, "beta": b}
        assert config["teacher_path"] == str(teacher) and config["student"] == "resnet8"
        assert summary["status"] == "finished" and len(metrics) == 1
        assert {"loss_ce", "loss_kl", f"loss_{method}"} & set(metrics[0]) == \
               {name for name, weight in (("loss_ce", r), ("loss_kl", a), (f"loss_{method}", b)) if weight}
        assert (run_dir / "last.pt").is_file()
    assert len(list((cwd / "save" / "student_model").iterdir())) == 3  # three distinct runs, none overwritten
