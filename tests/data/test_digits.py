"""digits: the offline quickstart dataset (scikit-learn's 8x8 digits as 32x32 RGB, fixed stratified split)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from distillers.data import DATASETS, build_loaders, load_datasets
from distillers.data import download as download_module
from distillers.data.digits import MEAN, STD, digits_statistics, read_digits, split_indices
from distillers.errors import UserError


def test_split_is_stratified_disjoint_complete_and_fixed():
    labels = load_digits().target
    train_idx, test_idx = split_indices(labels)
    assert len(train_idx) + len(test_idx) == 1797 and not set(train_idx) & set(test_idx)
    for label in range(10):
        assert (labels[test_idx] == label).sum() == round(0.2 * (labels == label).sum())
    again = split_indices(labels)
    assert np.array_equal(again[0], train_idx) and np.array_equal(again[1], test_idx)


def test_images_are_32x32_rgb_scaled_from_the_8x8_originals():
    bunch = load_digits()
    train_idx, test_idx = split_indices(bunch.target)
    test = read_digits(train=False)
    assert test.images.shape == (len(test_idx), 32, 32, 3) and test.images.dtype == np.uint8
    np.testing.assert_array_equal(test.labels, bunch.target[test_idx])
    assert (test.images[..., 0] == test.images[..., 2]).all()
    # 4x4 block means of the upsampled image track the original 0..16 intensities scaled to 0..255
    blocks = test.images[..., 0].reshape(-1, 8, 4, 8, 4).mean(axis=(2, 4))
    original = bunch.images[test_idx] * 255 / 16
    assert np.corrcoef(blocks.ravel(), original.ravel())[0, 1] > 0.95
    assert np.array_equal(read_digits(train=False).images, test.images)  # deterministic


def test_normalisation_constants_match_the_train_split():
    mean, std = digits_statistics()
    np.testing.assert_allclose(mean, MEAN, atol=1e-4)
    np.testing.assert_allclose(std, STD, atol=1e-4)


def test_loaders_work_offline_and_never_download(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("digits must never download")

    monkeypatch.setattr(download_module, "download_and_extract_archive", no_network)
    spec = DATASETS.get("digits")
    assert (spec.num_classes, spec.input_size, spec.flip) == (10, 32, False)
    train_loader, test_loader, info = build_loaders("digits", tmp_path / "unused", batch_size=128, workers=0,
                                                    download=True, seed=0)
    assert (info.num_classes, info.num_train, info.num_test) == (10, 1438, 359)
    batch = next(iter(train_loader))
    assert batch["image"].shape == (128, 3, 32, 32) and batch["target"].dtype == torch.int64
    targets = torch.cat([b["target"] for b in test_loader])
    assert sorted(targets.unique().tolist()) == list(range(10))
    assert not (tmp_path / "unused").exists()


def test_contrast_sampling_on_digits_needs_a_small_nce_k():
    labels = read_digits(train=True).labels
    available = len(labels) - np.bincount(labels).min()  # negatives of the smallest class
    with pytest.raises(UserError, match=f"nce_k=16384 is larger than the {available} negatives .*--nce_k {available}"):
        load_datasets("digits", ".", sample="contrast")
    train, _, _ = load_datasets("digits", ".", sample="contrast", nce_k=256)
    assert train[0]["contrast_index"].shape == (257,)
