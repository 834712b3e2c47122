"""A resumable, shardable shuffling sampler: the order of epoch ``e`` depends only on ``(seed, e)``.

That makes a resumed run see exactly the batches an uninterrupted one would, lets a run interrupted
mid-epoch skip the samples it already used, and shards the same order across DDP ranks.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    """Shuffles ``num_samples`` indices per epoch from ``(seed, epoch)``; rank ``r`` of ``w`` takes every w-th."""

    def __init__(self, num_samples: int, shuffle: bool = True, seed: int = 0, rank: int = 0, world_size: int = 1):
        self.num_samples = num_samples
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Select the epoch's order; ``skip`` drops this rank's first samples (mid-epoch resume)."""
        self.epoch = epoch
        self.skip = skip

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            order = torch.arange(self.num_samples)
        else:
            generator = torch.Generator()
            generator.manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num_samples, generator=generator)
        if self.world_size > 1:  # pad so every rank gets the same count, as DistributedSampler does
            padding = (-len(order)) % self.world_size
            order = torch.cat([order, order[:padding]])[self.rank::self.world_size]
        return order

    def __iter__(self) -> Iterator[int]:
        return iter(self._order()[self.skip:].tolist())

    def __len__(self) -> int:
        per_rank = -(-self.num_samples // self.world_size)
        return max(0, per_rank - self.skip)
