"""The seed's augmentation and normalisation: CIFAR-style crop + flip for training, plain tensors for testing.

Normalisation constants: CIFAR-100, STL-10 and TinyImageNet use the seed's values (``datasets/cifar100.py``,
``dataset/stl10.py``, ``dataset/tinyimagenet200.py`` of giakoumoglou/distillers). CIFAR-10 uses its own
per-channel train-set statistics; the seed reuses the CIFAR-100 constants there (named deviation).

``strong_transform`` is MLKD's second view (``--augment strong``; Jin-Ying/Multi-Level-Logit-Distillation, whose
FixMatch-style strong pipeline is crop + flip + 2 random ops with random magnitudes + Cutout). We use torchvision's
RandAugment op set and ranges (the reference's own list differs: e.g. brightness only darkens, translation up to
30% instead of 45%) and draw every op's magnitude uniformly over all bins. Cutout runs after ``Normalize`` and
zeroes the square there, i.e. fills it with the dataset's mean colour, as the reference's grey fill intends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from PIL import Image
from torch import Tensor, nn
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


def strong_transform(weak: T.Compose, num_ops: int = 2, cutout_fraction: float = 0.5) -> T.Compose:
    """MLKD's strong view built from a dataset's own weak pipeline (crop + flip + ``ToTensor`` + ``Normalize``):
    RandAugment with random magnitudes goes right before ``ToTensor``, Cutout of a random square up to
    ``cutout_fraction`` of the side after ``Normalize``. ``ValueError`` when ``weak`` has no ``ToTensor`` step."""
    steps = list(getattr(weak, "transforms", ()))
    where = next((i for i, step in enumerate(steps) if isinstance(step, T.ToTensor)), None)
    if where is None:
        raise ValueError(f"cannot add a strong view to {weak!r}: expected a Compose with a ToTensor step")
    return T.Compose([*steps[:where], RandomMagnitudeRandAugment(num_ops), *steps[where:], Cutout(cutout_fraction)])


class RandomMagnitudeRandAugment(nn.Module):
    """RandAugment whose ``num_ops`` ops each get a magnitude bin drawn uniformly from ``0..num_magnitude_bins - 1``.

    torchvision's ``RandAugment`` applies one fixed magnitude to every op; MLKD's reference draws a fresh magnitude
    per op, so we apply a one-op torchvision RandAugment ``num_ops`` times with a new bin each time (ops are drawn
    with replacement, like the reference). All draws use torch's RNG, so ``torch.manual_seed`` and DataLoader
    worker seeding make them reproducible.
    """

    def __init__(self, num_ops: int = 2, num_magnitude_bins: int = 31, fill: list[float] | None = None) -> None:
        super().__init__()
        self.num_ops = num_ops
        self.op = T.RandAugment(num_ops=1, magnitude=0, num_magnitude_bins=num_magnitude_bins, fill=fill)

    def forward(self, image: Image.Image | Tensor) -> Image.Image | Tensor:
        for _ in range(self.num_ops):
            self.op.magnitude = int(torch.randint(self.op.num_magnitude_bins, ()).item())
            image = self.op(image)
        return image

    def extra_repr(self) -> str:
        return f"num_ops={self.num_ops}, num_magnitude_bins={self.op.num_magnitude_bins}, magnitude=random"


def cutout(image: Tensor, top: int, left: int, side: int) -> Tensor:
    """A copy of ``image`` (``(..., H, W)``) with the square ``[top, top + side) x [left, left + side)`` set to 0,
    clipped at the bottom and right borders."""
    out = image.clone()
    out[..., top:top + side, left:left + side] = 0
    return out


class Cutout(nn.Module):
    """Zero a random square on a tensor image: side uniform in ``0..int(max_fraction * min(H, W))``, centre a uniform
    pixel; a square crossing the top/left border starts at the border, one crossing the bottom/right is clipped
    (FixMatch's ``CutoutAbs``, which MLKD's reference uses, places it the same way).

    Placed after ``Normalize``, the zero is the dataset's mean colour (the reference fills with a grey close to it).
    """

    def __init__(self, max_fraction: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= max_fraction <= 1.0:
            raise ValueError(f"Cutout max_fraction must be in [0, 1], got {max_fraction}")
        self.max_fraction = max_fraction

    def forward(self, image: Tensor) -> Tensor:
        height, width = image.shape[-2:]
        side = int(torch.randint(int(self.max_fraction * min(height, width)) + 1, ()).item())
        centre_y, centre_x = (int(torch.randint(extent, ()).item()) for extent in (height, width))
        return cutout(image, max(0, centre_y - side // 2), max(0, centre_x - side // 2), side)

    def extra_repr(self) -> str:
        return f"max_fraction={self.max_fraction}"


class TwoViews:
    """Apply two transforms to the same image: ``(weak(image), strong(image))``, drawn in that order."""

    def __init__(self, weak: Transform, strong: Transform) -> None:
        self.weak, self.strong = weak, strong

    def __call__(self, image: object) -> tuple[Tensor, Tensor]:
        return self.weak(image), self.strong(image)

    def __repr__(self) -> str:
        return f"TwoViews(weak={self.weak!r}, strong={self.strong!r})"


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
