"""Linear-probe transfer end to end through the real CLI: STL-10 and TinyImageNet in their real on-disk formats, the
frozen backbone (BatchNorm statistics included), the new head, eval parity, the seed script, resume, bad input."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from data.fake_data import write_cifar100, write_stl10, write_tiny_imagenet
from distillers.cli import main
from distillers.data import DATASETS
from distillers.models import create_model
from distillers.tasks.transfer import LinearProbe, replace_classifier

REPO = Path(__file__).resolve().parents[2]
SMALL = ["--workers", "0", "--batch-size", "16", "--max-steps-per-epoch", "3", "--device", "cpu"]



@dataclass(frozen=True)
class Assets:
    data_dir: Path  # holds cifar-100-python, stl10_binary and tiny-imagenet-200
    student: Path  # our checkpoint: resnet8 trained on the fake CIFAR-100 (records arch and dataset)
    repdistiller: Path  # the same weights as RepDistiller saves them: <dir>/resnet8_vanilla/ckpt.pth, {"model": ...}


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory) -> Assets:
    root = tmp_path_factory.mktemp("transfer")
    data_dir = root / "data"
    write_cifar100(data_dir, n_train=32, n_test=16, seed=0)
    write_stl10(data_dir, n_train=24, n_test=20, seed=1)
    write_tiny_imagenet(data_dir, n_classes=3, n_train_per_class=6, n_val_per_class=3, seed=2)
    assert main(["train-teacher", "--model", "resnet8", "--epochs", "1", "--max-steps-per-epoch", "2",
                 "--data-dir", str(data_dir), "--out", str(root / "runs"), "--workers", "0", "--batch-size", "16",
                 "--device", "cpu"]) == 0
    student = root / "runs" / "resnet8_cifar100_vanilla_trial-1" / "last.pt"
    repdistiller = root / "resnet8_vanilla" / "ckpt.pth"
    repdistiller.parent.mkdir()
    torch.save({"model": load(student)["model"]}, repdistiller)
    return Assets(data_dir, student, repdistiller)


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def transfer(assets: Assets, out: Path, *flags: str) -> int:
    return main(["transfer", "--data-dir", str(assets.data_dir), "--out", str(out), *SMALL, *flags])


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


# ---- the protocol on both target datasets --------------------------------------------------------------------
@pytest.mark.parametrize("dataset, source", [("stl10", "student"), ("tinyimagenet", "repdistiller")])
def test_transfer_trains_only_a_new_head_and_eval_reproduces_its_accuracy(assets, tmp_path, capsys, dataset, source):
    checkpoint = getattr(assets, source)  # the RepDistiller file records no arch: it comes from the folder name
    out = tmp_path / "runs"
    assert transfer(assets, out, "--student-ckpt", str(checkpoint), "--dataset", dataset, "--epochs", "2",
                    "--save-freq", "1") == 0
    run = out / f"transfer_resnet8_cifar100_to_{dataset}_trial-1"
    for name in ("config.json", "metrics.jsonl", "summary.json", "last.pt", "best.pt", "ckpt_epoch_1.pt",
                 "ckpt_epoch_2.pt"):
        assert (run / name).is_file(), name
    assert any((run / "tensorboard").rglob("events.out.tfevents.*"))

    num_classes = DATASETS.get(dataset).num_classes  # 10; 200 for TinyImageNet whatever its folders (the seed's n_cls)
    config = json.loads((run / "config.json").read_text())
    assert (config["task"], config["model"], config["dataset"]) == ("transfer", "resnet8", dataset)
    assert (config["num_classes"], config["lr"], config["epochs"]) == (num_classes, 0.05, 2)
    assert config["lr_decay_epochs"] == [30, 60, 90] and config["student_path"] == str(checkpoint)

    metrics = read_metrics(run)
    assert [record["epoch"] for record in metrics] == [1, 2]
    for record in metrics:
        assert record["lr"] == 0.05
        for key in ("train_loss", "train_acc", "loss_ce", "test_loss", "test_acc", "test_acc_top5"):
            assert math.isfinite(record[key]), (key, record)
    summary = json.loads((run / "summary.json").read_text())
    assert (summary["status"], summary["epochs_done"]) == ("finished", 2)
    assert summary["last_acc"] == metrics[-1]["test_acc"]

    source_state = load(assets.student)["model"]
    saved = load(run / "last.pt")
    assert (saved["arch"], saved["num_classes"], saved["dataset"], saved["epoch"]) == ("resnet8", num_classes,
                                                                                         dataset, 2)
    state = saved["model"]
    assert set(state) == set(source_state)
    backbone = [key for key in source_state if not key.startswith("fc.")]
    statistics = [key for key in backbone if key.endswith(("running_mean", "running_var"))]
    assert len(statistics) >= 10  # resnet8's BatchNorm layers: the check below covers their statistics
    # The source's statistics were moved by its own training, so a probe that ran BN in train mode would change them.
    assert any(source_state[key].abs().sum() > 0 for key in statistics if key.endswith("running_mean"))
    changed = [key for key in backbone if not torch.equal(state[key], source_state[key])]
    assert changed == []
    assert state["fc.weight"].shape == (num_classes, 64) and state["fc.bias"].shape == (num_classes,)
    assert source_state["fc.weight"].shape == (100, 64)
    for key, value in saved["head"].items():
        assert torch.equal(value, state[f"fc.{key}"])
    assert state["fc.bias"].abs().sum() > 0  # initialised to zero: it moved
    assert not torch.equal(load(run / "ckpt_epoch_1.pt")["model"]["fc.weight"], state["fc.weight"])

    capsys.readouterr()
    assert main(["eval", "--ckpt", str(run / "last.pt"), "--dataset", dataset, "--model", "resnet8",
                 "--data-dir", str(assets.data_dir), "--workers", "0", "--device", "cpu"]) == 0
    printed = re.search(r"top-1 ([\d.]+)%\s+top-5 ([\d.]+)%\s+loss ([\d.]+)", capsys.readouterr().out)
    assert printed is not None
    last = metrics[-1]
    assert printed.groups() == (f"{last['test_acc']:.2f}", f"{last['test_acc_top5']:.2f}", f"{last['test_loss']:.4f}")


# ---- the head, the frozen backbone, the learning rate -----------------------------------------------------------
def test_the_new_head_is_normal_with_std_0_01_and_zero_bias():
    model = create_model("resnet8", num_classes=100)
    old = model.fc
    head = replace_classifier(model, 3000)  # 192,000 weights: the sample std is within 0.1% of the true one
    assert model.fc is head and head is not old
    assert head.weight.shape == (3000, 64) and torch.equal(head.bias, torch.zeros(3000))
    assert head.weight.std().item() == pytest.approx(0.01, rel=0.01)
    assert abs(head.weight.mean().item()) < 1e-4
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3000)


def test_a_nested_classifier_is_replaced_and_the_probe_keeps_the_backbone_in_eval_mode():
    model = create_model("MobileNetV2", num_classes=100)  # its classifier is classifier.0 inside a Sequential
    head = replace_classifier(model, 10)
    assert model.classifier[0] is head
    probe = LinearProbe(model, head).train()
    batchnorms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert batchnorms and not any(m.training for m in batchnorms)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable == ["classifier.0.weight", "classifier.0.bias"]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    logits, terms = probe({"image": torch.randn(4, 3, 32, 32), "target": torch.tensor([0, 1, 2, 3])})
    terms["ce"].backward()
    assert logits.shape == (4, 10) and head.weight.grad is not None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # running stats untouched


def test_small_lr_models_default_to_0_01_and_the_default_is_recorded(assets, tmp_path):
    checkpoint = tmp_path / "MobileNetV2_vanilla" / "ckpt_epoch_240.pth"
    checkpoint.parent.mkdir()
    torch.save({"model": create_model("MobileNetV2", num_classes=100).state_dict()}, checkpoint)
    out = tmp_path / "runs"
    assert transfer(assets, out, "--student-ckpt", str(checkpoint), "--epochs", "1", "--max-steps-per-epoch",
                    "1") == 0
    run = out / "transfer_MobileNetV2_cifar100_to_stl10_trial-1"
    assert json.loads((run / "config.json").read_text())["lr"] == 0.01
    assert read_metrics(run)[0]["lr"] == 0.01


# ---- the seed's command line -----------------------------------------------------------------------------------
def test_the_seed_script_runs_a_transfer_under_save_transfer(assets, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    command = [sys.executable, str(REPO / "transfer_student.py"), "--path_s", str(assets.student), "--model_s",
               "resnet8", "--dataset", "stl10", "--trial", "1", "--epochs", "1", "--batch_size", "16",
               "--num_workers", "0", "--data_dir", str(assets.data_dir), "--device", "cpu"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    run = tmp_path / "save" / "transfer" / "transfer_resnet8_cifar100_to_stl10_trial-1"
    assert (run / "last.pt").is_file()
    assert [record["epoch"] for record in read_metrics(run)] == [1]
    config = json.loads((run / "config.json").read_text())
    assert (config["dataset"], config["epochs"], config["lr_decay_epochs"]) == ("stl10", 1, [30, 60, 90])
    assert "transfer resnet8 -> stl10 finished" in done.stdout


# ---- resume ---------------------------------------------------------------------------------------------------
def test_resume_appends_the_next_epoch_and_continues_the_saved_head(assets, tmp_path):
    student = tmp_path / "student.pt"  # a private copy: it is overwritten below
    shutil.copyfile(assets.student, student)
    out = tmp_path / "runs"
    flags = ["--student-ckpt", str(student), "--seed", "5"]
    assert transfer(assets, out, *flags, "--epochs", "2", "--name", "straight", "--save-freq", "1") == 0
    assert transfer(assets, out, *flags, "--epochs", "1", "--name", "resumed") == 0
    straight, resumed = out / "straight", out / "resumed"
    # The same --seed gives the same head initialisation, so epoch 1 of both runs is the same.
    assert torch.equal(load(resumed / "last.pt")["model"]["fc.weight"],
                       load(straight / "ckpt_epoch_1.pt")["model"]["fc.weight"])
    first = read_metrics(resumed)

    # The student file changes meanwhile (its own run went on): the transfer run keeps the backbone it started with.
    changed = load(assets.student)
    changed["model"] = {key: value + 1 if value.is_floating_point() else value
                        for key, value in changed["model"].items()}
    torch.save(changed, student)

    assert transfer(assets, out, *flags, "--epochs", "2", "--name", "resumed", "--resume") == 0
    records = read_metrics(resumed)
    assert [record["epoch"] for record in records] == [1, 2] and records[:1] == first
    end, reference = load(resumed / "last.pt"), load(straight / "last.pt")
    assert end["epoch"] == 2
    for key, value in reference["model"].items():  # head and backbone, bit for bit
        assert torch.equal(end["model"][key], value), key
    for key in ("test_acc", "test_loss", "train_loss"):
        assert records[1][key] == read_metrics(straight)[1][key]
    assert json.loads((resumed / "summary.json").read_text())["status"] == "finished"


# ---- bad input ------------------------------------------------------------------------------------------------
def _bare(tmp_path: Path, arch: str) -> Path:
    path = tmp_path / "weights" / "ckpt.pth"  # a folder name that names no model
    path.parent.mkdir()
    torch.save({"model": create_model(arch, num_classes=100).state_dict()}, path)
    return path


@pytest.mark.parametrize("case", ["recorded-resnet8", "bare-wrn_16_1", "bare-vgg8"])
def test_a_checkpoint_of_another_architecture_exits_2_with_one_line(assets, tmp_path, capsys, case):
    kind, arch = case.split("-", 1)
    checkpoint = assets.student if kind == "recorded" else _bare(tmp_path, arch)
    model = "wrn_16_2" if kind == "recorded" else "resnet8"
    out = tmp_path / "runs"
    capsys.readouterr()
    assert transfer(assets, out, "--student-ckpt", str(checkpoint), "--model", model, "--epochs", "1") == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and error.startswith("distillers: error: ")
    assert str(checkpoint) in error and model in error and "Traceback" not in error
    assert "--model" in error  # says how to fix it
    assert not out.exists()  # refused before any run directory is made
