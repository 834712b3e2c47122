"""A device-resident data path: the whole uint8 dataset on the training device, augmented and batched there.

The seed decodes, crops, flips and normalises every image on the CPU in DataLoader workers (torchvision's PIL
transforms) and copies float batches to the GPU. CIFAR is 150 MB of uint8, so ``DeviceLoader`` keeps it on the device
and does RandomCrop(32, padding=4) + horizontal flip + Normalize for a whole batch in a few kernels: no per-image
Python, no host sync, no worker processes. The same code runs on CPU tensors (``--data-path device`` on CPU: tests,
the CPU benchmark, and ``auto`` on CPU where the benchmark measured it faster, docs/benchmarks.md).

Images are kept as ``(N, H, W, C)``, the layout ``ArrayImages`` already has: no conversion at load, and the crop
gather then yields a channels_last batch for free (``.contiguous()`` gives plain NCHW when asked). The draws have
torchvision's distribution (and, for given draws, its exact output) but come from a device generator, so the
random stream differs from the seed's PIL workers. No ``Resize``: images must already have the model's input size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from distillers.data.sampling import ContrastSampler
from distillers.engine.sampler import EpochSampler

# --data-path: decide (engine.speed); data resident on the training device (DeviceLoader); DataLoader workers.
DATA_PATHS = ("auto", "device", "cpu")
DATA_PATH_ALIASES = {"gpu": "device"}  # the first release's name


def draw_crop_flip(batch: int, padding: int, flip: bool, generator: torch.Generator | None = None,
                   device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Per-sample crop corners ``(top, left)`` uniform in ``0..2*padding`` and flips with p = 0.5.

    The same distribution as torchvision's ``RandomCrop(size, padding)`` (``randint(0, 2*padding + 1)`` per axis)
    followed by ``RandomHorizontalFlip()``.
    """
    offsets = torch.randint(0, 2 * padding + 1, (batch, 2), generator=generator, device=device)
    if flip:
        flips = torch.randint(0, 2, (batch,), generator=generator, device=device).bool()
    else:
        flips = torch.zeros(batch, dtype=torch.bool, device=device)
    return offsets, flips


def crop_flip(images: Tensor, offsets: Tensor, flips: Tensor, padding: int, index: Tensor | None = None) -> Tensor:
    """Zero-padded crop + horizontal flip of ``(N, H, W, C)`` images, for a whole batch in one gather.

    ``index`` (B,) picks the images (default: all N); ``offsets`` (B, 2) is each crop's ``(top, left)`` corner in
    the image padded by ``padding`` zeros on every side; ``flips`` (B,) mirrors the crop. Returns (B, H, W, C) in
    the input dtype: exactly ``hflip?(crop(pad(image, padding), top, left, H, W))``.
    """
    height, width = images.shape[1], images.shape[2]
    if index is None:
        index = torch.arange(images.shape[0], device=images.device)
    # Source row/column of every output pixel; the padding is whatever falls outside the image.
    rows = offsets[:, :1] - padding + torch.arange(height, device=images.device)  # (B, H)
    cols = offsets[:, 1:] - padding + torch.arange(width, device=images.device)  # (B, W)
    cols = torch.where(flips[:, None], cols.flip(1), cols)
    inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
    out = images[index[:, None, None], rows.clamp(0, height - 1)[:, :, None], cols.clamp(0, width - 1)[:, None, :]]
    return out.masked_fill_(~inside[..., None], 0)


def to_normalized(images: Tensor, mean: Tensor, std: Tensor, channels_last: bool = False) -> Tensor:
    """``(B, H, W, C)`` uint8 -> ``(B, C, H, W)`` float32 ``(x / 255 - mean) / std``.

    The arithmetic is torchvision's ``ToTensor`` then ``Normalize`` op for op, so the values are identical.
    The result is channels_last in memory (free from NHWC) unless ``channels_last`` is false.
    """
    shape = (1, -1, 1, 1)
    out = images.permute(0, 3, 1, 2).float().div_(255).sub_(mean.view(shape)).div_(std.view(shape))
    return out if channels_last else out.contiguous()


def augment(images: Tensor, mean: Tensor, std: Tensor, padding: int = 4, flip: bool = True,
            generator: torch.Generator | None = None, index: Tensor | None = None,
            channels_last: bool = False) -> Tensor:
    """The seed's train augmentation on uint8 NHWC tensors: random crop with zero padding, flip, normalise."""
    batch = images.shape[0] if index is None else index.shape[0]
    offsets, flips = draw_crop_flip(batch, padding, flip, generator, images.device)
    return to_normalized(crop_flip(images, offsets, flips, padding, index), mean, std, channels_last)


def _padded(pools: Sequence[np.ndarray], device: torch.device) -> tuple[Tensor, Tensor]:
    """Ragged index pools as one ``(C, longest)`` int32 tensor (padded with 0) and their lengths (int64)."""
    lengths = torch.tensor([len(pool) for pool in pools], dtype=torch.long)
    table = torch.zeros(len(pools), max(1, int(lengths.max())), dtype=torch.int32)
    for row, pool in enumerate(pools):
        table[row, :len(pool)] = torch.from_numpy(np.asarray(pool, dtype=np.int32))
    return table.to(device), lengths.to(device)


