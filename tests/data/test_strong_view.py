"""MLKD's strong second view (``--augment strong``): item contract, weak view untouched, RandAugment with random
magnitudes, Cutout after Normalize (zero = the mean colour), seeded determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import transforms as T

from distillers.data import DATASETS, build_loaders, get_dataset, load_datasets, transforms
from distillers.data.loaders import strong_transform
from distillers.data.transforms import Cutout, RandomMagnitudeRandAugment, cutout, denormalize
from distillers.errors import UserError

from .fake_data import write_cifar100

SPEC = get_dataset("cifar100")


@pytest.fixture(scope="module")
def cifar100(tmp_path_factory):
    return write_cifar100(tmp_path_factory.mktemp("c100"), n_train=24, n_test=8, seed=5)


@pytest.fixture(scope="module")
def strong_sets(cifar100):
    return load_datasets("cifar100", cifar100.root, augment="strong")


def crop_flip_candidates(image: np.ndarray) -> torch.Tensor:
    """Every RandomCrop(32, padding=4) + optional flip of one (32, 32, 3) uint8 image, normalised: (162, 3, 32, 32)."""
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
    crops = [padded[top:top + 32, left:left + 32] for top in range(9) for left in range(9)]
    crops += [crop[:, ::-1] for crop in crops]
    pixels = torch.from_numpy(np.stack(crops).copy()).permute(0, 3, 1, 2).float() / 255
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (SPEC.mean, SPEC.std))
    return (pixels - mean) / std


def is_crop_flip(view: torch.Tensor, candidates: torch.Tensor) -> bool:
    return bool(((candidates - view).abs().amax(dim=(1, 2, 3)) < 1e-5).any())


def zero_box(image: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int, int] | None]:
    """The all-channel zero mask of a (3, H, W) image and its bounding box ``(top, left, height, width)``."""
    mask = (image == 0).all(dim=0)
    if not mask.any():
        return mask, None
    rows, cols = mask.any(dim=1).nonzero().flatten(), mask.any(dim=0).nonzero().flatten()
    top, left = int(rows[0]), int(cols[0])
    return mask, (top, left, int(rows[-1]) - top + 1, int(cols[-1]) - left + 1)


def test_train_items_carry_a_weak_and_a_strong_view(strong_sets):
    train, test, _ = strong_sets
    torch.manual_seed(0)
    item = train[3]
    assert set(item) == {"image", "image_strong", "target"}
    for key in ("image", "image_strong"):
        assert item[key].shape == (3, 32, 32) and item[key].dtype == torch.float32
    assert not torch.equal(item["image"], item["image_strong"])
    assert set(test[0]) == {"image", "target"}  # evaluation stays single-view


def test_weak_view_is_the_standard_pipeline_and_strong_goes_beyond_crop_flip(cifar100, strong_sets):
    standard, _, _ = load_datasets("cifar100", cifar100.root)
    train, _, _ = strong_sets
    beyond = 0
    for index in range(len(train)):
        torch.manual_seed(100 + index)
        item = train[index]
        torch.manual_seed(100 + index)
        assert torch.equal(item["image"], standard[index]["image"])  # the weak view draws first: unchanged
        candidates = crop_flip_candidates(cifar100.train.images[index])
        assert is_crop_flip(item["image"], candidates)
        beyond += not is_crop_flip(item["image_strong"], candidates)
    # A strong view is a plain crop + flip only when both ops are near-identity and the Cutout side is 0.
    assert beyond >= len(train) - 4


def test_strong_view_is_deterministic_under_a_seed(strong_sets):
    train, _, _ = strong_sets
    views = []
    for seed in (7, 7, 8):
        torch.manual_seed(seed)
        views.append(torch.stack([train[i]["image_strong"] for i in range(6)]))
    assert torch.equal(views[0], views[1])
    assert not torch.equal(views[0], views[2])


def test_loader_batches_carry_the_strong_view(cifar100):
    train_loader, test_loader, _ = build_loaders("cifar100", cifar100.root, batch_size=4, workers=0, seed=0,
                                                 sample="index", augment="strong")
    batch = next(iter(train_loader))
    assert set(batch) == {"image", "image_strong", "target", "index"}
    assert batch["image_strong"].shape == batch["image"].shape == (4, 3, 32, 32)
    assert batch["image_strong"].dtype == torch.float32
    assert set(next(iter(test_loader))) == {"image", "target"}


def test_unknown_augment_is_a_user_error(cifar100):
    with pytest.raises(UserError, match="unknown --augment 'heavy'; choose one of: standard, strong"):
        load_datasets("cifar100", cifar100.root, augment="heavy")


@pytest.mark.parametrize("name", sorted(DATASETS.names()))
def test_strong_transform_is_each_datasets_weak_pipeline_plus_randaugment_and_cutout(name):
    spec = get_dataset(name)
    weak = spec.train_transform().transforms
    strong = strong_transform(spec).transforms
    # RandAugment on the cropped/flipped PIL image right before ToTensor, Cutout after Normalize.
    names = [type(s).__name__ for s in weak]
    where = names.index("ToTensor")
    assert [type(s).__name__ for s in strong] == \
        names[:where] + ["RandomMagnitudeRandAugment"] + names[where:] + ["Cutout"]
    assert repr(strong[:where]) == repr(weak[:where]) and repr(strong[where + 1:-1]) == repr(weak[where:])
    assert strong[where].num_ops == 2 and strong[-1].max_fraction == 0.5


def test_strong_view_needs_a_tensor_pipeline():
    with pytest.raises(ValueError, match="expected a Compose with a ToTensor step"):
        transforms.strong_transform(T.Compose([T.RandomCrop(32, padding=4), T.PILToTensor()]))


def test_cutout_zeroes_the_given_square_clipped_at_the_border():
    image = torch.ones(3, 8, 8)
    out = cutout(image, 2, 3, 4)
    expected = torch.ones(3, 8, 8)
    expected[:, 2:6, 3:7] = 0
    assert torch.equal(out, expected) and torch.equal(image, torch.ones(3, 8, 8))  # a copy, input untouched
    clipped = cutout(image, 6, 5, 4)
    assert int((clipped == 0).all(dim=0).sum()) == 2 * 3 and bool((clipped[:, 6:, 5:] == 0).all())


def test_random_cutout_is_a_square_of_random_size_up_to_half_the_side():
    transform = Cutout(0.5)
    sides, tops = set(), set()
    torch.manual_seed(0)
    for _ in range(300):
        out = transform(torch.ones(3, 32, 32))
        mask, box = zero_box(out)
        assert bool(((out == 0) | (out == 1)).all())
        assert torch.equal((out == 0).any(dim=0), mask)  # every channel zeroed at the same pixels
        if box is None:
            sides.add(0)
            continue
        top, left, height, width = box
        assert int(mask.sum()) == height * width  # a filled rectangle
        assert height <= 16 and width <= 16
        if top + height < 32 and left + width < 32:  # not clipped by the bottom/right border: a square
            assert height == width
            sides.add(height)
        tops.add(top)
    assert 16 in sides and len(sides) >= 12  # sizes drawn over 0..16
    assert 0 in tops and max(tops) > 24  # positions over the whole image


def test_cutout_runs_after_normalize_so_its_zero_is_the_mean_colour(strong_sets):
    train, _, _ = strong_sets
    mean = torch.tensor(SPEC.mean).view(3, 1, 1)
    found = 0
    for seed in range(12):
        torch.manual_seed(seed)
        item = train[seed % len(train)]
        assert not (item["image"] == 0).all(dim=0).any()  # the weak view never has an exactly-zero pixel
        mask, box = zero_box(item["image_strong"])
        if box is not None and min(box[2:]) >= 2:
            found += 1
            pixels = denormalize(item["image_strong"], SPEC.mean, SPEC.std)
            assert torch.allclose(pixels[:, mask], mean.view(3, 1).expand(3, int(mask.sum())))
    assert found >= 6


def test_randaugment_draws_a_magnitude_per_op():
    augment = RandomMagnitudeRandAugment(num_ops=2)
    seen: list[int] = []
    apply_op = augment.op.forward

    def record(image):
        seen.append(augment.op.magnitude)
        return apply_op(image)

    augment.op.forward = record
    image = T.ToPILImage()(torch.rand(3, 32, 32))
    torch.manual_seed(0)
    changed = sum(augment(image).tobytes() != image.tobytes() for _ in range(40))
    assert len(seen) == 80 and min(seen) >= 0 and max(seen) <= 30
    assert len(set(seen)) >= 20  # uniform over the 31 bins, not torchvision's fixed magnitude
    assert changed >= 30
