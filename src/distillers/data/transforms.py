"""The seed's augmentation and normalisation: CIFAR-style crop + flip for training, plain tensors for testing.

Normalisation constants: CIFAR-100, STL-10 and TinyImageNet use the seed's values (``datasets/cifar100.py``,
``dataset/stl10.py``, ``dataset/tinyimagenet200.py`` of giakoumoglou/distillers). CIFAR-10 uses its own
per-channel train-set statistics; the seed reuses the CIFAR-100 constants there (named deviation).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor
from torchvision import transforms as T

Stats = tuple[float, float, float]

CIFAR100_MEAN: Stats = (0.5071, 0.4867, 0.4408)
CIFAR100_STD: Stats = (0.2675, 0.2565, 0.2761)
CIFAR10_MEAN: Stats = (0.4914, 0.4822, 0.4465)
CIFAR10_STD: Stats = (0.2470, 0.2435, 0.2616)
STL10_MEAN: Stats = (0.4467, 0.4398, 0.4066)
STL10_STD: Stats = (0.2603, 0.2566, 0.2712)
TINY_IMAGENET_MEAN: Stats = (0.4802, 0.4481, 0.3975)
TINY_IMAGENET_STD: Stats = (0.2770, 0.2691, 0.2821)

Transform = Callable[[object], Tensor]


def train_transform(mean: Sequence[float], std: Sequence[float], size: int = 32, padding: int = 4,
                    flip: bool = True, resize: int | None = None) -> Transform:
    """``[Resize] + RandomCrop(size, padding) + [RandomHorizontalFlip] + ToTensor + Normalize`` on PIL images."""
    steps: list = [T.Resize((resize, resize))] if resize else []
    steps.append(T.RandomCrop(size, padding=padding))
    if flip:
        steps.append(T.RandomHorizontalFlip())
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)


def test_transform(mean: Sequence[float], std: Sequence[float], resize: int | None = None) -> Transform:
    """``[Resize] + ToTensor + Normalize``: the deterministic evaluation pipeline."""
    steps: list = [T.Resize((resize, resize))] if resize else []
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)


def denormalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Undo ``Normalize`` on a ``(..., 3, H, W)`` tensor: back to [0, 1] pixel values (plots, checks)."""
    shape = (3, 1, 1)
    mean_t = torch.tensor(mean, dtype=images.dtype, device=images.device).view(shape)
    std_t = torch.tensor(std, dtype=images.dtype, device=images.device).view(shape)
    return images * std_t + mean_t