class DeviceContrastSampler:
    """CRD's contrast rows drawn on the device for a whole batch, from a ``ContrastSampler``'s class pools.

    The distribution is the CPU sampler's: column 0 is the sample (``exact``) or a uniform sample of its class
    (``relax``); the ``nce_k`` negatives are a uniform random ordered subset of the class's negative pool (the
    same pools, so ``percent`` cuts carry over), without replacement unless the pool is smaller than ``nce_k``
    (then uniform with replacement, as on the CPU). Only the random stream differs: the draws come from a torch
    generator, not numpy. Pools are one padded int32 table per kind, about ``classes * N * 4`` bytes.
    """

    def __init__(self, sampler: ContrastSampler, device: torch.device | str, kernel: str = "auto") -> None:
        self.nce_k, self.mode = sampler.nce_k, sampler.mode
        self.sampler = sampler
        # ``numpy``: the sampler's own batch draw, 7x faster than top-k on CPU (54 vs 7 ms per batch of 64 at 16,384
        # of 49,500); ``torch``: top-k of random keys, a few kernels on a GPU. auto: numpy on CPU, torch elsewhere.
        if kernel not in ("auto", "numpy", "torch"):
            raise ValueError(f"unknown contrast kernel {kernel!r}")
        self.kernel = kernel if kernel != "auto" else "numpy" if torch.device(device).type == "cpu" else "torch"
        if self.kernel == "numpy":
            return
        self.labels = torch.as_tensor(sampler.labels, device=device)
        self.negatives, self.negative_counts = _padded(sampler.negatives, torch.device(device))
        self.positives, self.positive_counts = _padded(sampler.positives, torch.device(device))
        self.replace = torch.tensor(sampler.replace, dtype=torch.bool, device=device)
        self.any_replace, self.all_replace = any(sampler.replace), all(sampler.replace)

    @staticmethod
    def nbytes(sampler: ContrastSampler) -> int:
        """Device bytes the pools take (for ``fits_on_device``)."""
        return 4 * len(sampler.negatives) * (max(map(len, sampler.negatives)) + max(map(len, sampler.positives)))

    def _uniform_slots(self, counts: Tensor, columns: int, generator: torch.Generator | None) -> Tensor:
        """``(B, columns)`` positions uniform in ``0..counts[b]-1``, with replacement (63-bit draws: no float edge)."""
        draws = torch.randint(0, 2**62, (counts.shape[0], columns), generator=generator, device=counts.device)
        return draws.remainder_(counts[:, None])

    def draw(self, index: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The ``(B, nce_k + 1)`` int64 contrast rows of the samples ``index`` (B,)."""
        if self.kernel == "numpy":
            seed = int(torch.randint(0, 2**62, (), generator=generator))  # the stream still follows ``generator``
            rows = self.sampler.draw_batch(index.numpy(), np.random.default_rng(seed))
            return torch.from_numpy(rows)
        label = self.labels[index]
        counts = self.negative_counts[label]
        if self.all_replace:
            slots = self._uniform_slots(counts, self.nce_k, generator)
        else:
            # Without replacement: the nce_k smallest of one random key per pool member (padding keys sort last),
            # taken in key order, i.e. a uniformly random ordered subset, like numpy's choice(replace=False).
            keys = torch.rand(index.shape[0], self.negatives.shape[1], generator=generator, device=index.device)
            keys.masked_fill_(torch.arange(keys.shape[1], device=index.device) >= counts[:, None], 2.0)
            slots = keys.topk(self.nce_k, dim=1, largest=False, sorted=True).indices
            if self.any_replace:
                slots = torch.where(self.replace[label][:, None], self._uniform_slots(counts, self.nce_k, generator),
                                    slots)
        negatives = self.negatives[label[:, None], slots].long()
        if self.mode == "exact":
            positive = index[:, None]
        else:
            positive = self.positives[label[:, None], self._uniform_slots(self.positive_counts[label], 1, generator)]
        return torch.cat([positive.long(), negatives], dim=1)


def _batch_seed(seed: int, epoch: int, rank: int, position: int) -> int:
    """A well-mixed 64-bit seed for the batch that starts at ``position`` of this rank's epoch order."""
    entropy = [value % 2**64 for value in (seed, epoch, rank, position)]  # SeedSequence wants non-negative ints
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])


