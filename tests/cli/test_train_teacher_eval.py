"""``distillers train-teacher`` writes a complete run directory; ``distillers eval`` reads it back exactly, and reads
RepDistiller's ``<arch>_vanilla/ckpt_epoch_240.pth`` checkpoints too."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from data.fake_data import FakeArrays
from distillers.models import create_model
from distillers.tasks.evaluate import evaluate_checkpoint

from .conftest import FAST, only_child, read_run, run_cli

EVAL_LINE = re.compile(r"^(\S+) on cifar100: top-1 ([\d.]+)%  top-5 ([\d.]+)%  loss ([\d.]+)$", re.M)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory, cifar):
    """``train-teacher --model resnet8 --epochs 2`` with every other setting at the seed's default."""
    from distillers import cli  # in-process, without capsys (function-scoped): its prints go to pytest's capture

    out = tmp_path_factory.mktemp("runs")
    code = cli.main(["train-teacher", "--model", "resnet8", "--epochs", "2", "--data-dir", str(cifar.root),
                     "--out", str(out), *FAST])
    assert code == 0
    return only_child(out)


def test_run_directory_is_complete(teacher_run: Path):
    assert teacher_run.name == "resnet8_cifar100_vanilla_trial-1"
    for name in ("config.json", "metrics.jsonl", "summary.json", "last.pt", "best.pt"):
        assert (teacher_run / name).is_file() and (teacher_run / name).stat().st_size > 0, f"{name} missing"
    events = list((teacher_run / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    leftovers = [p.name for p in teacher_run.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert not leftovers, f"temporary files left behind: {leftovers}"


def test_config_records_the_seed_defaults(teacher_run: Path):
    config, _, _ = read_run(teacher_run)
    assert config["task"] == "teacher" and config["model"] == "resnet8" and config["dataset"] == "cifar100"
    assert config["epochs"] == 2 and config["batch_size"] == 64
    assert config["lr"] == pytest.approx(0.05)  # resolved by the task (the flag was left at None)
    assert config["lr_decay_epochs"] == [150, 180, 210] and config["lr_decay_rate"] == pytest.approx(0.1)
    assert config["weight_decay"] == pytest.approx(5e-4) and config["momentum"] == pytest.approx(0.9)
    assert config["num_classes"] == 100 and config["seed"] == 0 and str(config["trial"]) == "1"


def test_metrics_and_summary(teacher_run: Path):
    _, metrics, summary = read_run(teacher_run)
    assert [record["epoch"] for record in metrics] == [1, 2]
    for record in metrics:
        assert record["stage"] == "main" and record["lr"] == pytest.approx(0.05)
        for key in ("train_loss", "train_acc", "test_acc", "test_acc_top5", "test_loss", "loss_ce"):
            assert math.isfinite(record[key]), (key, record)
        assert record["loss_ce"] == pytest.approx(record["train_loss"])  # CE is the only term
        assert 0 <= record["test_acc"] <= record["test_acc_top5"] <= 100
    assert summary["status"] == "finished" and summary["epochs_done"] == 2
    assert summary["last_acc"] == metrics[-1]["test_acc"]
    assert summary["best_acc"] == max(record["test_acc"] for record in metrics)
    assert summary["best_epoch"] in (1, 2)
    assert metrics[summary["best_epoch"] - 1]["test_acc"] == summary["best_acc"]


def test_tensorboard_holds_the_epoch_scalars(teacher_run: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, metrics, _ = read_run(teacher_run)
    events = EventAccumulator(str(teacher_run / "tensorboard"))
    events.Reload()
    scalars = events.Scalars("main/test_acc")
    assert [event.step for event in scalars] == [1, 2]
    assert [event.value for event in scalars] == pytest.approx([record["test_acc"] for record in metrics])


def test_checkpoints_reload_and_best_evaluates_to_the_logged_accuracy(capsys, teacher_run: Path, cifar):
    _, metrics, summary = read_run(teacher_run)
    last = torch.load(teacher_run / "last.pt", weights_only=True)
    assert last["epoch"] == 2 and last["arch"] == "resnet8"
    create_model("resnet8").load_state_dict(last["model"], strict=True)
    best = torch.load(teacher_run / "best.pt", weights_only=True)
    assert best["epoch"] == summary["best_epoch"] and best["accuracy"] == summary["best_acc"]

    result = run_cli(capsys, "eval", "--ckpt", teacher_run / "best.pt", "--data-dir", cifar.root, *FAST)
    assert result.code == 0, result.err
    arch, top1, top5, loss = EVAL_LINE.search(result.out).groups()
    logged = metrics[summary["best_epoch"] - 1]
    assert arch == "resnet8"
    assert (top1, top5, loss) == (f"{logged['test_acc']:.2f}", f"{logged['test_acc_top5']:.2f}",
                                  f"{logged['test_loss']:.4f}")
    exact = evaluate_checkpoint(str(teacher_run / "best.pt"), "cifar100", str(cifar.root), device="cpu", workers=0)
    assert exact["test_acc"] == summary["best_acc"]  # bit-for-bit the logged number


def reference_eval(model: torch.nn.Module, data: FakeArrays) -> tuple[float, float, float]:
    """Top-1, top-5 and mean CE computed here from the written arrays (independent of the loaders)."""
    images = torch.from_numpy(data.test.images).permute(0, 3, 1, 2).float() / 255
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (CIFAR100_MEAN, CIFAR100_STD))
    target = torch.from_numpy(data.test.labels)
    model.eval()
    with torch.no_grad():
        logits = model((images - mean) / std)
    top5 = logits.topk(5, dim=1).indices
    return (100.0 * (top5[:, 0] == target).float().mean().item(),
            100.0 * (top5 == target[:, None]).any(dim=1).float().mean().item(),
            F.cross_entropy(logits, target).item())


def test_eval_reads_a_repdistiller_checkpoint(capsys, tmp_path, cifar):
    torch.manual_seed(3)
    model = create_model("resnet8")
    with torch.no_grad():  # a classifier with a strong bias towards a few labels, so top-1/top-5 are not all zero
        model.fc.bias.copy_(torch.from_numpy(np.bincount(cifar.test.labels, minlength=100)).float() * 3)
    path = tmp_path / "resnet8_vanilla" / "ckpt_epoch_240.pth"
    path.parent.mkdir()
    torch.save({"model": model.state_dict()}, path)  # RepDistiller's layout, no architecture recorded

    result = run_cli(capsys, "eval", "--ckpt", path, "--data-dir", cifar.root, *FAST)
    assert result.code == 0, result.err
    arch, top1, top5, loss = EVAL_LINE.search(result.out).groups()
    expected_top1, expected_top5, expected_loss = reference_eval(model, cifar)
    assert arch == "resnet8"
    assert (top1, top5, loss) == (f"{expected_top1:.2f}", f"{expected_top5:.2f}", f"{expected_loss:.4f}")
    assert float(top5) > 0

    anonymous = tmp_path / "weights" / "model.pth"  # no recorded arch, folder name is no model: say so
    anonymous.parent.mkdir()
    shutil.copy(path, anonymous)
    refused = run_cli(capsys, "eval", "--ckpt", anonymous, "--data-dir", cifar.root, *FAST)
    assert refused.code == 2 and "cannot tell the architecture" in refused.err and "--model" in refused.err
    named = run_cli(capsys, "eval", "--ckpt", anonymous, "--model", "resnet8", "--data-dir", cifar.root, *FAST)
    assert named.code == 0 and EVAL_LINE.search(named.out).group(4) == loss
