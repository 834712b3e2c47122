"""The "Adding a model" and "Adding a dataset" guides, run: examples/tiny_cnn.py keeps the feature contract the
methods rely on, examples/npz_dataset.py reads its archive, and both train together through the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cli.conftest import FAST, only_child, read_run, run_cli
from distillers.data import DATASETS, build_loaders
from distillers.errors import UserError
from distillers.methods import METHODS, Pair, Step
from distillers.models import create_model, feature_shapes

pytestmark = pytest.mark.usefixtures("examples_loaded")
N_TRAIN, N_TEST, CLASSES = 40, 20, 10


# --8<-- [start:write]
def write_npz(root: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """``root/npz_example/images.npz`` in the layout the example dataset documents."""
    rng = np.random.default_rng(seed)
    arrays = {"train_images": rng.integers(0, 256, (N_TRAIN, 32, 32, 3), dtype=np.uint8),
              "train_labels": np.arange(N_TRAIN) % CLASSES,
              "test_images": rng.integers(0, 256, (N_TEST, 32, 32, 3), dtype=np.uint8),
              "test_labels": np.arange(N_TEST) % CLASSES}
    (root / "npz_example").mkdir(parents=True)
    np.savez(root / "npz_example" / "images.npz", **arrays)
    return arrays
# --8<-- [end:write]


# --8<-- [start:contract]
def test_tiny_cnn_keeps_the_feature_contract() -> None:
    torch.manual_seed(0)
    model = create_model("tiny_cnn", num_classes=7).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        feats, logits = model(x, is_feat=True)
        preacts, _ = model(x, is_feat=True, preact=True)
        plain = model(x)
    assert [tuple(f.shape[1:]) for f in feats] == feature_shapes(model) == [tuple(f.shape[1:]) for f in preacts]
    assert tuple(logits.shape) == (2, 7) and torch.equal(plain, logits)
    for stage in (1, 2, 3):  # pre-activations can be negative; the outputs are their ReLU
        assert preacts[stage].min() < 0 and torch.equal(feats[stage], preacts[stage].clamp(min=0))
    assert len(model.get_bn_before_relu()) == 3
    assert sum(p.numel() for p in model.get_feat_modules().parameters()) == \
        sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in model.fc.parameters())
# --8<-- [end:contract]


# --8<-- [start:methods]
@pytest.mark.parametrize("method", ["fitnet", "at", "vid", "ofd", "feature_mimic"])
def test_tiny_cnn_serves_feature_methods(method: str) -> None:
    """Methods size their modules from tiny_cnn's metadata alone, and their loss reaches the student's stem."""
    torch.manual_seed(0)
    student, teacher = create_model("tiny_cnn"), create_model("resnet14").eval()
    cls = METHODS.get(method)
    built = cls.build(Pair(student, teacher, "tiny_cnn", "resnet14"))
    x, target = torch.randn(4, 3, 32, 32), torch.arange(4)
    feats_s, logits_s = student(x, is_feat=True, preact=cls.preact)
    with torch.no_grad():
        teacher_preact = cls.preact if cls.teacher_preact is None else cls.teacher_preact
        feats_t, logits_t = teacher(x, is_feat=True, preact=teacher_preact)
    value = built(Step(feats_s, feats_t, logits_s, logits_t, target))
    loss = sum(value.values()) if isinstance(value, dict) else value
    loss.backward()
    assert torch.isfinite(loss) and student.stem[0].weight.grad.abs().sum() > 0
# --8<-- [end:methods]


# --8<-- [start:load]
def test_npz_dataset_reads_its_archive_and_says_what_is_missing(tmp_path: Path) -> None:
    arrays = write_npz(tmp_path)
    spec = DATASETS.get("npz_example")
    train = spec.load(tmp_path, train=True)
    assert len(train) == N_TRAIN and np.array_equal(train.labels, arrays["train_labels"])
    assert np.array_equal(np.asarray(train.image(3)), arrays["train_images"][3])
    train_loader, _, info = build_loaders("npz_example", tmp_path, batch_size=8, workers=0)
    batch = next(iter(train_loader))
    assert tuple(batch["image"].shape) == (8, 3, 32, 32) and info.num_classes == CLASSES
    with pytest.raises(UserError, match=r"npz example not found: .*images\.npz"):
        spec.load(tmp_path / "elsewhere", train=True)
# --8<-- [end:load]


# --8<-- [start:cli]
def test_model_and_dataset_train_through_the_cli(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    write_npz(tmp_path / "data")
    listing = run_cli(capsys, "list", "models")
    assert any(line.split()[0] == "tiny_cnn" for line in listing.out.splitlines())
    listing = run_cli(capsys, "list", "datasets")
    assert any(line.split()[:2] == ["npz_example", str(CLASSES)] for line in listing.out.splitlines())

    result = run_cli(capsys, "train-teacher", "--model", "tiny_cnn", "--dataset", "npz_example", "--data-dir",
                     tmp_path / "data", "--epochs", "1", "--batch-size", "8", "--out", tmp_path / "runs", *FAST)
    assert result.code == 0, result.err
    config, metrics, summary = read_run(only_child(tmp_path / "runs"))
    assert config["model"] == "tiny_cnn" and config["dataset"] == "npz_example"
    assert summary["status"] == "finished" and len(metrics) == 1
    assert metrics[0]["test_acc"] == summary["last_acc"]
# --8<-- [end:cli]
