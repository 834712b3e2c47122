"""scikit-learn's handwritten digits (1,797 8x8 grey images, 10 classes) as a 32x32 RGB dataset.

It ships inside scikit-learn, so the offline quickstart trains and distils without any network. Images are
scaled from 0..16 to 0..255, upsampled to 32x32 (bilinear) and repeated over three channels; the train/test
split is stratified and fixed (seeded), so every run and every machine sees the same 20% test set.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from distillers.data.base import DATASETS, ArrayImages, DatasetSpec
from distillers.errors import UserError

NUM_CLASSES = 10
INPUT_SIZE = 32
TEST_FRACTION = 0.2
SPLIT_SEED = 0
# Per-channel mean and std of the train split's pixels in [0, 1] (all three channels are equal); measured with
# ``digits_statistics()``, and tests/data/test_digits.py checks they still match.
MEAN = (0.3058, 0.3058, 0.3058)
STD = (0.3236, 0.3236, 0.3236)


def _load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise UserError("the digits dataset comes with scikit-learn, which is not installed: "
                        "pip install scikit-learn") from error
    bunch = load_digits()
    return bunch.images, bunch.target.astype(np.int64)


def _to_rgb32(images: np.ndarray) -> np.ndarray:
    """``(N, 8, 8)`` values 0..16 -> ``(N, 32, 32, 3)`` uint8."""
    grey = np.rint(images * (255.0 / 16.0)).astype(np.uint8)
    large = np.stack([np.asarray(Image.fromarray(image).resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR))
                      for image in grey])
    return np.repeat(large[..., None], 3, axis=-1)


def split_indices(labels: np.ndarray, test_fraction: float = TEST_FRACTION, seed: int = SPLIT_SEED
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split: ``round(test_fraction * n_c)`` random images of every class go to test (sorted indices)."""
    rng = np.random.default_rng(seed)
    test = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        test.append(rng.permutation(members)[:round(test_fraction * len(members))])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(len(labels)), test_idx)
    return train_idx, test_idx


def read_digits(data_dir: str | Path | None = None, train: bool = True) -> ArrayImages:
    """The fixed train (1,438) or test (359) split; ``data_dir`` is ignored (the data ships with scikit-learn)."""
    images, labels = _load_sklearn_digits()
    train_idx, test_idx = split_indices(labels)
    chosen = train_idx if train else test_idx
    return ArrayImages(_to_rgb32(images[chosen]), labels[chosen])


def digits_statistics() -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of the train split in [0, 1] (how ``MEAN`` and ``STD`` were measured)."""
    pixels = read_digits(train=True).images.reshape(-1, 3) / 255.0
    return tuple(pixels.mean(axis=0).tolist()), tuple(pixels.std(axis=0).tolist())


DATASETS.register("digits")(DatasetSpec(
    name="digits", title="digits", num_classes=NUM_CLASSES, input_size=INPUT_SIZE, mean=MEAN, std=STD,
    read=read_digits, missing=lambda data_dir: None, url="scikit-learn (bundled)",
    layout="nothing (bundled with scikit-learn)", padding=2, flip=False))
