"""CRD contrastive sampling: the sampler on its own, and through the real CIFAR-100 loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torchvision import transforms as T

from distillers.data import ArrayImages, ContrastSampler, SampledDataset, build_loaders
from distillers.errors import UserError

from .fake_data import write_cifar100


def balanced_labels(num_classes: int = 5, per_class: int = 20, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.arange(num_classes * per_class) % num_classes)


def test_exact_mode_row_is_self_then_distinct_negatives_of_other_classes():
    labels = balanced_labels()
    sampler = ContrastSampler(labels, nce_k=30, mode="exact")
    rng = np.random.default_rng(0)
    for index in range(len(labels)):
        row = sampler.draw(index, rng)
        assert row.shape == (31,) and row.dtype == np.int64
        assert row[0] == index
        negatives = row[1:]
        assert (labels[negatives] != labels[index]).all()
        assert len(np.unique(negatives)) == 30  # 80 candidates >= 30: no replacement


def test_relax_mode_positive_is_a_random_sample_of_the_same_class():
    labels = balanced_labels()
    sampler = ContrastSampler(labels, nce_k=10, mode="relax")
    rng = np.random.default_rng(1)
    positives = np.array([sampler.draw(7, rng)[0] for _ in range(200)])
    assert (labels[positives] == labels[7]).all()
    assert len(np.unique(positives)) > 10  # drawn over the whole class (20 members), not the sample itself


def test_all_negatives_are_reachable_and_uniform_enough():
    labels = balanced_labels(num_classes=4, per_class=10)
    sampler = ContrastSampler(labels, nce_k=5)
    rng = np.random.default_rng(2)
    counts = np.bincount(np.concatenate([sampler.draw(0, rng)[1:] for _ in range(600)]), minlength=len(labels))
    others = labels != labels[0]
    assert (counts[others] > 0).all() and (counts[~others] == 0).all()
    assert counts[others].min() > 0.5 * counts[others].mean()


def test_percent_cuts_each_class_pool_once():
    labels = balanced_labels(num_classes=5, per_class=20)
    sampler = ContrastSampler(labels, nce_k=8, percent=0.25, seed=3)
    for label, pool in enumerate(sampler.negatives):
        assert len(pool) == int(80 * 0.25)
        assert len(np.unique(pool)) == len(pool) and (labels[pool] != label).all()
    rng = np.random.default_rng(4)
    index = int(np.flatnonzero(labels == 2)[0])
    drawn = np.concatenate([sampler.draw(index, rng)[1:] for _ in range(100)])
    assert set(drawn.tolist()) <= set(sampler.negatives[2].tolist())
    same = ContrastSampler(labels, nce_k=8, percent=0.25, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(same.negatives, sampler.negatives))


def test_replacement_only_for_classes_whose_pool_is_too_small():
    labels = np.array([0] * 30 + [1] * 3)  # class 1 sees 30 negatives, class 0 only 3
    sampler = ContrastSampler(labels, nce_k=6)
    rng = np.random.default_rng(5)
    row_of_1 = sampler.draw(31, rng)
    assert len(np.unique(row_of_1[1:])) == 6 and (labels[row_of_1[1:]] == 0).all()
    row_of_0 = sampler.draw(0, rng)
    assert set(row_of_0[1:].tolist()) <= {30, 31, 32}  # with replacement, still never class 0


def test_errors_are_user_errors_naming_the_value():
    labels = balanced_labels()
    with pytest.raises(UserError, match="nce_k=81 .* 80 negatives .*--nce_k 80"):
        ContrastSampler(labels, nce_k=81)
    with pytest.raises(UserError, match="percent"):
        ContrastSampler(labels, nce_k=10, percent=0.1)  # 8 negatives left per class
    with pytest.raises(UserError, match="mode 'loose'"):
        ContrastSampler(labels, nce_k=4, mode="loose")
    with pytest.raises(UserError, match="in \\(0, 1\\]"):
        ContrastSampler(labels, nce_k=4, percent=0)
    with pytest.raises(UserError, match="two classes"):
        ContrastSampler(np.zeros(5, dtype=np.int64), nce_k=1)


@pytest.fixture(scope="module")
def cifar100(tmp_path_factory):
    return write_cifar100(tmp_path_factory.mktemp("c100"), n_train=300, n_test=100, seed=7)


def test_contrast_batches_from_the_real_loader(cifar100):
    train_loader, test_loader, info = build_loaders("cifar100", cifar100.root, batch_size=32, workers=0,
                                                    sample="contrast", nce_k=50, mode="exact", seed=0)
    assert info.num_train == 300
    labels = torch.from_numpy(cifar100.train.labels)
    seen = []
    for batch in train_loader:
        assert set(batch) == {"image", "target", "index", "contrast_index"}
        index, rows = batch["index"], batch["contrast_index"]
        assert index.dtype == torch.int64 and rows.dtype == torch.int64
        assert rows.shape == (len(index), 51)
        assert torch.equal(rows[:, 0], index)
        assert torch.equal(batch["target"], labels[index])
        assert (labels[rows[:, 1:]] != batch["target"][:, None]).all()
        seen.append(index)
    assert sorted(torch.cat(seen).tolist()) == list(range(300))
    assert set(next(iter(test_loader))) == {"image", "target"}


def test_contrast_rows_are_seeded_and_differ_across_workers(cifar100):
    def rows(workers: int, seed: int) -> torch.Tensor:
        loader, _, _ = build_loaders("cifar100", cifar100.root, batch_size=50, workers=workers,
                                     sample="contrast", nce_k=20, mode="relax", seed=seed)
        return torch.cat([b["contrast_index"][b["index"].argsort()] for b in loader])

    assert torch.equal(rows(0, 1), rows(0, 1))
    assert not torch.equal(rows(0, 1), rows(0, 2))
    assert torch.equal(rows(2, 1), rows(2, 1))


def test_each_worker_has_its_own_generator():
    # Items 0 and 1 share a class (same pool) and are the first draws of workers 0 and 1: a generator copied
    # into both workers would give them the same negatives.
    labels = np.array([0] * 10 + [1] * 30)
    base = ArrayImages(np.zeros((40, 2, 2, 3), np.uint8), labels, transform=T.ToTensor())
    dataset = SampledDataset(base, contrast=ContrastSampler(labels, nce_k=20), seed=0)
    loader = DataLoader(dataset, batch_size=1, num_workers=2, generator=torch.Generator().manual_seed(0))
    first, second = [batch["contrast_index"][0] for _, batch in zip(range(2), loader)]
    assert not torch.equal(first[1:], second[1:])
    assert (labels[first[1:].numpy()] == 1).all() and (labels[second[1:].numpy()] == 1).all()


def test_contrast_nce_k_too_large_for_the_dataset(cifar100):
    with pytest.raises(UserError, match="nce_k=16384 is larger than the 297 negatives .*CIFAR-100"):
        build_loaders("cifar100", cifar100.root, workers=0, sample="contrast")
