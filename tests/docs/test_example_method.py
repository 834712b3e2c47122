"""The "Adding a method" guide, run: examples/feature_mimic.py registered as a plugin, its loss against values
worked out by hand, one epoch through the CLI on the tiny CIFAR-100 fixture, and its row in ``distillers report``."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from cli.conftest import FAST, only_child, read_run, run_cli
from distillers.config import MethodOptions
from distillers.errors import UserError
from distillers.methods import METHODS, Pair
from distillers.models import create_model

pytestmark = pytest.mark.usefixtures("examples_loaded")


def build(options: dict | None = None, student: str = "resnet8", teacher: str = "resnet14"):
    pair = Pair(create_model(student), create_model(teacher), student, teacher,
                options=MethodOptions(extra=dict(options or {})))
    return METHODS.get("feature_mimic").build(pair)


def test_registered_under_its_name_and_alias(capsys: pytest.CaptureFixture) -> None:
    cls = METHODS.get("mimic")
    assert cls.__name__ == "FeatureMimic" and METHODS.canonical("mimic") == "feature_mimic"
    listing = run_cli(capsys, "list", "methods")
    assert listing.code == 0
    assert any(line.split()[:2] == ["feature_mimic", "mimic"] for line in listing.out.splitlines()), listing.out


def test_projection_sized_from_feature_metadata() -> None:
    method = build(student="resnet8", teacher="resnet32x4")  # embeddings of 64 and 256 channels
    assert tuple(method.project.weight.shape) == (256, 64)
    assert [name for name, _ in method.named_parameters()] == ["project.weight"]


# --8<-- [start:golden]
def test_loss_golden_values_worked_by_hand() -> None:
    method = build()
    method.project = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        method.project.weight.copy_(torch.tensor([[1.0, 2.0]]))
    student, teacher = torch.tensor([[1.0, 1.0]]), torch.tensor([[5.0]])
    loss = method.loss(student, teacher)  # W s = 3, (3 - 5)^2 = 4
    assert loss.item() == 4.0
    loss.backward()  # dL/dW = 2 (Ws - t) s^T = -4 * [1, 1]
    assert method.project.weight.grad.tolist() == [[-4.0, -4.0]]

    method.normalize = True
    method.project = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        method.project.weight.copy_(torch.eye(2))
    # s -> [1, 1] / sqrt(2), t -> [1, 0]: mean of (1/sqrt2 - 1)^2 and (1/sqrt2)^2 = 1 - 1/sqrt(2)
    value = method.loss(torch.tensor([[1.0, 1.0]]), torch.tensor([[2.0, 0.0]])).item()
    assert value == pytest.approx(1 - 1 / math.sqrt(2), abs=1e-7)
# --8<-- [end:golden]


def test_typed_option_and_refused_pair() -> None:
    assert build({"normalize": "true"}).normalize is True and build().normalize is False
    with pytest.raises(UserError, match="no option 'normalise'.*normalize"):
        build({"normalise": "true"})
    student = create_model("resnet8")
    student.feature_info = student.feature_info[:-1]  # a model whose last feature is a map, not an embedding
    pair = Pair(student, create_model("resnet14"), "resnet8", "resnet14")
    with pytest.raises(UserError, match="feature_mimic.*does not support.*pooled embedding"):
        METHODS.get("feature_mimic").build(pair)


# --8<-- [start:cli]
def test_one_epoch_through_the_cli_then_its_report_row(capsys: pytest.CaptureFixture, tmp_path: Path, cifar,
                                                       teacher) -> None:
    runs = tmp_path / "runs"
    result = run_cli(capsys, "distill", "--teacher", teacher.checkpoint, "--student", "resnet8", "--method",
                     "feature_mimic", "--epochs", "1", "--max-steps-per-epoch", "2", "--batch-size", "16",
                     "--data-dir", cifar.root, "--out", runs, *FAST)
    assert result.code == 0, result.err
    config, metrics, summary = read_run(only_child(runs))
    assert config["method"] == "feature_mimic" and config["weights"] == {"gamma": 1.0, "alpha": 0.0, "beta": 1.0}
    record = metrics[-1]
    assert {key for key in record if key.startswith("loss_")} == {"loss_ce", "loss_feature_mimic"}
    assert math.isfinite(record["loss_feature_mimic"]) and record["loss_feature_mimic"] > 0
    assert summary["status"] == "finished" and summary["epochs_done"] == 1
    state = torch.load(only_child(runs) / "last.pt", weights_only=True)["method_state"]
    assert set(state) == {"project.weight"}

    report = run_cli(capsys, "report", runs)
    assert report.code == 0, report.err
    rows = [line for line in report.out.splitlines() if line.startswith("| FeatureMimic |")]
    assert len(rows) == 1, report.out
    assert f"{summary['last_acc']:.2f}" in rows[0]
# --8<-- [end:cli]
