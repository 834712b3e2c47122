"""CRD's contrastive sampling, and the dataset wrapper that hands every batch over as a dict.

Contrastive Representation Distillation (Tian, Krishnan, Isola, ICLR 2020, arXiv 1910.10699). We follow
RepDistiller's ``CIFAR100InstanceSample``: for a sample of class ``c`` the row is ``[positive, k negatives]``;
the positive is the sample itself (``exact``) or a random sample of class ``c`` (``relax``); negatives are drawn
from the samples of all other classes, without replacement when the pool is large enough (else with it);
``percent < 1`` cuts each class's negative pool once, at random, to that fraction of its size. Deviation:
RepDistiller sizes every cut pool from class 0's pool; we use each class's own size (equal on balanced data).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from distillers.errors import UserError

MODES = ("exact", "relax")


class ContrastSampler:
    """Per-class index pools built once; ``draw(index, rng)`` returns ``[positive, negatives...]`` (int64)."""

    def __init__(self, labels: np.ndarray, nce_k: int, mode: str = "exact", percent: float = 1.0, seed: int = 0,
                 dataset: str = "the dataset") -> None:
        if mode not in MODES:
            raise UserError(f"unknown CRD sampling mode {mode!r}; choose one of: {', '.join(MODES)}")
        if not 0.0 < percent <= 1.0:
            raise UserError(f"CRD percent must be in (0, 1], got {percent}")
        if isinstance(nce_k, bool) or not isinstance(nce_k, (int, np.integer)) or nce_k < 1:
            raise UserError(f"nce_k must be a positive integer, got {nce_k!r}")
        self.labels = np.ascontiguousarray(labels, dtype=np.int64)
        self.nce_k, self.mode, self.percent = int(nce_k), mode, percent
        order = np.argsort(self.labels, kind="stable")  # indices grouped by class, ascending within a class
        bounds = np.concatenate(([0], np.cumsum(np.bincount(self.labels))))
        self.positives = [order[bounds[c]:bounds[c + 1]] for c in range(len(bounds) - 1)]
        self.negatives = [np.concatenate((order[:bounds[c]], order[bounds[c + 1]:])) for c in range(len(bounds) - 1)]
        if percent < 1.0:
            rng = np.random.default_rng(seed)
            self.negatives = [rng.permutation(pool)[:int(len(pool) * percent)] for pool in self.negatives]
        present = [c for c, pool in enumerate(self.positives) if len(pool)]
        largest = max(len(self.negatives[c]) for c in present)
        if largest == 0:
            raise UserError(f"CRD sampling needs samples of at least two classes; {dataset} has one")
        if self.nce_k > largest:
            cut = f" ({percent:g} of them, --percent)" if percent < 1.0 else ""
            raise UserError(f"nce_k={self.nce_k} is larger than the {largest} negatives available per sample in "
                            f"{dataset}{cut}; pass --nce_k {largest} or less")
        # Without replacement when the class's pool is large enough, as RepDistiller does.
        self.replace = [self.nce_k > len(self.negatives[c]) for c in range(len(self.negatives))]
        # For ``draw_batch``: pool sizes and where each pool starts, as arrays indexed by class.
        self._order, self._starts = order, bounds[:-1]
        self._class_sizes = np.diff(bounds)
        self._negative_counts = np.array([len(pool) for pool in self.negatives], dtype=np.int64)
        self._cut = np.concatenate(self.negatives) if percent < 1.0 else None  # cut pools, back to back
        self._cut_starts = np.concatenate(([0], np.cumsum(self._negative_counts)[:-1]))

    def draw(self, index: int, rng: np.random.Generator) -> np.ndarray:
        """The ``(nce_k + 1,)`` contrast row of sample ``index``: column 0 the positive, then the negatives."""
        label = self.labels[index]
        row = np.empty(self.nce_k + 1, dtype=np.int64)
        row[0] = index if self.mode == "exact" else rng.choice(self.positives[label])
        row[1:] = rng.choice(self.negatives[label], self.nce_k, replace=self.replace[label])
        return row

    def draw_batch(self, indices: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The ``(B, nce_k + 1)`` contrast rows of a batch at once, with ``draw``'s distribution.

        Each row's negatives are positions in its class's pool: a uniformly random ordered subset (numpy's C
        routine: ~0.1 ms per row at 16,384 of 49,500; the vectorised alternatives, random keys + partition or
        draw-and-redraw duplicates, measured 3-10x slower on CPU), or uniform with replacement when the pool is
        smaller than ``nce_k``. Positions become sample indices by arithmetic on the class-sorted order, without a
        per-class copy of the ~50k candidates; rows are filled one at a time so the temporaries stay in cache.
        """
        indices = np.asarray(indices, dtype=np.int64)
        labels = self.labels[indices]
        rows = np.empty((len(indices), self.nce_k + 1), dtype=np.int64)
        for row, label in enumerate(labels.tolist()):
            count = int(self._negative_counts[label])
            if self.replace[label]:
                slots = rng.integers(0, count, self.nce_k)
            else:
                slots = rng.choice(count, self.nce_k, replace=False)
            self._negative_samples(label, slots, rows[row, 1:])
        if self.mode == "exact":
            rows[:, 0] = indices
        else:
            rows[:, 0] = self._order[self._starts[labels] + rng.integers(0, self._class_sizes[labels])]
        return rows

    def _negative_samples(self, label: int, slots: np.ndarray, out: np.ndarray) -> None:
        """Sample indices at positions ``slots`` of class ``label``'s negative pool, written into ``out``."""
        if self._cut is not None:
            np.take(self._cut, slots + self._cut_starts[label], out=out)
            return
        # The full pool of class c is the class-sorted order without c's block: skip the block.
        np.add(slots, self._class_sizes[label], out=slots, where=slots >= self._starts[label])
        np.take(self._order, slots, out=out)


