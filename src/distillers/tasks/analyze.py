"""The seed's two analysis plots from a teacher/student checkpoint pair (plot_tsne.py and plot_corr.py)."""

from __future__ import annotations

from pathlib import Path

import torch

from distillers.data.loaders import make_loader
from distillers.engine.device import resolve_device, to_device
from distillers.errors import UserError
from distillers.tasks.evaluate import load_model


@torch.no_grad()
def embed(model: torch.nn.Module, loader, device: torch.device, limit: int) -> tuple[torch.Tensor, ...]:
    """Pooled embeddings, logits and labels of up to ``limit`` test images."""
    model.eval()
    feats, logits, labels, seen = [], [], [], 0
    for batch in loader:
        batch = to_device(batch, device)
        batch_feats, batch_logits = model(batch["image"], is_feat=True)
        feats.append(batch_feats[-1].flatten(1).float().cpu())
        logits.append(batch_logits.float().cpu())
        labels.append(batch["target"].cpu())
        seen += len(batch["target"])
        if seen >= limit:
            break
    return torch.cat(feats)[:limit], torch.cat(logits)[:limit], torch.cat(labels)[:limit]


def analyze(teacher_ckpt: str, student_ckpt: str, out: str, dataset: str = "cifar100", data_dir: str = "./data",
            teacher_arch: str | None = None, student_arch: str | None = None, tsne_points: int = 2000,
            device: str = "auto", download: bool = False) -> list[Path]:
    """Write ``tsne_student.png`` and ``correlation_difference.png`` into ``out``; returns their paths."""
    from distillers.data import load_datasets
    from distillers.reporting.plots import correlation_difference_plot, tsne_plot

    folder = Path(out)
    blocked = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocked is not None:  # said before minutes of embedding, not after
        raise UserError(f"--out {out} cannot hold the plots: {blocked} is a file; choose a folder")
    _, test_set, info = load_datasets(dataset, data_dir, download=download)
    torch_device = resolve_device(device)
    teacher, teacher_name, _ = load_model(teacher_ckpt, teacher_arch, info.num_classes)
    student, student_name, _ = load_model(student_ckpt, student_arch, info.num_classes)
    loader = make_loader(test_set, 256, False, 0, 0, torch_device)
    limit = len(test_set)
    _, logits_t, _ = embed(teacher.to(torch_device), loader, torch_device, limit)
    feats_s, logits_s, labels = embed(student.to(torch_device), loader, torch_device, limit)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create --out {out}: {error.strerror or error}; choose another folder") from error
    shown = min(tsne_points, len(labels))
    return [
        tsne_plot(feats_s[:shown], labels[:shown], folder / "tsne_student.png",
                  title=f"t-SNE of {student_name} embeddings ({dataset} test, {shown} images)"),
        correlation_difference_plot(logits_t, logits_s, folder / "correlation_difference.png",
                                    title=f"|corr({teacher_name}) - corr({student_name})| of test logits"),
    ]
