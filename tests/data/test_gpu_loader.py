"""The device-resident loader on CPU tensors: augmentation equals torchvision's, its distribution, and the loader's
order, resume, sharding and CRD contrast rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from distillers.data import ArrayImages, ContrastSampler, SampledDataset, transforms
from distillers.data.gpu_loader import (
    DeviceContrastSampler,
    GpuLoader,
    augment,
    crop_flip,
    device_bytes,
    draw_crop_flip,
    fits_on_device,
    to_normalized,
)
from distillers.data.transforms import CIFAR100_MEAN, CIFAR100_STD
from distillers.engine.sampler import EpochSampler

MEAN = torch.tensor(CIFAR100_MEAN)
STD = torch.tensor(CIFAR100_STD)
ALL_PLACEMENTS = [(top, left, flip) for top in range(9) for left in range(9) for flip in (False, True)]



def random_images(n: int, side: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, side, side, 3), dtype=np.uint8)


def balanced_labels(n: int, num_classes: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.arange(n) % num_classes).astype(np.int64)


def torchvision_crop_flip(image: np.ndarray, top: int, left: int, flip: bool) -> torch.Tensor:
    """RandomCrop(32, padding=4) + RandomHorizontalFlip + ToTensor + Normalize for a given draw, via torchvision."""
    padded = TF.pad(Image.fromarray(image), 4, fill=0)
    crop = TF.crop(padded, top, left, 32, 32)
    if flip:
        crop = TF.hflip(crop)
    return TF.normalize(TF.to_tensor(crop), CIFAR100_MEAN, CIFAR100_STD)


def placements(rows: list[tuple[int, int, bool]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([[t, left] for t, left, _ in rows]), torch.tensor([f for _, _, f in rows])


# ---- augmentation ---------------------------------------------------------------------------------------------------
def test_crop_flip_equals_torchvision_for_every_offset_and_flip():
    image = random_images(1, seed=1)
    offsets, flips = placements(ALL_PLACEMENTS)
    same_image = torch.zeros(len(flips), dtype=torch.long)
    ours = to_normalized(crop_flip(torch.from_numpy(image), offsets, flips, 4, same_image), MEAN, STD)
    expected = torch.stack([torchvision_crop_flip(image[0], *placement) for placement in ALL_PLACEMENTS])
    assert ours.shape == (162, 3, 32, 32) and ours.dtype == torch.float32
    torch.testing.assert_close(ours, expected, rtol=0, atol=0)


def test_padding_is_zero_before_normalisation():
    image = torch.full((1, 32, 32, 3), 200, dtype=torch.uint8)
    out = to_normalized(crop_flip(image, torch.tensor([[0, 8]]), torch.tensor([False]), 4), MEAN, STD)[0]
    padding_value = (-MEAN / STD).view(3, 1, 1)
    inside_value = ((200 / 255 - MEAN) / STD).view(3, 1, 1)
    torch.testing.assert_close(out[:, :4, :], padding_value.expand(3, 4, 32))  # top 4 rows: padding
    torch.testing.assert_close(out[:, :, 28:], padding_value.expand(3, 32, 4))  # offset 8 -> right 4 cols padding
    torch.testing.assert_close(out[:, 4:, :28], inside_value.expand(3, 28, 28))


def marker_image() -> torch.Tensor:
    """Channel 0 = row + 1, channel 1 = column + 1: any output pixel tells where it came from (0 = padding)."""
    rows, cols = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    return torch.stack([rows + 1, cols + 1, torch.zeros_like(rows)], dim=-1).to(torch.uint8)[None]


def read_placement(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Crop corner (top, left) and flip of normalised marker crops, read from their centre pixels."""
    pixels = torch.round((out * STD.view(1, 3, 1, 1) + MEAN.view(1, 3, 1, 1)) * 255).long()
    top = pixels[:, 0, 16, 16] - 13  # output row 16 comes from source row top - 4 + 16 (value + 1)
    flipped = pixels[:, 1, 16, 15] > pixels[:, 1, 16, 16]
    left = pixels[:, 1, 16, 16] - torch.where(flipped, 12, 13)  # flipped: output col 16 <- source left - 4 + 15
    return top, left, flipped


