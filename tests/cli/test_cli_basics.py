"""``distillers --help``, ``distillers list ...``, the entry points, the seed's defaults and one-line user errors."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys

import pytest

from distillers import cli
from distillers.config import RunConfig
from distillers.data import DATASETS
from distillers.methods import METHODS
from distillers.models import MODELS, SMALL_LR_MODELS, default_lr

from .conftest import FAST, only_child, read_run, run_cli

SEED_MODELS = ("resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "resnet8x4",
               "resnet32x4", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2", "vgg8", "vgg11", "vgg13", "vgg16", "vgg19",
               "ResNet50", "MobileNetV2", "ShuffleV1", "ShuffleV2")
COMMANDS = ("train-teacher", "distill", "eval", "list", "transfer", "export", "fetch-teachers", "report")
# -r/-a/-b of the seed's run scripts (RepDistiller scripts/run_cifar_distill.sh and the distillers README).
SEED_WEIGHTS = {"kd": (0.1, 0.9, 0), "fitnet": (1, 0, 100), "at": (1, 0, 1000), "sp": (1, 0, 3000),
                "cc": (1, 0, 0.02), "vid": (1, 0, 1), "rkd": (1, 0, 1), "pkt": (1, 0, 30000), "ab": (1, 0, 1),
                "ft": (1, 0, 200), "fsp": (1, 0, 50), "nst": (1, 0, 50), "crd": (1, 0, 0.8), "icd": (1, 0, 1),
                "rrd": (1, 0, 1)}
SEED_ALIASES = {"ab": "abound", "ft": "factor", "fitnet": "hint", "at": "attention", "sp": "similarity",
                "cc": "correlation"}


def test_help_lists_every_command(capsys):
    result = run_cli(capsys, "--help")
    assert result.code == 0
    for command in COMMANDS:
        assert command in result.out
    bare = run_cli(capsys)  # no command: the help, and a usage error code
    assert bare.code == 2 and "train-teacher" in bare.out


def test_distill_help_explains_the_objective(capsys):
    result = run_cli(capsys, "distill", "--help")
    assert result.code == 0
    for text in ("--teacher", "--student", "--method", "r * CE + a * KL", "--nce-k", "--init-epochs", "--augment"):
        assert text in result.out


def test_python_m_distillers_help():
    done = subprocess.run([sys.executable, "-m", "distillers", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: distillers")
    assert all(command in done.stdout for command in COMMANDS)


def test_console_script_points_at_main():
    scripts = {ep.name: ep.value for ep in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts.get("distillers") == "distillers.cli:main"


def test_list_models_shows_every_model_with_its_lr(capsys):
    result = run_cli(capsys, "list", "models")
    assert result.code == 0
    rows = {line.split()[0]: line.split() for line in result.out.splitlines() if line.strip()}
    assert set(rows) == set(MODELS.names())
    for name, row in rows.items():
        assert float(row[-1]) == default_lr(name)
    for name in SEED_MODELS:  # the seed's CIFAR models: 0.01 for MobileNetV2/ShuffleNets, else 0.05
        assert float(rows[name][-1]) == (0.01 if name in SMALL_LR_MODELS else 0.05)


def test_list_methods_shows_every_method_with_paper_and_weights(capsys):
    result = run_cli(capsys, "list", "methods")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0].split()[:2] == ["method", "seed"]
    rows = {line.split()[0]: line for line in lines[1:] if line.strip()}
    assert set(rows) == set(METHODS.names())
    for name, line in rows.items():
        cls = METHODS.get(name)
        fields = line.split()
        assert (float(fields[2]), float(fields[3]), float(fields[4])) == \
               (cls.weights.gamma, cls.weights.alpha, cls.weights.beta), line
        assert cls.paper and cls.paper in line
        assert fields[1] == (",".join(METHODS.aliases_of(name)) or "-")
    for name, weights in SEED_WEIGHTS.items():  # the seed's numbers, independently of the registry
        fields = rows[name].split()
        assert tuple(float(v) for v in fields[2:5]) == weights, rows[name]
    for name, alias in SEED_ALIASES.items():
        assert alias in rows[name].split()[1].split(",")


def test_list_datasets_shows_every_dataset(capsys):
    result = run_cli(capsys, "list", "datasets")
    assert result.code == 0
    rows = {line.split()[0]: line.split() for line in result.out.splitlines() if line.strip()}
    assert set(rows) == set(DATASETS.names())
    assert rows["cifar100"][1] == "100" and rows["cifar10"][1] == "10"


def test_train_teacher_defaults_are_the_seeds():
    args = cli.build_parser().parse_args(["train-teacher", "--model", "resnet8"])
    cfg = cli.run_config(args, "teacher")
    assert isinstance(cfg, RunConfig) and cfg.task == "teacher" and cfg.model == "resnet8"
    assert cfg.epochs == 240 and cfg.batch_size == 64
    assert tuple(cfg.lr_decay_epochs) == (150, 180, 210) and cfg.lr_decay_rate == pytest.approx(0.1)
    assert cfg.weight_decay == pytest.approx(5e-4) and cfg.momentum == pytest.approx(0.9)
    assert cfg.dataset == "cifar100" and cfg.save_freq == 40 and cfg.lr is None  # None: the task resolves it
    assert {name: default_lr(name) for name in ("resnet8", "resnet32x4", "wrn_40_2", "vgg13", "ResNet50")} == \
           dict.fromkeys(("resnet8", "resnet32x4", "wrn_40_2", "vgg13", "ResNet50"), 0.05)
    assert {name: default_lr(name) for name in ("MobileNetV2", "ShuffleV1", "ShuffleV2")} == \
           dict.fromkeys(("MobileNetV2", "ShuffleV1", "ShuffleV2"), 0.01)


@pytest.mark.parametrize("model", ["MobileNetV2", "ShuffleV1", "ShuffleV2"])
def test_train_teacher_resolves_the_small_lr(capsys, tmp_path, cifar, model):
    """The seed trains MobileNetV2/ShuffleNets with lr 0.01: the task records it and the optimiser uses it."""
    result = run_cli(capsys, "train-teacher", "--model", model, "--epochs", "1", "--max-steps-per-epoch", "1",
                     "--batch-size", "8", "--data-dir", cifar.root, "--out", tmp_path, *FAST)
    assert result.code == 0, result.err
    config, metrics, _ = read_run(only_child(tmp_path))
    assert config["lr"] == pytest.approx(0.01) and config["model"] == model
    assert metrics[0]["lr"] == pytest.approx(0.01)


def test_user_errors_are_one_line_exit_2(capsys, tmp_path, cifar, teacher):
    cases = [
        (["distill", "--teacher", teacher.checkpoint, "--student", "resnet8", "--method", "nope"], "unknown method"),
        (["train-teacher", "--model", "resnet9"], "unknown model 'resnet9'"),
        (["eval", "--ckpt", tmp_path / "missing.pth", "--data-dir", cifar.root], "checkpoint not found"),
        (["train-teacher", "--model", "resnet8", "--dataset", "cifar100", "--data-dir", tmp_path / "empty"],
         "CIFAR-100 not found"),
        (["distill", "--teacher", teacher.checkpoint, "--student", "resnet8", "--method", "kd", "-a", "-1",
          "--data-dir", cifar.root], "-r/-a/-b must be >= 0"),
    ]
    occupied = teacher.checkpoint.parent  # an existing run: never overwritten without --overwrite or --resume
    cases.append((["train-teacher", "--model", "resnet14", "--data-dir", cifar.root, "--out", occupied.parent],
                  f"run directory {occupied} already holds a run"))
    for argv, expected in cases:
        if argv[0] != "eval" and "--out" not in argv:
            argv = [*argv, "--out", tmp_path / "runs"]
        result = run_cli(capsys, *argv)
        assert result.code == 2, (argv, result.err)
        message = result.err.strip()
        assert message.startswith("distillers: error:") and expected in message, message
        assert "\n" not in message and "Traceback" not in result.err
    assert not (tmp_path / "runs").exists()  # refused before any run directory was created
    assert teacher.checkpoint.is_file()