class SampledDataset(Dataset):
    """Items as dicts: ``image``, ``target``, plus ``index`` (index/contrast) and ``contrast_index`` (contrast).

    Batches fetched through ``__getitems__`` (every DataLoader) draw their contrast rows per batch, see there.
    Single items draw from a numpy generator per process and epoch: seeded from ``(seed, epoch)`` in the main
    process and from ``(seed, epoch, worker seed)`` in a DataLoader worker, so workers never repeat each other's
    draws and a seeded loader gives the same rows run after run.
    """

    def __init__(self, base: Dataset, with_index: bool = False, contrast: ContrastSampler | None = None,
                 seed: int = 0) -> None:
        self.base = base
        self.with_index = with_index or contrast is not None
        self.contrast = contrast
        self.seed = seed
        self.epoch = 0
        self._rng: np.random.Generator | None = None
        self._rng_owner: tuple[int, int | None] | None = None

    @property
    def labels(self) -> np.ndarray:
        return self.base.labels

    def __len__(self) -> int:
        return len(self.base)

    def set_epoch(self, epoch: int) -> None:
        """Restart the contrast draws from ``(seed, epoch)`` (the engine calls this before every epoch)."""
        self.epoch = epoch
        self._rng_owner = None

    def _generator(self) -> np.random.Generator:
        worker = get_worker_info()
        owner = (os.getpid(), worker.seed if worker is not None else None)
        if owner != self._rng_owner:  # first use in this process (forked workers inherit the parent's state)
            entropy = [self.seed, 1, self.epoch] + ([] if worker is None else [worker.seed])
            self._rng, self._rng_owner = np.random.default_rng(entropy), owner
        return self._rng

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, target = self.base[index]
        item: dict[str, Any] = {"image": image, "target": target}
        if self.with_index:
            item["index"] = index
        if self.contrast is not None:
            item["contrast_index"] = torch.from_numpy(self.contrast.draw(index, self._generator()))
        return item

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        """A whole batch (the DataLoader's fetcher calls this): contrast rows drawn for all of it in one call, from
        a generator seeded by ``(seed, epoch, the batch's first and last index, its size)``, so the rows depend only
        on the batch (not on the worker that loads it, nor on where a resumed run restarted)."""
        if self.contrast is None:
            return [self[index] for index in indices]
        order = np.asarray(indices, dtype=np.int64)
        entropy = [self.seed % 2**63, 2, self.epoch, int(order[0]), int(order[-1]), len(order)]
        rows = torch.from_numpy(self.contrast.draw_batch(order, np.random.default_rng(entropy)))
        items = []
        for position, index in enumerate(order.tolist()):
            image, target = self.base[index]
            items.append({"image": image, "target": target, "index": index, "contrast_index": rows[position]})
        return items

    def __getstate__(self) -> dict[str, Any]:  # spawned workers start their own generator
        return {**self.__dict__, "_rng": None, "_rng_owner": None}
