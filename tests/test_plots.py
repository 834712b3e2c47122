"""Report figures: each writes a real, decodable PNG with visible content; user errors are one clear line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image

import distillers.reporting as report
from distillers import rundir
from distillers.errors import UserError
from distillers.reporting import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_real_png(path: Path, returned: Path) -> np.ndarray:
    """The file exists, is what the function returned, is a PNG that decodes, and is not a blank canvas."""
    assert Path(returned) == path and path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.shape[1] > 200
    colours = np.unique(pixels.reshape(-1, pixels.shape[2]), axis=0)
    assert len(colours) > 50  # text, lines, bars and colour maps, not one flat colour
    background = np.all(pixels[..., :3] > 0.98, axis=2).mean()
    assert background < 0.99  # some of the canvas is drawn on (axes, text, markers)
    return pixels


def make_runs(root: Path) -> list[Path]:
    """Two methods x two trials of one pair (one unfinished), with per-epoch metrics."""
    rng = np.random.default_rng(0)
    paths = []
    for method, alpha in (("crd", 0.0), ("kd", 0.9)):
        for trial in (1, 2):
            run = root / f"{method}_{trial}"
            run.mkdir(parents=True)
            config = {"task": "distill", "student": "resnet8x4", "teacher": "resnet32x4", "method": method,
                      "weights": {"gamma": 1.0, "alpha": alpha, "beta": 0.8}, "dataset": "cifar100", "trial": trial}
            (run / rundir.CONFIG).write_text(json.dumps(config))
            epochs = 12 if trial == 1 else 7
            accs = 30 + 4 * np.arange(1, epochs + 1) + rng.normal(0, 1, epochs)
            (run / rundir.METRICS).write_text("".join(json.dumps({"epoch": e + 1, "test_acc": float(a)}) + "\n"
                                                      for e, a in enumerate(accs)))
            status = "finished" if trial == 1 else "interrupted"
            (run / rundir.SUMMARY).write_text(json.dumps({"status": status, "epochs": 12, "epochs_done": epochs,
                                                          "last_acc": float(accs[-1]), "best_acc": float(accs.max())}))
            paths.append(run)
    return paths


def test_accuracy_curves(tmp_path: Path) -> None:
    runs = make_runs(tmp_path / "runs")
    path = tmp_path / "figs" / "curves.png"
    assert_real_png(path, plots.accuracy_curves(runs, path))
    records = report.collect([tmp_path / "runs"])  # records are accepted as well as paths
    assert_real_png(tmp_path / "curves2.png", plots.accuracy_curves(records, tmp_path / "curves2.png"))


def test_accuracy_curves_needs_metrics(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / rundir.CONFIG).write_text(json.dumps({"task": "teacher", "model": "resnet8x4"}))
    assert not plots.has_curve(run)
    with pytest.raises(UserError, match="none of the given runs has test accuracies"):
        plots.accuracy_curves([run], tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_table_bars(tmp_path: Path) -> None:
    make_runs(tmp_path / "runs")
    table = report.build_table(report.collect([tmp_path / "runs"]), published=True)
    path = tmp_path / "bars.png"
    assert_real_png(path, plots.table_bars(table, ("resnet32x4", "resnet8x4"), path))
    assert_real_png(tmp_path / "bars2.png", plots.table_bars(table, "resnet32x4->resnet8x4", tmp_path / "bars2.png"))
    with pytest.raises(UserError, match="pair vgg13->vgg8 is not in the table"):
        plots.table_bars(table, "vgg13->vgg8", tmp_path / "no.png")
    with pytest.raises(UserError, match="is not 'teacher->student'"):
        plots.table_bars(table, "resnet32x4", tmp_path / "no.png")


def test_tsne_plot(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    embeddings = rng.normal(size=(60, 16)) + 4 * np.eye(16)[labels]  # three separable clusters
    path = tmp_path / "tsne.png"
    assert_real_png(path, plots.tsne_plot(embeddings, labels, path))
    with pytest.raises(UserError, match="59 labels for 60 embeddings"):
        plots.tsne_plot(embeddings, labels[:-1], tmp_path / "no.png")


def test_tsne_without_scikit_learn_says_how_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)  # makes the import fail as if not installed
    with pytest.raises(UserError, match=r"pip install distillers\[analysis\]"):
        plots.tsne_plot(np.zeros((10, 2)), np.zeros(10), tmp_path / "no.png")


def test_correlation_difference_plot(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    teacher = rng.normal(size=(200, 10))
    student = teacher + rng.normal(scale=0.8, size=(200, 10))
    path = tmp_path / "corr.png"
    pixels = assert_real_png(path, plots.correlation_difference_plot(teacher, student, path))
    # Identical logits give a zero difference map: the heat map then holds fewer colours than a real one.
    same = tmp_path / "same.png"
    plots.correlation_difference_plot(teacher, teacher, same, max_diff=1.0)
    flat = image.imread(same)
    assert len(np.unique(flat.reshape(-1, 4), axis=0)) < len(np.unique(pixels.reshape(-1, 4), axis=0))
    with pytest.raises(UserError, match=r"\(200, 10\) and \(200, 9\)"):
        plots.correlation_difference_plot(teacher, teacher[:, :9], tmp_path / "no.png")


def test_correlation_accepts_torch_tensors(tmp_path: Path) -> None:
    import torch
    teacher = torch.randn(50, 5, requires_grad=True)
    path = tmp_path / "corr.png"
    assert_real_png(path, plots.correlation_difference_plot(teacher, teacher * 2 + torch.randn(50, 5), path))
