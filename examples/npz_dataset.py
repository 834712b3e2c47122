"""A dataset kept as one NumPy archive, registered as ``npz_example``: the docs' "Adding a dataset" example.

Layout: ``<data-dir>/npz_example/images.npz`` with four arrays, ``train_images`` and ``test_images`` (uint8,
N x H x W x 3) and ``train_labels`` and ``test_labels`` (integers 0 .. NUM_CLASSES - 1). The spec tells the
loaders its class count, input size, normalisation and where its files are; they do the rest (augmentation,
CRD's sampling, the GPU-resident path, the missing-files message).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distillers.data.base import DATASETS, ArrayImages, DatasetSpec, first_missing
from distillers.errors import UserError

NUM_CLASSES = 10
INPUT_SIZE = 32
# Per-channel mean and std of the train images in [0, 1]. These are placeholders: compute your own with
# channel_statistics() below and write them here (the CIFAR specs hold the values of their train splits).
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
FILE = Path("npz_example") / "images.npz"


def read_npz(data_dir: Path, train: bool) -> ArrayImages:
    """One split; ``allow_pickle=False`` because a data file is untrusted input, like a checkpoint."""
    split = "train" if train else "test"
    with np.load(data_dir / FILE, allow_pickle=False) as arrays:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"].astype(np.int64)
    if labels.size and not 0 <= labels.min() <= labels.max() < NUM_CLASSES:
        raise UserError(f"{data_dir / FILE}: {split}_labels must lie in 0..{NUM_CLASSES - 1}, "
                        f"got {labels.min()}..{labels.max()}")
    return ArrayImages(images, labels)


def channel_statistics(data_dir: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std per channel of the train images in [0, 1]: the values MEAN and STD should hold."""
    pixels = read_npz(Path(data_dir), train=True).images.reshape(-1, 3) / 255.0
    return tuple(pixels.mean(axis=0).tolist()), tuple(pixels.std(axis=0).tolist())


DATASETS.register("npz_example")(DatasetSpec(
    name="npz_example", title="npz example", num_classes=NUM_CLASSES, input_size=INPUT_SIZE, mean=MEAN, std=STD,
    read=read_npz, missing=lambda data_dir: first_missing(data_dir / FILE),
    url="your own files", layout=str(FILE)))
