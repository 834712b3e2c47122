"""`distillers analyze`: the seed's t-SNE and correlation-difference plots from a checkpoint pair."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib import image as mpimg

from data.fake_data import write_cifar100
from distillers import cli
from distillers.models import create_model


def test_analyze_writes_both_plots(tmp_path, capsys):
    write_cifar100(tmp_path / "data", n_train=20, n_test=60)
    for name, arch in (("teacher", "resnet14"), ("student", "resnet8")):
        folder = tmp_path / f"{arch}_vanilla"
        folder.mkdir()
        torch.manual_seed(len(name))
        torch.save({"model": create_model(arch).state_dict()}, folder / f"{name}.pth")
    code = cli.main(["analyze", "--teacher", str(tmp_path / "resnet14_vanilla" / "teacher.pth"), "--student",
                     str(tmp_path / "resnet8_vanilla" / "student.pth"), "--data-dir", str(tmp_path / "data"),
                     "--out", str(tmp_path / "figs"), "--device", "cpu", "--tsne-points", "50"])
    assert code == 0
    for name in ("tsne_student.png", "correlation_difference.png"):
        path = tmp_path / "figs" / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = mpimg.imread(path)
        assert len(np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)) > 50  # a real figure, not a blank
    assert "tsne_student.png" in capsys.readouterr().out
