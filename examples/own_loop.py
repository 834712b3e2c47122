"""Distillation in your own training loop: ``distillers.Distiller`` is the command line's objective as a module.

``python examples/own_loop.py`` distils resnet8 from resnet32x4 with DKD for three steps on random images. Swap in
your models (zoo models, ``create_model("timm:...")``, or plain timm and torchvision modules) and your DataLoader.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from distillers import Distiller
from distillers.models import create_model


def distil(teacher: nn.Module, student: nn.Module, batches: Iterable[tuple[Tensor, Tensor]], method: str = "dkd",
           lr: float = 0.05) -> Distiller:
    """Train ``student`` on ``batches`` with ``method`` and its default weights (``gamma=``, ``alpha=``, ``beta=``
    and the method's options would override them); the teacher stays frozen."""
    distiller = Distiller(teacher, student, method)
    optimizer = torch.optim.SGD(distiller.trainable_parameters(), lr=lr, momentum=0.9)
    distiller.train()
    for step, (images, labels) in enumerate(batches):
        loss, terms = distiller(images, labels)  # terms: the named parts of the loss, e.g. ce, tckd, nckd
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        print(f"step {step}: loss {loss.item():.4f} (" + ", ".join(f"{k} {v.item():.4f}" for k, v in terms.items())
              + ")")
    return distiller


if __name__ == "__main__":
    torch.manual_seed(0)
    random_batches = [(torch.randn(8, 3, 32, 32), torch.randint(0, 100, (8,))) for _ in range(3)]
    distil(create_model("resnet32x4"), create_model("resnet8"), random_batches)
