"""End to end through the CLI: a plain timm state dict as teacher, timm students, a folder of generated PNGs
(3 classes), ``distill`` then ``eval`` of the run's checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from distillers import cli

FAST = ["--workers", "0", "--device", "cpu", "--epochs", "1", "--batch-size", "8"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``data/{train,val}/{cat,dog,eel}/*.png`` and ``T.pth``, a plain timm resnet18 state dict for 3 classes."""
    root = tmp_path_factory.mktemp("own")
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("val", 2)):
        for name in ("cat", "dog", "eel"):
            (root / "data" / split / name).mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (40, 36, 3), dtype=np.uint8)).save(
                    root / "data" / split / name / f"{i}.png")
    torch.manual_seed(0)
    torch.save(timm.create_model("resnet18", num_classes=3).state_dict(), root / "T.pth")
    return root


def run(capsys: pytest.CaptureFixture, *argv: object) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = cli.main([str(arg) for arg in argv])
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.slow
def test_crd_from_a_timm_state_dict_then_eval(folder: Path, capsys: pytest.CaptureFixture) -> None:
    code, text = run(capsys, "distill", "--teacher", folder / "T.pth", "--teacher-arch", "timm:resnet18",
                     "--student", "timm:mobilenetv3_small_050", "--dataset", "imagefolder", "--data-dir",
                     folder / "data", "--method", "crd", "--nce-k", "8", "--out", folder / "runs", *FAST)
    assert code == 0, text
    run_dir = next((folder / "runs").iterdir())
    config = json.loads((run_dir / "config.json").read_text())
    assert config["classes"] == ["cat", "dog", "eel"] and config["num_classes"] == 3
    checkpoint = torch.load(run_dir / "last.pt", weights_only=True)
    assert checkpoint["arch"] == "timm:mobilenetv3_small_050"
    assert set(checkpoint["model"]) == set(timm.create_model("mobilenetv3_small_050", num_classes=3).state_dict())
    code, text = run(capsys, "eval", "--ckpt", run_dir / "last.pt", "--dataset", "imagefolder", "--data-dir",
                     folder / "data", "--device", "cpu", "--workers", "0")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert code == 0 and f"top-1 {summary['last_acc']:.2f}%" in text, (text, summary)


@pytest.mark.slow
def test_vit_student_with_fitnet_and_refused_ab(folder: Path, capsys: pytest.CaptureFixture) -> None:
    common = ["--teacher", folder / "T.pth", "--teacher-arch", "timm:resnet18", "--student",
              "timm:vit_tiny_patch16_224,patch_size=4", "--dataset", "imagefolder", "--data-dir", folder / "data",
              "--out", folder / "vit", *FAST]
    code, text = run(capsys, "distill", *common, "--method", "fitnet", "--max-steps-per-epoch", "1")
    assert code == 0, text
    checkpoint = torch.load(next((folder / "vit").iterdir()) / "last.pt", weights_only=True)
    assert checkpoint["arch"] == "timm:vit_tiny_patch16_224,patch_size=4,img_size=32"
    assert checkpoint["model"]["pos_embed"].shape == (1, 65, 192)  # 8x8 patches of 4 px plus the class token
    code, text = run(capsys, "eval", "--ckpt", next((folder / "vit").iterdir()) / "last.pt", "--dataset",
                     "imagefolder", "--data-dir", folder / "data", "--device", "cpu", "--workers", "0")
    assert code == 0 and text.startswith("timm:vit_tiny_patch16_224,patch_size=4,img_size=32 on imagefolder: top-1")
    code, text = run(capsys, "distill", *common, "--method", "ab", "--name", "ab")
    assert code == 2 and "pre-activation" in text and len(text.strip().splitlines()) == 1
    assert not (folder / "vit" / "ab").exists()


@pytest.mark.slow
def test_several_teachers_for_logit_methods(folder: Path, capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(1)
    torch.save(timm.create_model("mobilenetv3_small_050", num_classes=3).state_dict(), folder / "T2.pth")
    common = ["--teacher", folder / "T.pth", "--teacher-arch", "timm:resnet18", "--teacher",
              f"timm:mobilenetv3_small_050={folder / 'T2.pth'}", "--student", "timm:mobilenetv3_small_050",
              "--dataset", "imagefolder", "--data-dir", folder / "data", "--out", folder / "ens", *FAST]
    code, text = run(capsys, "distill", *common, "--method", "dkd", "--teacher-weighting", "3,1", "--name", "dkd")
    assert code == 0, text
    config = json.loads((folder / "ens" / "dkd" / "config.json").read_text())
    assert config["teacher"] == "timm:resnet18+timm:mobilenetv3_small_050"
    code, text = run(capsys, "distill", *common, "--method", "fitnet", "--name", "fitnet")
    assert code == 2 and "takes one teacher (got 2)" in text and len(text.strip().splitlines()) == 1
    code, text = run(capsys, "distill", *common, "--method", "kd", "--teacher-weighting", "1", "--name", "w")
    assert code == 2 and "2 non-negative comma-separated weights" in text


def test_ensemble_weighs_logits() -> None:
    from distillers.objective import TeacherEnsemble

    first, second = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    ensemble = TeacherEnsemble([first, second], ["a", "b"], [3.0, 1.0])
    feats, logits = ensemble(x, is_feat=True)
    assert feats == [] and torch.allclose(logits, 0.75 * first(x) + 0.25 * second(x))
    assert torch.allclose(TeacherEnsemble([first, second], ["a", "b"])(x), (first(x) + second(x)) / 2)


def test_pretrained_needs_an_external_teacher(folder: Path, capsys: pytest.CaptureFixture) -> None:
    code, text = run(capsys, "distill", "--teacher-arch", "resnet8", "--pretrained", "--student", "resnet8",
                     "--dataset", "imagefolder", "--data-dir", folder / "data", "--method", "kd",
                     "--out", folder / "zoo", *FAST)
    assert code == 2 and "--pretrained downloads timm:/torchvision: models only" in text


@pytest.mark.slow
def test_train_teacher_on_a_timm_model_at_its_own_size_then_eval_at_that_size(folder: Path, capsys) -> None:
    """``train-teacher --model timm:...`` with ``--input-size 48``: the run records the full model name and the
    size, and ``eval`` scores the checkpoint at 48 px (its loss equals the run's last test loss)."""
    code, text = run(capsys, "train-teacher", "--model", "timm:resnet10t", "--dataset", "imagefolder", "--data-dir",
                     folder / "data", "--input-size", "48", "--out", folder / "teachers", *FAST)
    assert code == 0, text
    run_dir = folder / "teachers" / "timm-resnet10t_imagefolder_vanilla_trial-1"
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["model"], config["input_size"], config["classes"]) == ("timm:resnet10t", 48, ["cat", "dog", "eel"])
    last = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    code, text = run(capsys, "eval", "--ckpt", run_dir / "last.pt", "--dataset", "imagefolder", "--data-dir",
                     folder / "data", "--device", "cpu", "--workers", "0")
    assert code == 0, text
    assert f"loss {last['test_loss']:.4f}" in text, (text, last)
