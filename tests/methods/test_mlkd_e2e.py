"""MLKD end to end: the strong view travels from the data through the objective into the method, the run records
its protocol, and a single-view run is refused before training."""

from __future__ import annotations

import json
import math

import pytest
import torch

from data.fake_data import write_cifar100
from distillers.cli import main
from distillers.methods import METHODS
from distillers.models import create_model
from distillers.objective import Distillation

TINY = ["--epochs", "1", "--max-steps-per-epoch", "2", "--workers", "0", "--batch-size", "8", "--device", "cpu"]



@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tiny CIFAR-100 on disk and a resnet8 teacher trained for two steps on it."""
    root = tmp_path_factory.mktemp("mlkd")
    data = write_cifar100(root / "data", n_train=32, n_test=16, seed=3)
    out = root / "runs"
    assert main(["train-teacher", "--model", "resnet8", "--data-dir", str(data.root), "--out", str(out), *TINY]) == 0
    teacher = out / "resnet8_cifar100_vanilla_trial-1" / "last.pt"
    assert teacher.is_file()
    return data.root, out, teacher


def distill(setup, *flags: str) -> int:
    data_dir, out, teacher = setup
    return main(["distill", "--teacher", str(teacher), "--student", "resnet8", "--data-dir", str(data_dir),
                 "--out", str(out), *TINY, *flags])


def read_run(out, name: str) -> tuple[dict, list[dict]]:
    config = json.loads((out / name / "config.json").read_text())
    metrics = [json.loads(line) for line in (out / name / "metrics.jsonl").read_text().splitlines() if line]
    return config, metrics


def test_mlkd_with_the_strong_view_trains_and_records_its_protocol(setup):
    out = setup[1]
    assert distill(setup, "--method", "mlkd", "--augment", "strong", "--name", "mlkd") == 0
    config, metrics = read_run(out, "mlkd")
    assert config["protocol"] == "mlkd-strong" and config["augment"] == "strong" and config["method"] == "mlkd"
    last = metrics[-1]
    terms = ("loss_ce", "loss_ce_strong", "loss_kd", "loss_cc", "loss_bc")
    assert all(math.isfinite(last[key]) for key in terms)
    assert last["loss_kd"] > 0 and last["loss_ce_strong"] > 0
    # train_loss is the sum of the logged terms: nothing else entered the objective.
    assert last["train_loss"] == pytest.approx(sum(last[key] for key in terms), rel=1e-5)


def test_mlkd_without_the_strong_view_is_refused_before_training(setup, capsys):
    out = setup[1]
    assert distill(setup, "--method", "mlkd", "--name", "mlkd-weak") == 2
    error = capsys.readouterr().err
    assert "method 'mlkd' trains on a weak and a strong augmented view" in error
    assert "pass --augment strong" in error and "Traceback" not in error
    assert not (out / "mlkd-weak").exists()


def test_a_single_view_method_with_the_strong_view_is_marked_outside_the_crd_protocol(setup):
    out = setup[1]
    assert distill(setup, "--method", "kd") == 0
    assert distill(setup, "--method", "kd", "--augment", "strong") == 0
    plain = read_run(out, "S-resnet8_T-resnet8_cifar100_kd_r-0.1_a-0.9_b-0_trial-1")[0]
    strong = read_run(out, "S-resnet8_T-resnet8_cifar100_kd_r-0.1_a-0.9_b-0_trial-1_strong-aug")[0]
    assert (plain["protocol"], plain["augment"]) == ("crd", "standard")
    assert (strong["protocol"], strong["augment"]) == ("strong-aug", "strong")


def test_objective_runs_each_view_in_its_own_forward():
    torch.manual_seed(0)
    student, teacher = create_model("resnet8", 100), create_model("resnet8", 100)
    objective = Distillation(student, teacher, METHODS.get("mlkd")(), METHODS.get("mlkd").weights).train()
    batch = {"image": torch.randn(4, 3, 32, 32), "image_strong": torch.randn(4, 3, 32, 32),
             "target": torch.arange(4)}
    step = objective.step(batch)
    assert set(step.extra) == {"logits_s_strong", "logits_t_strong"}  # logits only, never the raw strong images
    assert step.extra["logits_s_strong"].requires_grad and not step.extra["logits_t_strong"].requires_grad
    with torch.no_grad():
        # Train-mode BatchNorm normalises over the batch: a separate forward gives exactly these logits, a forward
        # over both views concatenated would not.
        alone = student(batch["image_strong"])
        together = student(torch.cat([batch["image"], batch["image_strong"]]))[4:]
        assert torch.allclose(step.extra["logits_s_strong"], alone, atol=1e-6)
        assert not torch.allclose(alone, together, atol=1e-3)
        assert torch.allclose(step.extra["logits_t_strong"], teacher(batch["image_strong"]), atol=1e-6)
        assert torch.allclose(step.logits_s, student(batch["image"]), atol=1e-6)
    _, terms = objective(batch)
    assert set(terms) == {"ce", "ce_strong", "kd", "cc", "bc"}
    terms["ce_strong"].backward()  # the strong view's CE reaches the student's weights
    assert student.fc.weight.grad is not None and student.fc.weight.grad.abs().sum() > 0