class DeviceLoader:
    """A DataLoader stand-in whose data live on ``device``: dict batches, EpochSampler's order, device augmentation.

    ``sampler`` is an ``EpochSampler`` (the engine calls ``sampler.set_epoch(epoch, skip)``); the order of an
    epoch and every random draw depend only on ``(seed, epoch)``: the batch starting at position ``p`` of a rank's
    order reseeds the device generator from ``(seed, epoch, rank, p)``, so a run resumed mid-epoch (skip a multiple
    of ``batch_size``) sees the same batches as an uninterrupted one. ``train=False``: in order, no augmentation.
    Batches: ``image`` (float32, normalised), ``target``, and optionally ``index`` and ``contrast_index``.
    """

    def __init__(self, images: np.ndarray | Tensor, labels: np.ndarray | Tensor, batch_size: int, *,
                 device: torch.device | str, mean: Sequence[float], std: Sequence[float], train: bool = True,
                 seed: int = 0, rank: int = 0, world_size: int = 1, padding: int = 4, flip: bool = True,
                 with_index: bool = False, contrast: ContrastSampler | None = None, channels_last: bool = False,
                 drop_last: bool = False) -> None:
        self.device = torch.device(device)
        self.images = torch.as_tensor(images).to(self.device)
        self.labels = torch.as_tensor(labels, dtype=torch.long).to(self.device)
        if self.images.dtype != torch.uint8 or self.images.ndim != 4 or len(self.images) != len(self.labels):
            raise ValueError(f"expected (N, H, W, C) uint8 images matching {len(self.labels)} labels, got "
                             f"{self.images.dtype} {tuple(self.images.shape)}")
        self.batch_size = batch_size
        self.train = train
        self.seed, self.rank = seed, rank
        self.padding, self.flip = padding, flip
        self.with_index = with_index or contrast is not None
        self.contrast = DeviceContrastSampler(contrast, self.device) if contrast is not None else None
        self.channels_last = channels_last
        self.drop_last = drop_last
        self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device)
        self.std = torch.tensor(std, dtype=torch.float32, device=self.device)
        self.sampler = EpochSampler(len(self.labels), shuffle=train, seed=seed, rank=rank, world_size=world_size)
        self._generator = torch.Generator(device=self.device)

    @classmethod
    def from_dataset(cls, dataset: Any, batch_size: int, **kwargs: Any) -> DeviceLoader:
        """Build from an ``ArrayImages`` or a ``SampledDataset`` around one (its index/contrast settings kept).

        The dataset's own transforms are not used: images must already have the model's input size.
        """
        arrays = array_source(dataset)
        if arrays is None:
            raise ValueError(f"{type(dataset).__name__} does not hold its images as one uint8 array; use a DataLoader")
        kwargs.setdefault("with_index", bool(getattr(dataset, "with_index", False)))
        kwargs.setdefault("contrast", getattr(dataset, "contrast", None))
        return cls(arrays[0], arrays[1], batch_size, **kwargs)

    def __len__(self) -> int:
        remaining = len(self.sampler)  # this rank's samples left in the epoch (after skip)
        return remaining // self.batch_size if self.drop_last else math.ceil(remaining / self.batch_size)

    def __iter__(self) -> Iterator[dict[str, Tensor]]:
        order = torch.as_tensor(list(self.sampler), dtype=torch.long).to(self.device)  # EpochSampler's order
        first = self.sampler.skip
        for number in range(len(self)):
            start = number * self.batch_size
            yield self._batch(order[start:start + self.batch_size], first + start)

    def _batch(self, index: Tensor, position: int) -> dict[str, Tensor]:
        generator = self._generator
        generator.manual_seed(_batch_seed(self.seed, self.sampler.epoch, self.rank, position))
        if self.train:
            pixels = crop_flip(self.images, *draw_crop_flip(len(index), self.padding, self.flip, generator,
                                                            self.device), self.padding, index)
        else:
            pixels = self.images.index_select(0, index)
        batch = {"image": to_normalized(pixels, self.mean, self.std, self.channels_last),
                 "target": self.labels.index_select(0, index)}
        if self.with_index:
            batch["index"] = index
        if self.contrast is not None:
            batch["contrast_index"] = self.contrast.draw(index, generator)
        return batch


GpuLoader = DeviceLoader  # the first release's name


def array_source(dataset: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """``(images, labels)`` of an array-backed dataset (``ArrayImages``, or a wrapper's ``.base``), else None."""
    for candidate in (dataset, getattr(dataset, "base", None)):
        images = getattr(candidate, "images", None)
        if isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4:
            return images, np.asarray(candidate.labels)
    return None


def device_bytes(dataset: Any) -> int | None:
    """Device memory a ``GpuLoader`` of ``dataset`` holds (images, labels, CRD pools), or None if not array-backed."""
    arrays = array_source(dataset)
    if arrays is None:
        return None
    contrast = getattr(dataset, "contrast", None)
    pools = DeviceContrastSampler.nbytes(contrast) if contrast is not None else 0
    return arrays[0].nbytes + 8 * len(arrays[1]) + pools


def fits_on_device(dataset: Any, device: torch.device | str, fraction: float = 0.25) -> bool:
    """Whether ``--data-path auto`` should keep ``dataset`` on ``device``: CUDA, array-backed, and within
    ``fraction`` of the free device memory (the rest is for models, activations and the CRD memory bank)."""
    device = torch.device(device)
    needed = device_bytes(dataset)
    if device.type != "cuda" or needed is None or not torch.cuda.is_available():
        return False
    free, _total = torch.cuda.mem_get_info(device)
    return needed <= fraction * free