def test_augment_offsets_are_uniform_over_0_to_8_and_flips_have_p_half():
    draws = 8100
    generator = torch.Generator().manual_seed(123)
    marker = marker_image()
    out = augment(marker, MEAN, STD, padding=4, generator=generator, index=torch.zeros(draws, dtype=torch.long))
    top, left, flipped = read_placement(out)
    # The read-off placement reproduces every output exactly, so the histograms below are the true draws.
    replay = to_normalized(crop_flip(marker, torch.stack([top, left], 1), flipped, 4,
                                     torch.zeros(draws, dtype=torch.long)), MEAN, STD)
    torch.testing.assert_close(out, replay, rtol=0, atol=0)
    assert set(top.tolist()) == set(range(9)) and set(left.tolist()) == set(range(9))
    joint = torch.bincount(top * 9 + left, minlength=81).double()
    expected = draws / 81
    chi_square = float(((joint - expected) ** 2 / expected).sum())
    assert chi_square < 124.8  # 99.9% quantile of chi-square with 80 degrees of freedom
    for axis in (top, left):
        counts = torch.bincount(axis, minlength=9).double()
        assert float(((counts - draws / 9) ** 2 / (draws / 9)).sum()) < 26.1  # chi-square, 8 dof, 99.9%
    assert abs(flipped.double().mean().item() - 0.5) < 0.02  # 4.4 standard deviations
    # Flips are independent of the crop position.
    assert abs(flipped[top < 4].double().mean().item() - flipped[top >= 4].double().mean().item()) < 0.05


def test_augment_is_reproducible_from_the_generator_and_flip_can_be_disabled():
    images = torch.from_numpy(random_images(16))
    first = augment(images, MEAN, STD, generator=torch.Generator().manual_seed(5))
    again = augment(images, MEAN, STD, generator=torch.Generator().manual_seed(5))
    other = augment(images, MEAN, STD, generator=torch.Generator().manual_seed(6))
    assert torch.equal(first, again) and not torch.equal(first, other)
    _offsets, flips = draw_crop_flip(500, 4, False, torch.Generator().manual_seed(0))
    assert not flips.any()


def test_channels_last_output_has_the_same_values():
    images = torch.from_numpy(random_images(4))
    dense = augment(images, MEAN, STD, generator=torch.Generator().manual_seed(1))
    nhwc = augment(images, MEAN, STD, generator=torch.Generator().manual_seed(1), channels_last=True)
    assert dense.is_contiguous() and nhwc.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(dense, nhwc)


# ---- the loader -----------------------------------------------------------------------------------------------------
def make_loader(n: int = 50, batch_size: int = 8, **kwargs) -> GpuLoader:
    images = kwargs.pop("images", random_images(n))
    labels = kwargs.pop("labels", balanced_labels(n, 5))
    return GpuLoader(images, labels, batch_size, device="cpu", mean=CIFAR100_MEAN, std=CIFAR100_STD, **kwargs)


def epoch_batches(loader: GpuLoader, epoch: int, skip: int = 0) -> list[dict[str, torch.Tensor]]:
    loader.sampler.set_epoch(epoch, skip=skip)
    return list(loader)


def test_an_epoch_covers_every_index_once_in_epoch_sampler_order():
    loader = make_loader(50, 8, seed=3, with_index=True)
    batches = epoch_batches(loader, 2)
    assert len(loader) == len(batches) == 7 and [len(b["index"]) for b in batches] == [8] * 6 + [2]
    index = torch.cat([b["index"] for b in batches])
    assert sorted(index.tolist()) == list(range(50))
    sampler = EpochSampler(50, shuffle=True, seed=3)
    sampler.set_epoch(2)
    assert index.tolist() == list(sampler)
    targets = torch.cat([b["target"] for b in batches])
    assert torch.equal(targets, loader.labels[index]) and targets.dtype == torch.int64
    assert all(b["image"].shape == (len(b["index"]), 3, 32, 32) and b["image"].dtype == torch.float32 for b in batches)
    assert set(batches[0]) == {"image", "target", "index"}


