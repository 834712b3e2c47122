"""The registry and build_loaders: facts per dataset, batch contract, seeded and resumable shuffling, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision import transforms as T

from distillers.data import DATASETS, build_loaders, get_dataset, load_datasets
from distillers.errors import UserError

from .fake_data import write_cifar100


@pytest.fixture(scope="module")
def cifar100(tmp_path_factory):
    return write_cifar100(tmp_path_factory.mktemp("c100"), n_train=100, n_test=40, seed=11)


def test_registry_holds_every_dataset_with_its_facts():
    assert set(DATASETS.names()) == {"cifar100", "cifar10", "stl10", "tinyimagenet", "digits", "imagenet",
                                     "imagefolder"}
    facts = {name: (DATASETS.get(name).num_classes, DATASETS.get(name).input_size) for name in DATASETS}
    assert facts == {"cifar100": (100, 32), "cifar10": (10, 32), "stl10": (10, 32), "tinyimagenet": (200, 32),
                     "digits": (10, 32), "imagenet": (1000, 224), "imagefolder": (0, 32)}  # 0: its class folders
    cifar = get_dataset("cifar100")  # DESIGN.md pins the seed's CIFAR-100 normalisation
    assert (cifar.mean, cifar.std) == ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))
    for name in DATASETS:
        spec = DATASETS.get(name)
        assert spec.name == name and len(spec.mean) == len(spec.std) == 3 and min(spec.std) > 0
        # digits ships with scikit-learn; ImageNet's licence means users download it themselves; imagefolder is yours
        assert spec.download is not None or name in ("digits", "imagenet", "imagefolder")


def test_seed_train_transform_is_crop_flip_normalise():
    steps = get_dataset("cifar100").train_transform().transforms
    assert [type(s).__name__ for s in steps] == ["RandomCrop", "RandomHorizontalFlip", "ToTensor", "Normalize"]
    assert steps[0].size == (32, 32) and steps[0].padding == 4
    assert [type(s).__name__ for s in get_dataset("cifar100").test_transform().transforms] == ["ToTensor",
                                                                                               "Normalize"]
    resized = [type(s).__name__ for s in get_dataset("tinyimagenet").train_transform().transforms]
    assert resized[0] == "Resize" and resized[1] == "RandomCrop"


def test_unknown_dataset_lists_the_choices(tmp_path):
    with pytest.raises(UserError, match="unknown dataset 'imagenet21k'; choose one of: cifar100, cifar10"):
        build_loaders("imagenet21k", tmp_path)


def test_batches_and_info(cifar100):
    train_loader, test_loader, info = build_loaders("cifar100", cifar100.root, batch_size=32, workers=0,
                                                    sample="index", seed=0)
    assert (info.name, info.num_classes, info.num_train, info.num_test, info.input_size) == \
        ("cifar100", 100, 100, 40, 32)
    batch = next(iter(train_loader))
    assert set(batch) == {"image", "target", "index"}
    assert batch["image"].shape == (32, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["target"].dtype == torch.int64 and batch["index"].dtype == torch.int64
    assert torch.equal(batch["target"], torch.from_numpy(cifar100.train.labels)[batch["index"]])
    assert len(train_loader) == 4 and len(test_loader) == 2
    test_order = torch.cat([b["target"] for b in test_loader]).numpy()
    np.testing.assert_array_equal(test_order, cifar100.test.labels)  # not shuffled


def _order(loader) -> list[int]:
    return torch.cat([b["index"] for b in loader]).tolist()


def test_shuffling_is_seeded_and_replayable(cifar100):
    first, _, _ = build_loaders("cifar100", cifar100.root, batch_size=25, workers=0, sample="index", seed=3)
    second, _, _ = build_loaders("cifar100", cifar100.root, batch_size=25, workers=0, sample="index", seed=3)
    other, _, _ = build_loaders("cifar100", cifar100.root, batch_size=25, workers=0, sample="index", seed=4)
    epoch1 = _order(first)
    assert epoch1 == _order(second) and epoch1 != _order(other) and sorted(epoch1) == list(range(100))
    state = first.generator.get_state()  # what a checkpoint stores at the end of epoch 1
    epoch2 = _order(first)
    assert epoch2 != epoch1
    first.generator.set_state(state)
    assert _order(first) == epoch2  # resume replays epoch 2 exactly
    generator = torch.Generator().manual_seed(3)
    given, _, _ = build_loaders("cifar100", cifar100.root, batch_size=25, workers=0, sample="index", seed=generator)
    assert given.generator is generator and _order(given) == epoch1


def test_loader_settings(cifar100):
    train_loader, test_loader, _ = build_loaders("cifar100", cifar100.root, batch_size=30, workers=1,
                                                 test_batch_size=7, drop_last=True)
    assert train_loader.persistent_workers and train_loader.num_workers == 1
    assert train_loader.pin_memory == torch.cuda.is_available()
    assert len(train_loader) == 3 and test_loader.batch_size == 7
    assert sum(len(b["target"]) for b in train_loader) == 90  # the worker really runs


def test_transform_override(cifar100):
    flat = T.Compose([T.ToTensor(), T.Lambda(lambda x: x.mean(dim=0, keepdim=True))])
    train, test, _ = load_datasets("cifar100", cifar100.root, train_transform=flat, test_transform=flat)
    assert train[0]["image"].shape == (1, 32, 32)
    expected = cifar100.test.images[0].astype(np.float64).mean(axis=-1) / 255
    np.testing.assert_allclose(test[0]["image"][0].numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"batch_size": 0}, "--batch-size must be a positive integer"),
    ({"workers": -1}, "--workers must be an integer >= 0"),
    ({"sample": "pairs"}, "unknown sample kind 'pairs'"),
    ({"sample": "contrast", "nce_k": 10, "mode": "fuzzy"}, "unknown CRD sampling mode 'fuzzy'"),
])
def test_bad_arguments_are_user_errors(cifar100, kwargs, match):
    with pytest.raises(UserError, match=match):
        build_loaders("cifar100", cifar100.root, **kwargs)


def test_data_dir_pointing_inside_the_dataset_gets_a_hint(cifar100):
    inside = cifar100.root / "cifar-100-python"
    with pytest.raises(UserError, match=f"folder that contains cifar-100-python: try {cifar100.root}"):
        load_datasets("cifar100", inside)
