"""From a dataset name to datasets or DataLoaders whose batches are dicts (``image``, ``target``, ...).

``load_datasets`` gives the two datasets (for callers with their own sampler, e.g. the engine's resumable
``EpochSampler``); ``build_loaders`` wraps them in seeded DataLoaders. Batch keys: ``image`` (float, normalised),
``target`` (int64), and with ``sample="index"`` or ``"contrast"`` the sample ``index`` (int64, B), with
``"contrast"`` also ``contrast_index`` (int64, B x (nce_k + 1), CRD's positive then negatives). With
``augment="strong"`` training batches also carry ``image_strong`` (MLKD's RandAugment + Cutout view of the same
images, float, normalised); test batches never do.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from distillers.data import transforms
from distillers.data.base import DATASETS, DatasetSpec
from distillers.data.sampling import ContrastSampler, SampledDataset
from distillers.engine.sampler import EpochSampler
from distillers.errors import UserError

SAMPLES = ("plain", "index", "contrast")
AUGMENTS = ("standard", "strong")


@dataclass(frozen=True)
class DataInfo:
    """Facts about the loaded data that models, methods (CRD's memory size) and reports need."""

    name: str
    num_classes: int
    num_train: int
    num_test: int
    input_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


class TwoViewDataset(SampledDataset):
    """A ``SampledDataset`` whose base transform is ``TwoViews``: items carry ``image`` (weak) and ``image_strong``.

    ``views`` names the image keys, so a loader that rebuilds batches itself (the GPU path) can tell that it would
    drop the strong view.
    """

    views = ("image", "image_strong")

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = super().__getitem__(index)
        item["image"], item["image_strong"] = item["image"]
        return item


def get_dataset(name: str) -> DatasetSpec:
    """The registered spec (unknown names raise a UserError listing the valid ones)."""
    return DATASETS.get(name)


def strong_transform(spec: DatasetSpec) -> transforms.Transform:
    """MLKD's strong view for ``spec``: the dataset's own train pipeline (resize, crop, flip, normalisation) plus
    RandAugment and Cutout (see ``transforms.strong_transform``)."""
    try:
        return transforms.strong_transform(spec.train_transform())
    except ValueError as error:
        raise UserError(f"--augment strong is not available for {spec.title}: {error}") from error


def load_datasets(dataset: str, data_dir: str | Path, *, download: bool = False, sample: str = "plain",
                  nce_k: int = 16384, mode: str = "exact", percent: float = 1.0, seed: int = 0,
                  train_transform: Callable | None = None, test_transform: Callable | None = None,
                  augment: str = "standard", input_size: int | None = None
                  ) -> tuple[SampledDataset, SampledDataset, DataInfo]:
    """Train and test datasets yielding dicts, with the dataset's own transforms unless others are given.

    ``sample`` picks what a train item carries besides image and target: ``"index"`` adds the sample index,
    ``"contrast"`` also CRD's ``contrast_index`` (``nce_k``, ``mode``, ``percent`` as in RepDistiller; ``seed``
    fixes the percent cut and the draws). ``augment="strong"`` adds ``image_strong``, drawn independently of
    ``image`` from the same picture (``train_transform`` replaces only the weak view). Nothing is downloaded
    unless ``download`` is true.
    """
    if sample not in SAMPLES:
        raise UserError(f"unknown sample kind {sample!r}; choose one of: {', '.join(SAMPLES)}")
    if augment not in AUGMENTS:
        raise UserError(f"unknown --augment {augment!r}; choose one of: {', '.join(AUGMENTS)}")
    from distillers.data.imagefolder import with_input_size  # here: datasets register in file-name order

    spec = with_input_size(get_dataset(dataset), input_size)  # --input-size: folder datasets only
    root = spec.ensure(data_dir, download)
    train, test = spec.read(root, True), spec.read(root, False)
    train.transform = train_transform or spec.train_transform()
    test.transform = test_transform or spec.test_transform()
    contrast = ContrastSampler(train.labels, nce_k, mode, percent, seed, dataset=f"{spec.title} ({len(train)} "
                               f"training images)") if sample == "contrast" else None
    # Folder datasets (ImageNet, or a subset of it) take their class count from the class folders.
    num_classes = len(getattr(train, "classes", None) or ()) or spec.num_classes
    info = DataInfo(spec.name, num_classes, len(train), len(test), spec.input_size, spec.mean, spec.std)
    if augment == "strong":
        train.transform = transforms.TwoViews(train.transform, strong_transform(spec))
        return TwoViewDataset(train, sample == "index", contrast, seed), SampledDataset(test), info
    return SampledDataset(train, sample == "index", contrast, seed), SampledDataset(test), info


def build_loaders(dataset: str, data_dir: str | Path, batch_size: int = 64, workers: int = 2, *,
                  sample: str = "plain", nce_k: int = 16384, mode: str = "exact", percent: float = 1.0,
                  download: bool = False, seed: int | torch.Generator | None = 0,
                  train_transform: Callable | None = None, test_transform: Callable | None = None,
                  test_batch_size: int | None = None, drop_last: bool = False, augment: str = "standard"
                  ) -> tuple[DataLoader, DataLoader, DataInfo]:
    """``(train_loader, test_loader, info)``: shuffled seeded training batches, ordered test batches.

    ``seed`` is an int or a ``torch.Generator`` (``None``: a random seed). The train loader shuffles with
    ``train_loader.generator``: save its ``get_state()`` before an epoch and restore it to replay that epoch's
    order on resume. Memory is pinned when CUDA is available; workers persist across epochs.
    """
    for flag, value in (("--batch-size", batch_size), ("--test-batch-size", test_batch_size or batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{flag} must be a positive integer, got {value!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise UserError(f"--workers must be an integer >= 0, got {workers!r}")
    if isinstance(seed, torch.Generator):
        generator = seed
    else:
        generator = torch.Generator()
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
    train_set, test_set, info = load_datasets(
        dataset, data_dir, download=download, sample=sample, nce_k=nce_k, mode=mode, percent=percent,
        seed=generator.initial_seed(), train_transform=train_transform, test_transform=test_transform,
        augment=augment)
    common = {"num_workers": workers, "pin_memory": torch.cuda.is_available(), "persistent_workers": workers > 0}
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=generator,
                              drop_last=drop_last, **common)
    test_loader = DataLoader(test_set, batch_size=test_batch_size or batch_size, shuffle=False, **common)
    return train_loader, test_loader, info


def make_loader(dataset: Dataset, batch_size: int, train: bool, workers: int, seed: int,
                device: torch.device, rank: int = 0, world_size: int = 1) -> DataLoader:
    """A DataLoader whose order depends only on (seed, epoch), so resume is exact and DDP shards it.

    Training shards are padded to equal length (every rank must take the same number of steps); evaluation shards
    (``train=False``) are not: rank ``r`` takes images ``r, r + w, ...``, so each test image is scored once.
    """
    sampler: Iterable[int]
    if train:
        sampler = EpochSampler(len(dataset), shuffle=True, seed=seed, rank=rank, world_size=world_size)
    else:
        sampler = range(rank, len(dataset), world_size)
    # Training workers start afresh every epoch: each is then seeded from the torch RNG the engine has just
    # reseeded from (seed, epoch), so augmentations too depend only on (seed, epoch) and a resumed run matches an
    # uninterrupted one. Persistent workers would keep the streams of the process's first epoch (the cost of a
    # restart is a fork per worker and epoch). Test-time transforms draw nothing, so those workers persist.
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=device.type == "cuda", persistent_workers=workers > 0 and not train, drop_last=False)