def test_train_images_are_augmentations_of_their_own_samples():
    images = random_images(24, seed=2)
    loader = make_loader(images=images, labels=balanced_labels(24, 3), batch_size=8, with_index=True)
    batch = epoch_batches(loader, 1)[0]
    offsets, flips = placements(ALL_PLACEMENTS)
    for image, index in zip(batch["image"], batch["index"].tolist()):
        candidates = to_normalized(crop_flip(torch.from_numpy(images), offsets, flips, 4,
                                             torch.full((len(flips),), index)), MEAN, STD)
        assert (candidates == image).flatten(1).all(1).sum() >= 1


def test_test_split_is_in_order_without_augmentation():
    images, labels = random_images(20, seed=4), balanced_labels(20, 4)
    loader = make_loader(images=images, labels=labels, batch_size=6, train=False)
    batches = list(loader)
    reference = transforms.test_transform(CIFAR100_MEAN, CIFAR100_STD)
    expected = torch.stack([reference(Image.fromarray(image)) for image in images])
    torch.testing.assert_close(torch.cat([b["image"] for b in batches]), expected, rtol=0, atol=0)
    assert torch.equal(torch.cat([b["target"] for b in batches]), torch.from_numpy(labels))


def test_same_seed_and_epoch_give_identical_batches_and_other_epochs_differ():
    contrast = ContrastSampler(balanced_labels(50, 5), nce_k=6)
    first = epoch_batches(make_loader(seed=7, contrast=contrast), 4)
    again = epoch_batches(make_loader(seed=7, contrast=contrast), 4)
    for a, b in zip(first, again, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    later = epoch_batches(make_loader(seed=7, contrast=contrast), 5)
    assert not torch.equal(first[0]["index"], later[0]["index"])
    other_seed = epoch_batches(make_loader(seed=8, contrast=contrast), 4)
    assert not torch.equal(first[0]["index"], other_seed[0]["index"])


def test_skip_resumes_mid_epoch_with_the_same_batches():
    contrast = ContrastSampler(balanced_labels(50, 5), nce_k=6)
    loader = make_loader(seed=1, contrast=contrast)
    full = epoch_batches(loader, 3)
    loader.sampler.set_epoch(3, skip=16)  # the engine skips completed steps * batch_size
    assert len(loader) == 5
    resumed = list(loader)
    assert len(resumed) == 5
    for a, b in zip(full[2:], resumed, strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_ranks_shard_the_epoch_order():
    shards = []
    for rank in range(2):
        loader = make_loader(50, 8, seed=2, rank=rank, world_size=2, with_index=True)
        assert len(loader) == 4  # 25 samples per rank
        shards.append(torch.cat([b["index"] for b in epoch_batches(loader, 1)]).tolist())
    assert len(shards[0]) == len(shards[1]) == 25
    assert not set(shards[0]) & set(shards[1]) and set(shards[0]) | set(shards[1]) == set(range(50))
    three = [torch.cat([b["index"] for b in epoch_batches(make_loader(50, 8, seed=2, rank=r, world_size=3,
                                                                        with_index=True), 1)]).tolist()
             for r in range(3)]
    assert [len(s) for s in three] == [17] * 3 and set().union(*three) == set(range(50))  # one sample repeated


def test_drop_last_and_batch_size_attribute():
    loader = make_loader(50, 8, drop_last=True)
    assert loader.batch_size == 8 and len(loader) == 6
    assert [len(b["target"]) for b in epoch_batches(loader, 1)] == [8] * 6


def test_exact_contrast_rows_are_self_then_distinct_negatives_of_other_classes():
    labels = balanced_labels(60, 4)
    loader = make_loader(60, 10, labels=labels, contrast=ContrastSampler(labels, nce_k=20))
    for batch in epoch_batches(loader, 1):
        rows = batch["contrast_index"]
        assert rows.shape == (len(batch["index"]), 21) and rows.dtype == torch.int64
        assert torch.equal(rows[:, 0], batch["index"])
        label = torch.from_numpy(labels)
        assert (label[rows[:, 1:]] != label[batch["index"]][:, None]).all()
        assert all(len(set(row)) == 20 for row in rows[:, 1:].tolist())  # 45 candidates: without replacement


def test_relax_contrast_positive_is_a_sample_of_the_same_class():
    labels = balanced_labels(60, 4)
    loader = make_loader(60, 20, labels=labels, contrast=ContrastSampler(labels, nce_k=5, mode="relax"))
    positives, indices = [], []
    for epoch in range(1, 6):
        for batch in epoch_batches(loader, epoch):
            positives.append(batch["contrast_index"][:, 0])
            indices.append(batch["index"])
    positive, index = torch.cat(positives), torch.cat(indices)
    label = torch.from_numpy(labels)
    assert (label[positive] == label[index]).all()
    assert (positive != index).float().mean() > 0.8  # drawn from the class (15 members), not the sample itself


@pytest.mark.parametrize("kernel", ["torch", "numpy"])  # torch: what a GPU runs; numpy: the CPU default
def test_negatives_reach_every_other_class_sample_uniformly(kernel):
    labels = balanced_labels(40, 4)
    contrast = DeviceContrastSampler(ContrastSampler(labels, nce_k=5), "cpu", kernel=kernel)
    sample = int(np.flatnonzero(labels == 0)[0])
    rows = contrast.draw(torch.full((1200,), sample), torch.Generator().manual_seed(9))
    assert all(len(set(row)) == 5 for row in rows[:, 1:].tolist())
    counts = torch.bincount(rows[:, 1:].flatten(), minlength=40).double()
    others = torch.from_numpy(labels != 0)
    assert (counts[~others] == 0).all()
    expected = 1200 * 5 / 30
    assert float(((counts[others] - expected) ** 2 / expected).sum()) < 59.7  # chi-square, 29 dof, 99.9%
    first_column = torch.bincount(rows[:, 1], minlength=40).double()[others]  # the order within a row is random
    assert float(((first_column - 40) ** 2 / 40).sum()) < 59.7


@pytest.mark.parametrize("kernel", ["torch", "numpy"])
def test_small_pools_fall_back_to_replacement_like_the_cpu_sampler(kernel):
    labels = np.array([0] * 30 + [1] * 3)
    loader = make_loader(33, 33, images=random_images(33), labels=labels, contrast=ContrastSampler(labels, nce_k=6))
    loader.contrast = DeviceContrastSampler(ContrastSampler(labels, nce_k=6), "cpu", kernel=kernel)
    batch = epoch_batches(loader, 1)[0]
    rows, index = batch["contrast_index"], batch["index"]
    of_class_0 = rows[torch.from_numpy(labels)[index] == 0, 1:]
    of_class_1 = rows[torch.from_numpy(labels)[index] == 1, 1:]
    assert set(of_class_0.flatten().tolist()) <= {30, 31, 32}  # 3 negatives for 6 slots: with replacement
    assert all(len(set(row)) == 6 and max(row) < 30 for row in of_class_1.tolist())


@pytest.mark.parametrize("kernel", ["torch", "numpy"])
def test_percent_cut_pools_are_respected(kernel):
    labels = balanced_labels(100, 5)
    sampler = ContrastSampler(labels, nce_k=8, percent=0.25, seed=3)
    loader = make_loader(100, 50, images=random_images(100), labels=labels, contrast=sampler)
    loader.contrast = DeviceContrastSampler(sampler, "cpu", kernel=kernel)
    for batch in epoch_batches(loader, 1):
        for row, index in zip(batch["contrast_index"].tolist(), batch["index"].tolist()):
            assert set(row[1:]) <= set(sampler.negatives[labels[index]].tolist())


def test_from_sampled_dataset_keeps_its_index_and_contrast_settings():
    images, labels = random_images(30), balanced_labels(30, 3)
    dataset = SampledDataset(ArrayImages(images, labels), contrast=ContrastSampler(labels, nce_k=4))
    loader = GpuLoader.from_dataset(dataset, 10, device="cpu", mean=CIFAR100_MEAN, std=CIFAR100_STD)
    batch = next(iter(loader))
    assert set(batch) == {"image", "target", "index", "contrast_index"} and batch["contrast_index"].shape == (10, 5)
    with pytest.raises(ValueError, match="uint8 array"):
        GpuLoader.from_dataset(object(), 10, device="cpu", mean=CIFAR100_MEAN, std=CIFAR100_STD)
    with pytest.raises(ValueError, match="uint8 images"):
        GpuLoader(images.astype(np.float32), labels, 4, device="cpu", mean=CIFAR100_MEAN, std=CIFAR100_STD)


def test_fits_on_device_needs_cuda_and_enough_free_memory(monkeypatch):
    images, labels = random_images(10), balanced_labels(10, 2)
    dataset = SampledDataset(ArrayImages(images, labels))
    assert device_bytes(dataset) == images.nbytes + 8 * 10
    assert not fits_on_device(dataset, "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (4 * device_bytes(dataset), 10**12))
    assert fits_on_device(dataset, "cuda", fraction=0.25)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (4 * device_bytes(dataset) - 4, 10**12))
    assert not fits_on_device(dataset, "cuda", fraction=0.25)
    assert not fits_on_device(object(), "cuda")
    with_pools = SampledDataset(ArrayImages(images, labels), contrast=ContrastSampler(labels, nce_k=2))
    assert device_bytes(with_pools) == device_bytes(dataset) + 4 * 2 * (5 + 5)


def test_the_engine_trains_from_it_and_resumes_mid_epoch(tmp_path):
    """The Trainer finds ``sampler``/``batch_size``, consumes the dict batches, and its skip resumes exactly."""
    from distillers.engine.logging import RunLogger
    from distillers.engine.trainer import Loop, Progress, StepSchedule, Trainer
    from distillers.models import create_model
    from distillers.objective import Supervised

    class Recording(Supervised):
        seen: list[list[int]] = []

        def forward(self, batch):
            self.seen.append(batch["index"].tolist())
            return super().forward(batch)

    def fit(progress: Progress | None, run: str) -> list[list[int]]:
        torch.manual_seed(0)
        model = create_model("resnet8", 5)
        objective = Recording(model)
        objective.seen = []
        train = make_loader(48, 16, labels=balanced_labels(48, 5), seed=4, with_index=True)
        test = make_loader(16, 16, labels=balanced_labels(16, 5), train=False)
        (tmp_path / run).mkdir()
        loop = Loop(eval_model=model, train_loader=train, test_loader=test, device=torch.device("cpu"),
                    logger=RunLogger(tmp_path / run, tensorboard=False), checkpoint_payload=dict, show_progress=False)
        trainer = Trainer(loop, objective, torch.optim.SGD(model.parameters(), 0.01), StepSchedule(0.01))
        assert trainer.fit(1, progress).epoch == 1 and train.sampler.epoch == 1
        assert (tmp_path / run / "last.pt").exists()
        return objective.seen

    full = fit(None, "full")
    assert len(full) == 3 and sorted(sum(full, [])) == list(range(48))
    resumed = fit(Progress(epoch=0, step=1, partial=torch.zeros(3, dtype=torch.float64)), "resumed")
    assert resumed == full[1:]
