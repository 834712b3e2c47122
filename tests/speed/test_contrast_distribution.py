"""CRD's batch draw has the seed's distribution (issue 13): checked statistically, not by hand-picked rows."""

from __future__ import annotations

import numpy as np
import torch

from distillers.data import ArrayImages, ContrastSampler, SampledDataset

CLASSES, PER_CLASS = 5, 20
LABELS = np.random.default_rng(7).permutation(np.arange(CLASSES * PER_CLASS) % CLASSES)


def chi_square_ok(counts: np.ndarray, expected: float) -> bool:
    """Pearson's statistic against a uniform expectation, within 6 standard deviations of its mean (df)."""
    statistic = float(((counts - expected) ** 2 / expected).sum())
    df = len(counts) - 1
    return statistic < df + 6 * np.sqrt(2 * df)


def test_exact_mode_negatives_are_uniform_distinct_and_of_other_classes():
    sampler = ContrastSampler(LABELS, nce_k=30, mode="exact")
    index = 3
    rows = sampler.draw_batch(np.full(4000, index), np.random.default_rng(0))
    assert rows.shape == (4000, 31) and rows.dtype == np.int64
    assert (rows[:, 0] == index).all()
    negatives = rows[:, 1:]
    assert (LABELS[negatives] != LABELS[index]).all()
    assert all(len(set(row)) == 30 for row in negatives.tolist())  # without replacement within an image
    pool = np.flatnonzero(LABELS != LABELS[index])
    counts = np.bincount(negatives.ravel(), minlength=len(LABELS))[pool]
    assert chi_square_ok(counts, 4000 * 30 / len(pool))  # every candidate equally likely
    first = np.bincount(negatives[:, 0], minlength=len(LABELS))[pool]
    assert chi_square_ok(first, 4000 / len(pool))  # an ordered subset: each column uniform too
    bad_counts = np.bincount(np.r_[negatives.ravel(), np.repeat(pool[:5], 400)], minlength=len(LABELS))[pool]
    assert not chi_square_ok(bad_counts, bad_counts.sum() / len(pool))  # the check can fail


def test_batch_draw_matches_the_per_image_draw_in_distribution():
    """The seed's per-image ``draw`` and the batch draw give the same candidate frequencies (two-sample check)."""
    sampler = ContrastSampler(LABELS, nce_k=30)
    rng = np.random.default_rng(1)
    indices = rng.integers(0, len(LABELS), 3000)
    batch = np.bincount(sampler.draw_batch(indices, rng)[:, 1:].ravel(), minlength=len(LABELS))
    single = np.bincount(np.concatenate([sampler.draw(i, rng)[1:] for i in indices]), minlength=len(LABELS))
    statistic = float(((batch - single) ** 2 / (batch + single)).sum())  # chi-square, df = number of samples
    assert statistic < len(LABELS) + 6 * np.sqrt(2 * len(LABELS))


def test_relax_mode_positive_is_uniform_over_the_class():
    sampler = ContrastSampler(LABELS, nce_k=10, mode="relax")
    index = 11
    rows = sampler.draw_batch(np.full(4000, index), np.random.default_rng(2))
    same_class = np.flatnonzero(LABELS == LABELS[index])
    assert np.isin(rows[:, 0], same_class).all()
    assert chi_square_ok(np.bincount(rows[:, 0], minlength=len(LABELS))[same_class], 4000 / PER_CLASS)
    assert (LABELS[rows[:, 1:]] != LABELS[index]).all()


def test_cut_pools_and_pools_smaller_than_nce_k():
    unbalanced = np.r_[np.zeros(60, np.int64), np.arange(40) % 4 + 1]  # class 0's pool: 40 negatives, others' 90
    sampler = ContrastSampler(unbalanced, nce_k=50)
    rows = sampler.draw_batch(np.arange(len(unbalanced)), np.random.default_rng(4))
    assert (unbalanced[rows[:, 1:]] != unbalanced[:, None]).all()
    assert all(len(set(row)) == 50 for row in rows[60:, 1:].tolist())  # large pools: without replacement
    assert max(len(set(row)) for row in rows[:60, 1:].tolist()) <= 40  # class 0: with replacement, as the seed
    cut = ContrastSampler(LABELS, nce_k=20, percent=0.5, seed=3)  # 40 of 80 negatives kept per class
    for index, row in enumerate(cut.draw_batch(np.arange(len(LABELS)), np.random.default_rng(5))):
        assert len(set(row[1:].tolist())) == 20 and set(row[1:].tolist()) <= set(cut.negatives[LABELS[index]].tolist())


def test_loader_batches_draw_per_batch_and_depend_only_on_the_batch():
    images = np.zeros((len(LABELS), 4, 4, 3), np.uint8)
    base = ArrayImages(images, LABELS, transform=lambda image: torch.zeros(1))
    dataset = SampledDataset(base, contrast=ContrastSampler(LABELS, nce_k=8), seed=5)
    batch = [4, 9, 17, 30]
    first = torch.stack([item["contrast_index"] for item in dataset.__getitems__(batch)])
    again = torch.stack([item["contrast_index"] for item in dataset.__getitems__(batch)])
    assert torch.equal(first, again) and first[:, 0].tolist() == batch
    dataset.set_epoch(1)
    other = torch.stack([item["contrast_index"] for item in dataset.__getitems__(batch)])
    assert not torch.equal(first, other)
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, sampler=batch, num_workers=0)
    assert torch.equal(next(iter(loader))["contrast_index"], other)  # the DataLoader goes through __getitems__
