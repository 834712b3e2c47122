"""Accuracy counting and test-set evaluation, on the device (one host sync per evaluation)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from distillers.engine import distributed
from distillers.engine.device import to_device
from distillers.errors import UserError


def count_correct(logits: Tensor, target: Tensor, topk: tuple[int, ...] = (1, 5)) -> list[Tensor]:
    """Number of samples whose label is among the top-k logits, per k (tensors: no host sync)."""
    k_max = min(max(topk), logits.shape[1])
    predicted = logits.topk(k_max, dim=1).indices
    hits = predicted.eq(target.view(-1, 1))
    return [hits[:, : min(k, k_max)].any(dim=1).sum() for k in topk]


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, device: torch.device, autocast: Callable = contextlib.nullcontext
             ) -> dict[str, float]:
    """Top-1/top-5 accuracy (%) and mean cross-entropy of ``model`` over ``loader``.

    Under DDP every rank must call it with its own, unpadded share of the test set (``data.loaders.make_loader``):
    the sums are added over ranks, so each test image counts exactly once.
    """
    model.eval()
    totals = torch.zeros(4, dtype=torch.float64, device=device)  # loss sum, top1, top5, count
    for batch in loader:
        batch = to_device(batch, device)
        with autocast():
            logits = model(batch["image"])
        logits = logits.float()
        loss = nn.functional.cross_entropy(logits, batch["target"], reduction="sum")
        top1, top5 = count_correct(logits, batch["target"])
        totals += torch.stack([loss.double(), top1.double(), top5.double(),
                               torch.full((), float(len(logits)), device=device, dtype=torch.float64)])
    loss_sum, top1, top5, count = distributed.all_sum(totals).tolist()  # the one host sync of an evaluation
    if count == 0:
        raise UserError("the test set is empty")
    return {"test_acc": 100.0 * top1 / count, "test_acc_top5": 100.0 * top5 / count, "test_loss": loss_sum / count}
